//! Encoding packets into a byte buffer (stub: to be written).

use crate::{Packet, ProtocolVersion};
use bytes::BytesMut;

/// Appends `packet`, encoded for `version`, to `buf`.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    let _ = (packet, version, buf);
    todo!()
}

/// The number of bytes `encode` would write for `packet` (fixed header included).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let _ = (packet, version);
    todo!()
}
