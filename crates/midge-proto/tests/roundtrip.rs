//! Property test: for every packet type and every protocol version, a packet valid for
//! that version encodes to exactly `encoded_len` bytes and decodes back to itself.

use bytes::{Bytes, BytesMut};
use midge_proto::*;
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![
        Just(ProtocolVersion::V31),
        Just(ProtocolVersion::V311),
        Just(ProtocolVersion::V5)
    ]
}

/// A UTF-8 string without U+0000, which the decoder rejects [MQTT-1.5.4-2].
fn string() -> impl Strategy<Value = ByteStr> {
    "[^\u{0}]{0,8}".prop_map(ByteStr::from)
}

/// A topic name: not empty, no wildcards.
fn topic() -> impl Strategy<Value = ByteStr> {
    "[^\u{0}+#]{1,8}".prop_map(ByteStr::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

/// A 0/1 byte property.
fn flag() -> impl Strategy<Value = Option<u8>> {
    of(0u8..=1)
}

/// Every property set, with values the decoder accepts; `restrict` then keeps only
/// those a given packet may carry.
fn any_properties() -> impl Strategy<Value = Properties> {
    let a = (
        of(any::<u8>()),
        of(any::<u32>()),
        of(string()),
        of(string()),
        of(binary()),
        vec(1u32..=268_435_455, 0..3),
        of(any::<u32>()),
        of(string()),
        of(any::<u16>()),
        of(string()),
        of(binary()),
        flag(),
    );
    let b = (
        of(any::<u32>()),
        flag(),
        of(string()),
        of(string()),
        of(string()),
        of(1..=u16::MAX),
        of(any::<u16>()),
        of(any::<u16>()),
        flag(),
        flag(),
        vec((string(), string()), 0..3),
        of(1..=u32::MAX),
    );
    let c = (flag(), flag(), flag());
    (a, b, c).prop_map(|(a, b, c)| Properties {
        payload_format_indicator: a.0,
        message_expiry_interval: a.1,
        content_type: a.2,
        response_topic: a.3,
        correlation_data: a.4,
        subscription_identifiers: a.5,
        session_expiry_interval: a.6,
        assigned_client_identifier: a.7,
        server_keep_alive: a.8,
        authentication_method: a.9,
        authentication_data: a.10,
        request_problem_information: a.11,
        will_delay_interval: b.0,
        request_response_information: b.1,
        response_information: b.2,
        server_reference: b.3,
        reason_string: b.4,
        receive_maximum: b.5,
        topic_alias_maximum: b.6,
        topic_alias: b.7,
        maximum_qos: b.8,
        retain_available: b.9,
        user_properties: b.10,
        maximum_packet_size: b.11,
        wildcard_subscription_available: c.0,
        subscription_identifier_available: c.1,
        shared_subscription_available: c.2,
    })
}

/// Clears every property not in `allowed` (5.0 table 2.2.2.2).
fn restrict(mut p: Properties, allowed: &[PropertyId]) -> Properties {
    use PropertyId::*;
    fn keep<T>(slot: &mut Option<T>, allowed: &[PropertyId], id: PropertyId) {
        if !allowed.contains(&id) {
            *slot = None;
        }
    }
    keep(
        &mut p.payload_format_indicator,
        allowed,
        PayloadFormatIndicator,
    );
    keep(
        &mut p.message_expiry_interval,
        allowed,
        MessageExpiryInterval,
    );
    keep(&mut p.content_type, allowed, ContentType);
    keep(&mut p.response_topic, allowed, ResponseTopic);
    keep(&mut p.correlation_data, allowed, CorrelationData);
    if !allowed.contains(&SubscriptionIdentifier) {
        p.subscription_identifiers.clear();
    }
    keep(
        &mut p.session_expiry_interval,
        allowed,
        SessionExpiryInterval,
    );
    keep(
        &mut p.assigned_client_identifier,
        allowed,
        AssignedClientIdentifier,
    );
    keep(&mut p.server_keep_alive, allowed, ServerKeepAlive);
    keep(&mut p.authentication_method, allowed, AuthenticationMethod);
    keep(&mut p.authentication_data, allowed, AuthenticationData);
    if p.authentication_method.is_none() {
        // Authentication Data without a method is a Protocol Error.
        p.authentication_data = None;
    }
    keep(
        &mut p.request_problem_information,
        allowed,
        RequestProblemInformation,
    );
    keep(&mut p.will_delay_interval, allowed, WillDelayInterval);
    keep(
        &mut p.request_response_information,
        allowed,
        RequestResponseInformation,
    );
    keep(&mut p.response_information, allowed, ResponseInformation);
    keep(&mut p.server_reference, allowed, ServerReference);
    keep(&mut p.reason_string, allowed, ReasonString);
    keep(&mut p.receive_maximum, allowed, ReceiveMaximum);
    keep(&mut p.topic_alias_maximum, allowed, TopicAliasMaximum);
    keep(&mut p.topic_alias, allowed, TopicAlias);
    keep(&mut p.maximum_qos, allowed, MaximumQos);
    keep(&mut p.retain_available, allowed, RetainAvailable);
    keep(&mut p.maximum_packet_size, allowed, MaximumPacketSize);
    keep(
        &mut p.wildcard_subscription_available,
        allowed,
        WildcardSubscriptionAvailable,
    );
    keep(
        &mut p.subscription_identifier_available,
        allowed,
        SubscriptionIdentifierAvailable,
    );
    keep(
        &mut p.shared_subscription_available,
        allowed,
        SharedSubscriptionAvailable,
    );
    p
}

/// Properties for a packet: none before 5.0.
fn properties(
    version: ProtocolVersion,
    allowed: &'static [PropertyId],
) -> BoxedStrategy<Properties> {
    if version.is_v5() {
        any_properties()
            .prop_map(move |p| restrict(p, allowed))
            .boxed()
    } else {
        Just(Properties::default()).boxed()
    }
}

mod allowed {
    use midge_proto::PropertyId::{self, *};

    pub const CONNECT: &[PropertyId] = &[
        SessionExpiryInterval,
        AuthenticationMethod,
        AuthenticationData,
        RequestProblemInformation,
        RequestResponseInformation,
        ReceiveMaximum,
        TopicAliasMaximum,
        UserProperty,
        MaximumPacketSize,
    ];
    pub const WILL: &[PropertyId] = &[
        PayloadFormatIndicator,
        MessageExpiryInterval,
        ContentType,
        ResponseTopic,
        CorrelationData,
        WillDelayInterval,
        UserProperty,
    ];
    pub const CONNACK: &[PropertyId] = &[
        SessionExpiryInterval,
        AssignedClientIdentifier,
        ServerKeepAlive,
        AuthenticationMethod,
        AuthenticationData,
        ResponseInformation,
        ServerReference,
        ReasonString,
        ReceiveMaximum,
        TopicAliasMaximum,
        MaximumQos,
        RetainAvailable,
        UserProperty,
        MaximumPacketSize,
        WildcardSubscriptionAvailable,
        SubscriptionIdentifierAvailable,
        SharedSubscriptionAvailable,
    ];
    pub const PUBLISH: &[PropertyId] = &[
        PayloadFormatIndicator,
        MessageExpiryInterval,
        ContentType,
        ResponseTopic,
        CorrelationData,
        SubscriptionIdentifier,
        TopicAlias,
        UserProperty,
    ];
    pub const ACK: &[PropertyId] = &[ReasonString, UserProperty];
    pub const SUBSCRIBE: &[PropertyId] = &[SubscriptionIdentifier, UserProperty];
    pub const UNSUBSCRIBE: &[PropertyId] = &[UserProperty];
    pub const DISCONNECT: &[PropertyId] = &[
        SessionExpiryInterval,
        ServerReference,
        ReasonString,
        UserProperty,
    ];
    pub const AUTH: &[PropertyId] = &[
        AuthenticationMethod,
        AuthenticationData,
        ReasonString,
        UserProperty,
    ];
}

fn will(version: ProtocolVersion) -> impl Strategy<Value = Will> {
    (
        topic(),
        binary(),
        qos(),
        any::<bool>(),
        properties(version, allowed::WILL),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        string(),
        of(will(version)),
        of(string()),
        of(binary()),
        properties(version, allowed::CONNECT),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // Before 5.0 a password needs a user name [MQTT-3.1.2-22].
                let password = password.filter(|_| version.is_v5() || username.is_some());
                Packet::Connect(Box::new(Connect {
                    protocol: version,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                }))
            },
        )
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reason = if version.is_v5() {
        any::<u8>().prop_map(ReasonCode).boxed()
    } else {
        (0u8..=5).prop_map(ReasonCode::from_v3_connack).boxed()
    };
    (any::<bool>(), reason, properties(version, allowed::CONNACK)).prop_map(
        move |(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                // 3.1 has no session present flag.
                session_present: session_present && version != ProtocolVersion::V31,
                reason_code,
                properties,
            })
        },
    )
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = if version.is_v5() {
        // Empty means "use the topic alias" in 5.0.
        prop_oneof![topic(), Just(ByteStr::new())].boxed()
    } else {
        topic().boxed()
    };
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic,
        packet_id(),
        properties(version, allowed::PUBLISH),
        binary(),
    )
        .prop_map(
            move |(dup, qos, retain, topic, packet_id, properties, payload)| {
                let qos0 = qos == QoS::AtMostOnce;
                Packet::Publish(Publish {
                    // DUP must be 0 for QoS 0 [MQTT-3.3.1-2].
                    dup: dup && !(qos0 && version.is_v5()),
                    qos,
                    retain,
                    topic,
                    packet_id: if qos0 { 0 } else { packet_id },
                    properties,
                    payload,
                })
            },
        )
}

fn pub_resp(version: ProtocolVersion) -> impl Strategy<Value = PubResp> {
    let reason = if version.is_v5() {
        any::<u8>().prop_map(ReasonCode).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (packet_id(), reason, properties(version, allowed::ACK)).prop_map(
        |(packet_id, reason_code, properties)| PubResp {
            packet_id,
            reason_code,
            properties,
        },
    )
}

fn subscription_options(version: ProtocolVersion) -> impl Strategy<Value = SubscriptionOptions> {
    let handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendIfNew),
        Just(RetainHandling::DoNotSend)
    ];
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if version.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                }
            }
        },
    )
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec((string(), subscription_options(version)), 1..4),
        properties(version, allowed::SUBSCRIBE),
    )
        .prop_map(|(packet_id, filters, mut properties)| {
            // SUBSCRIBE carries at most one Subscription Identifier.
            properties.subscription_identifiers.truncate(1);
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if version.is_v5() {
        any::<u8>().boxed()
    } else {
        prop_oneof![Just(0u8), Just(1), Just(2), Just(0x80)].boxed()
    };
    (
        packet_id(),
        vec(code.prop_map(ReasonCode), 1..4),
        properties(version, allowed::ACK),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(string(), 1..4),
        properties(version, allowed::UNSUBSCRIBE),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // Before 5.0 UNSUBACK has no payload.
    let codes = if version.is_v5() {
        vec(any::<u8>().prop_map(ReasonCode), 1..4).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), codes, properties(version, allowed::ACK)).prop_map(
        |(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        },
    )
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let reason = if version.is_v5() {
        any::<u8>().prop_map(ReasonCode).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (reason, properties(version, allowed::DISCONNECT)).prop_map(|(reason_code, properties)| {
        Packet::Disconnect(Disconnect {
            reason_code,
            properties,
        })
    })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        any::<u8>().prop_map(ReasonCode),
        properties(ProtocolVersion::V5, allowed::AUTH),
    )
        .prop_map(|(reason_code, properties)| {
            Packet::Auth(Auth {
                reason_code,
                properties,
            })
        })
}

/// Encodes, checks `encoded_len`, decodes, and compares.
fn assert_roundtrip(packet: &Packet, version: ProtocolVersion) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf);
    prop_assert_eq!(buf.len(), encoded_len(packet, version));
    let decoded = decode(&mut buf, version, usize::MAX);
    prop_assert_eq!(decoded, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty(), "bytes left after decoding");
    Ok(())
}

macro_rules! roundtrip_tests {
    ($($name:ident => $strategy:expr;)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            $(
                #[test]
                fn $name((version, packet) in version().prop_flat_map(|v| (Just(v), $strategy(v)))) {
                    assert_roundtrip(&packet, version)?;
                }
            )*
        }
    };
}

roundtrip_tests! {
    connect_roundtrips_in_every_version => connect;
    connack_roundtrips_in_every_version => connack;
    publish_roundtrips_in_every_version => publish;
    puback_roundtrips_in_every_version => |v| pub_resp(v).prop_map(Packet::PubAck);
    pubrec_roundtrips_in_every_version => |v| pub_resp(v).prop_map(Packet::PubRec);
    pubrel_roundtrips_in_every_version => |v| pub_resp(v).prop_map(Packet::PubRel);
    pubcomp_roundtrips_in_every_version => |v| pub_resp(v).prop_map(Packet::PubComp);
    subscribe_roundtrips_in_every_version => subscribe;
    suback_roundtrips_in_every_version => suback;
    unsubscribe_roundtrips_in_every_version => unsubscribe;
    unsuback_roundtrips_in_every_version => unsuback;
    pingreq_roundtrips_in_every_version => |_| Just(Packet::PingReq);
    pingresp_roundtrips_in_every_version => |_| Just(Packet::PingResp);
    disconnect_roundtrips_in_every_version => disconnect;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// AUTH exists only in 5.0.
    #[test]
    fn auth_roundtrips_in_v5(packet in auth()) {
        assert_roundtrip(&packet, ProtocolVersion::V5)?;
    }

    /// Several packets in one buffer decode one after the other, whatever the version.
    #[test]
    fn a_stream_of_packets_decodes_in_order(
        (version, packets) in version().prop_flat_map(|v| {
            (Just(v), vec(prop_oneof![publish(v), subscribe(v), connack(v), disconnect(v)], 1..6))
        })
    ) {
        let mut buf = BytesMut::new();
        for packet in &packets {
            encode(packet, version, &mut buf);
        }
        for packet in &packets {
            prop_assert_eq!(decode(&mut buf, version, usize::MAX), Ok(Some(packet.clone())));
        }
        prop_assert_eq!(decode(&mut buf, version, usize::MAX), Ok(None));
    }
}
