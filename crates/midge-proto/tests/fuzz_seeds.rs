//! The fuzzer's seed packets (fuzz/seeds/) must be valid, or they seed nothing useful.

use bytes::BytesMut;
use midge_proto::{decode, ProtocolVersion};

#[test]
fn every_fuzz_seed_decodes_whole_in_some_version() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
    let mut seen = 0;
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let decodes_whole = [
            ProtocolVersion::V31,
            ProtocolVersion::V311,
            ProtocolVersion::V5,
        ]
        .into_iter()
        .any(|version| {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode(&mut buf, version, usize::MAX) {}
            buf.is_empty()
        });
        if !decodes_whole {
            bad.push(path.display().to_string());
        }
        seen += 1;
    }
    assert_eq!(bad, Vec::<String>::new(), "seeds that do not decode");
    assert!(seen > 10);
}
