//! Fuzz target: arbitrary bytes into the decoder for every protocol version. Whatever
//! decodes must re-encode to exactly `encoded_len` bytes and decode back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use midge_proto::{decode, encode, encoded_len, Packet, ProtocolVersion};

fuzz_target!(|data: &[u8]| {
    for version in [
        ProtocolVersion::V31,
        ProtocolVersion::V311,
        ProtocolVersion::V5,
    ] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 20) {
            roundtrip(&packet, version);
        }
    }
});

fn roundtrip(packet: &Packet, version: ProtocolVersion) {
    let mut out = BytesMut::new();
    encode(packet, version, &mut out);
    assert_eq!(
        out.len(),
        encoded_len(packet, version),
        "encoded_len disagrees"
    );
    let again = decode(&mut out, version, usize::MAX);
    assert_eq!(
        again.as_ref(),
        Ok(&Some(packet.clone())),
        "round trip differs"
    );
    assert!(out.is_empty(), "re-decode left bytes behind");
}
