//! How the decoder treats its buffer: too-large packets are refused from the fixed header
//! alone, and decoded payloads and strings point into the read buffer (no copies).

use bytes::{BufMut, BytesMut};
use midge_proto::*;

/// The fixed header of a PUBLISH whose whole size is `total` bytes (a three-byte
/// remaining length, so 100 KiB to 2 MiB).
fn publish_header(total: usize) -> BytesMut {
    let mut remaining = total - 4;
    assert!((16_384..2_097_152).contains(&remaining));
    let mut buf = BytesMut::new();
    buf.put_u8(0x30);
    for _ in 0..2 {
        buf.put_u8((remaining as u8 & 0x7f) | 0x80);
        remaining >>= 7;
    }
    buf.put_u8(remaining as u8);
    buf
}

#[test]
fn too_large_publish_is_refused_from_its_fixed_header_alone() {
    let mut buf = publish_header(1_000_000);
    assert_eq!(buf.len(), 4);
    let result = decode(&mut buf, ProtocolVersion::V311, 1000);
    assert_eq!(
        result,
        Err(DecodeError::PacketTooLarge {
            size: 1_000_000,
            max: 1000
        })
    );
    assert_eq!(
        result.unwrap_err().reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
}

#[test]
fn too_large_publish_is_refused_in_every_version() {
    for version in [
        ProtocolVersion::V31,
        ProtocolVersion::V311,
        ProtocolVersion::V5,
    ] {
        let mut buf = publish_header(1_000_000);
        let result = decode(&mut buf, version, 1000);
        assert!(matches!(result, Err(DecodeError::PacketTooLarge { .. })));
    }
}

#[test]
fn packet_of_exactly_max_size_is_accepted() {
    let publish = Packet::Publish(Publish {
        topic: ByteStr::from("t"),
        payload: vec![0u8; 100].into(),
        ..Publish::default()
    });
    let v = ProtocolVersion::V311;
    let size = encoded_len(&publish, v);
    let mut buf = BytesMut::new();
    encode(&publish, v, &mut buf);
    let mut one_less = buf.clone();
    assert_eq!(decode(&mut buf, v, size), Ok(Some(publish)));
    assert!(matches!(
        decode(&mut one_less, v, size - 1),
        Err(DecodeError::PacketTooLarge { .. })
    ));
}

#[test]
fn partial_body_is_waited_for_and_not_consumed() {
    let publish = Packet::Publish(Publish {
        topic: ByteStr::from("a/b"),
        payload: vec![1u8; 300].into(),
        ..Publish::default()
    });
    let v = ProtocolVersion::V5;
    let mut full = BytesMut::new();
    encode(&publish, v, &mut full);
    let mut buf = BytesMut::new();
    for (i, byte) in full.iter().enumerate() {
        assert_eq!(decode(&mut buf, v, 1 << 20), Ok(None), "after {i} bytes");
        assert_eq!(buf.len(), i);
        buf.put_u8(*byte);
    }
    assert_eq!(decode(&mut buf, v, 1 << 20), Ok(Some(publish)));
    assert!(buf.is_empty());
}

/// True when `inner` lies within `outer`.
fn within(inner: &[u8], outer: std::ops::Range<usize>) -> bool {
    let start = inner.as_ptr() as usize;
    outer.contains(&start) && start + inner.len() <= outer.end
}

#[test]
fn decoded_publish_shares_memory_with_the_read_buffer() {
    let mut properties = Properties::default();
    properties
        .user_properties
        .push(("key".into(), "value".into()));
    properties.correlation_data = Some(vec![9u8; 8].into());
    let publish = Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 1,
        topic: ByteStr::from("sensors/1"),
        properties,
        payload: vec![42u8; 1000].into(),
        ..Publish::default()
    });
    let v = ProtocolVersion::V5;
    let mut buf = BytesMut::with_capacity(4096);
    encode(&publish, v, &mut buf);
    let start = buf.as_ptr() as usize;
    let read_buffer = start..start + buf.len();

    let Some(Packet::Publish(decoded)) = decode(&mut buf, v, 1 << 20).unwrap() else {
        panic!("not a PUBLISH");
    };
    assert!(
        within(&decoded.payload, read_buffer.clone()),
        "payload copied"
    );
    assert!(
        within(decoded.topic.as_bytes(), read_buffer.clone()),
        "topic copied"
    );
    let (key, value) = &decoded.properties.user_properties[0];
    assert!(
        within(key.as_bytes(), read_buffer.clone()),
        "property copied"
    );
    assert!(
        within(value.as_bytes(), read_buffer.clone()),
        "property copied"
    );
    let correlation = decoded.properties.correlation_data.as_ref().unwrap();
    assert!(within(correlation, read_buffer), "binary property copied");
}

#[test]
fn decoded_connect_strings_share_memory_with_the_read_buffer() {
    let connect = Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 30,
        client_id: ByteStr::from("client-1"),
        will: Some(Will {
            topic: ByteStr::from("will/t"),
            payload: vec![7u8; 32].into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: Some(ByteStr::from("user")),
        password: Some(b"secret".to_vec().into()),
        properties: Properties::default(),
    }));
    let mut buf = BytesMut::new();
    encode(&connect, ProtocolVersion::V311, &mut buf);
    let start = buf.as_ptr() as usize;
    let read_buffer = start..start + buf.len();
    let Some(Packet::Connect(decoded)) = decode(&mut buf, ProtocolVersion::V5, 1 << 20).unwrap()
    else {
        panic!("not a CONNECT");
    };
    assert!(within(decoded.client_id.as_bytes(), read_buffer.clone()));
    let will = decoded.will.as_ref().unwrap();
    assert!(within(&will.payload, read_buffer.clone()));
    assert!(within(decoded.password.as_ref().unwrap(), read_buffer));
}
