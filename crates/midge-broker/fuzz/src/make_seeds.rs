//! Writes the seed corpus of the `connection` target into `seeds/` (run from the fuzz
//! directory: `cargo run --bin make_seeds`). Each seed is the setup byte (see the target)
//! followed by a valid packet sequence of a client session, encoded with midge-proto.

use bytes::{Bytes, BytesMut};
use midge_proto::{
    encode, ByteStr, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe,
};
use std::path::Path;

const V31: u8 = 0;
const V311: u8 = 1;
const V5: u8 = 2;
const CLEAN_START: u8 = 0b100;
const NEVER_EXPIRES: u8 = 0b1000;

fn version(setup: u8) -> ProtocolVersion {
    match setup & 0b11 {
        V31 => ProtocolVersion::V31,
        V311 => ProtocolVersion::V311,
        _ => ProtocolVersion::V5,
    }
}

fn subscribe(id: u16, filter: &'static str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: id,
        filters: vec![(
            ByteStr::from_static(filter),
            SubscriptionOptions {
                qos,
                ..Default::default()
            },
        )],
        properties: Properties::default(),
    })
}

fn publish(id: u16, topic: &'static str, qos: QoS, retain: bool) -> Packet {
    Packet::Publish(Publish {
        qos,
        retain,
        topic: ByteStr::from_static(topic),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { id },
        payload: Bytes::from_static(b"hello"),
        ..Default::default()
    })
}

fn unsubscribe(id: u16, filter: &'static str) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: id,
        filters: vec![ByteStr::from_static(filter)],
        properties: Properties::default(),
    })
}

fn disconnect() -> Packet {
    Packet::Disconnect(Disconnect::default())
}

fn seeds() -> Vec<(&'static str, u8, Vec<Packet>)> {
    let qos0 = vec![
        subscribe(1, "a/#", QoS::AtMostOnce),
        publish(0, "a/b", QoS::AtMostOnce, false),
        Packet::PingReq,
        disconnect(),
    ];
    // The broker delivers our own publish back with packet ID 1: acknowledge it too.
    let qos1 = vec![
        subscribe(1, "a/+", QoS::AtLeastOnce),
        publish(2, "a/b", QoS::AtLeastOnce, false),
        Packet::PubAck(PubResp::new(1)),
        disconnect(),
    ];
    let qos2 = vec![
        subscribe(1, "a/b", QoS::ExactlyOnce),
        publish(3, "a/b", QoS::ExactlyOnce, false),
        Packet::PubRel(PubResp::new(3)),
        Packet::PubRec(PubResp::new(1)),
        Packet::PubComp(PubResp::new(1)),
        disconnect(),
    ];
    let retained = vec![
        publish(4, "r/x", QoS::AtLeastOnce, true),
        subscribe(5, "r/#", QoS::ExactlyOnce),
        unsubscribe(6, "r/#"),
        publish(0, "r/x", QoS::AtMostOnce, true),
        disconnect(),
    ];
    let mut v5_alias = publish(7, "t/alias", QoS::AtLeastOnce, false);
    if let Packet::Publish(p) = &mut v5_alias {
        p.properties.topic_alias = Some(1);
        p.properties.message_expiry_interval = Some(60);
        p.properties.user_properties = vec![(ByteStr::from_static("k"), ByteStr::from_static("v"))];
    }
    let mut v5_alias_again = publish(8, "", QoS::AtMostOnce, false);
    if let Packet::Publish(p) = &mut v5_alias_again {
        p.properties.topic_alias = Some(1);
    }
    let v5_disconnect = Packet::Disconnect(Disconnect {
        reason_code: ReasonCode(0x04), // disconnect with will message
        properties: Properties {
            session_expiry_interval: Some(0),
            ..Default::default()
        },
    });
    let v5 = vec![
        subscribe(1, "t/#", QoS::ExactlyOnce),
        v5_alias,
        v5_alias_again,
        unsubscribe(9, "t/#"),
        v5_disconnect,
    ];
    vec![
        ("qos0_v311", V311 | CLEAN_START, qos0.clone()),
        ("qos0_v31", V31 | CLEAN_START, qos0.clone()),
        ("qos0_v5", V5 | CLEAN_START, qos0),
        ("qos1_v311", V311, qos1.clone()),
        ("qos1_v5", V5 | NEVER_EXPIRES, qos1),
        ("qos2_v311", V311 | CLEAN_START, qos2.clone()),
        ("qos2_v5", V5 | CLEAN_START, qos2),
        ("retained_v311", V311 | CLEAN_START, retained.clone()),
        ("retained_v5", V5 | CLEAN_START | NEVER_EXPIRES, retained),
        ("alias_v5", V5 | CLEAN_START, v5),
    ]
}

fn main() -> std::io::Result<()> {
    let dir = Path::new("seeds");
    std::fs::create_dir_all(dir)?;
    for (name, setup, packets) in seeds() {
        let mut buf = BytesMut::from(&[setup][..]);
        for p in &packets {
            encode(p, version(setup), &mut buf);
        }
        std::fs::write(dir.join(name), &buf)?;
    }
    Ok(())
}
