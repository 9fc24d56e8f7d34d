//! Decoding packets from a byte buffer (stub: to be written).

use crate::{DecodeError, Packet, ProtocolVersion};
use bytes::BytesMut;

/// The fixed header of a packet: first byte and the decoded remaining length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// Packet type (high nibble) and flags (low nibble).
    pub byte1: u8,
    /// The Remaining Length field's value.
    pub remaining_len: usize,
    /// Length of the fixed header itself (1 + 1..=4 bytes).
    pub header_len: usize,
}

/// Reads the fixed header at the start of `buf`. `Ok(None)` when more bytes are needed;
/// an error when the remaining length uses more than four bytes.
pub fn decode_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let _ = buf;
    todo!()
}

/// Decodes one packet from the front of `buf`, consuming its bytes.
///
/// `Ok(None)` when the buffer does not yet hold a whole packet. `version` is the
/// connection's protocol version (a CONNECT carries its own and ignores it). A packet
/// whose total size exceeds `max_size` is rejected as soon as its fixed header is read.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_size);
    todo!()
}
