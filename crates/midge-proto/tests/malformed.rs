//! A corpus of invalid packets, each a hex string, with the exact error the decoder must
//! give. Each case names the normative statement (or section) it checks: 3.1.1 numbers
//! for `V311` cases, 5.0 numbers for `V5` cases.

use bytes::BytesMut;
use midge_proto::DecodeError::{self, *};
use midge_proto::ProtocolVersion::{self, V31, V311, V5};
use midge_proto::{decode, Packet};

fn bytes(hex: &str) -> BytesMut {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = BytesMut::new();
    for pair in digits.chunks(2) {
        let pair = std::str::from_utf8(pair).expect("ascii");
        out.extend_from_slice(&[u8::from_str_radix(pair, 16).expect("hex digit")]);
    }
    out
}

fn decode_hex(version: ProtocolVersion, hex: &str) -> Result<Option<Packet>, DecodeError> {
    decode(&mut bytes(hex), version, usize::MAX)
}

const SHORT: DecodeError = Malformed("packet shorter than its fields");
const TRAILING: DecodeError = Malformed("bytes after the packet's last field");
const FLAGS_NOT_0010: DecodeError = Malformed("reserved fixed header flags not 0b0010");
const FLAGS_NOT_0: DecodeError = Malformed("reserved fixed header flags not 0");
const ZERO_ID: DecodeError = Protocol("packet identifier 0");
const BAD_UTF8: DecodeError = Malformed("invalid UTF-8 string");
const WILDCARD: DecodeError = TopicNameInvalid("wildcard in topic name");
const DUPLICATE: DecodeError = Protocol("property included more than once");
const NOT_ALLOWED: DecodeError = Malformed("property not allowed on this packet");
const NOT_0_OR_1: DecodeError = Protocol("property value other than 0 or 1");
const NO_WILL_FLAG: DecodeError = Malformed("will QoS or retain set without will flag");

macro_rules! rejects {
    ($($name:ident: $version:expr, $hex:expr => $expected:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_eq!(decode_hex($version, $hex), Err($expected));
            }
        )*
    };
}

// Fixed header.
rejects! {
    // 3.1.1 [MQTT-2.2.2-2], [MQTT-3.6.1-1]: PUBREL flags must be 0010.
    mqtt_3_6_1_1_pubrel_flags_0000_is_malformed: V311, "60 02 0001" => FLAGS_NOT_0010;
    // 3.1.1 [MQTT-3.8.1-1]: SUBSCRIBE flags must be 0010.
    mqtt_3_8_1_1_subscribe_flags_0000_is_malformed: V311, "80 06 0001 0001 61 00" => FLAGS_NOT_0010;
    // 3.1.1 [MQTT-3.10.1-1]: UNSUBSCRIBE flags must be 0010.
    mqtt_3_10_1_1_unsubscribe_flags_0000_is_malformed: V311, "a0 05 0001 0001 61" => FLAGS_NOT_0010;
    // 5.0 [MQTT-2.1.3-1]: reserved flags of PUBACK are 0000.
    mqtt_2_1_3_1_puback_flags_0001_is_malformed: V5, "41 02 0001" => FLAGS_NOT_0;
    // 5.0 [MQTT-2.1.3-1]: reserved flags of PINGREQ are 0000.
    mqtt_2_1_3_1_pingreq_flags_1000_is_malformed: V5, "c8 00" => FLAGS_NOT_0;
    // 3.1.1 [MQTT-2.2.2-2]: CONNECT flags are 0000.
    mqtt_2_2_2_2_connect_flags_0010_is_malformed: V311, "12 00" => FLAGS_NOT_0;
    // 3.1.1 [MQTT-3.3.1-4] / 5.0 [MQTT-3.3.1-4]: PUBLISH must not have both QoS bits set.
    mqtt_3_3_1_4_publish_qos_3_is_malformed_v311: V311, "36 05 0001 61 0001" => Malformed("PUBLISH with QoS 3");
    mqtt_3_3_1_4_publish_qos_3_is_malformed_v5: V5, "36 06 0001 61 0001 00" => Malformed("PUBLISH with QoS 3");
    // 5.0 [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
    mqtt_3_3_1_2_publish_qos_0_with_dup_is_malformed: V5, "38 04 0001 61 00" => Malformed("PUBLISH QoS 0 with DUP set");
    // 3.1.1 section 2.2.1: packet type 0 is reserved.
    packet_type_0_is_malformed: V311, "00 00" => Malformed("reserved packet type 0");
    // 3.1.1 section 2.2.1: packet type 15 is reserved before 5.0 (AUTH is 5.0 only).
    auth_before_v5_is_malformed: V311, "f0 00" => Malformed("AUTH packet before MQTT 5.0");
    auth_in_v31_is_malformed: V31, "f0 00" => Malformed("AUTH packet before MQTT 5.0");
    // 3.1.1 section 2.2.3 / 5.0 section 1.5.5: at most four bytes of remaining length.
    remaining_length_of_five_bytes_is_malformed: V311, "30 ff ff ff ff 01" => Malformed("remaining length over four bytes");
    // 5.0 [MQTT-1.5.5-1]: a Variable Byte Integer uses the fewest bytes.
    mqtt_1_5_5_1_non_minimal_remaining_length_is_malformed: V5, "c0 80 00" => Malformed("remaining length not in its shortest form");
}

// UTF-8 strings and topic names.
rejects! {
    // 3.1.1 [MQTT-1.5.3-1] / 5.0 [MQTT-1.5.4-1]: ill-formed UTF-8.
    mqtt_1_5_3_1_invalid_utf8_topic_is_malformed: V311, "30 05 0003 61 ff 62" => BAD_UTF8;
    // 5.0 [MQTT-1.5.4-1]: UTF-16 surrogates (U+D800 as ED A0 80) are not allowed.
    mqtt_1_5_4_1_surrogate_in_topic_is_malformed: V5, "30 06 0003 ed a0 80 00" => BAD_UTF8;
    // 3.1.1 [MQTT-1.5.3-2] / 5.0 [MQTT-1.5.4-2]: U+0000 is not allowed.
    mqtt_1_5_4_2_null_character_in_topic_is_malformed: V5, "30 06 0003 61 00 62 00" => Malformed("U+0000 in a UTF-8 string");
    mqtt_1_5_3_2_null_character_in_client_id_is_malformed: V311, "10 0d 0004 4d515454 04 02 003c 0001 00" => Malformed("U+0000 in a UTF-8 string");
    // 5.0 [MQTT-1.5.4-1]: applies to strings inside properties too (Content Type).
    mqtt_1_5_4_1_invalid_utf8_property_is_malformed: V5, "30 08 0001 61 04 03 0001 ff" => BAD_UTF8;
    // 3.1.1 [MQTT-1.5.3-1]: applies to subscription filters.
    mqtt_1_5_3_1_invalid_utf8_filter_is_malformed: V311, "82 06 0001 0001 c3 00" => BAD_UTF8;
    // 3.1.1 / 5.0 [MQTT-3.3.2-2]: no wildcards in a PUBLISH topic name.
    mqtt_3_3_2_2_hash_in_topic_name_is_invalid: V311, "30 05 0003 61 2f 23" => WILDCARD;
    mqtt_3_3_2_2_plus_in_topic_name_is_invalid: V5, "30 06 0003 61 2b 62 00" => WILDCARD;
    // 3.1.1 [MQTT-4.7.3-1]: a topic name is at least one character (5.0 allows empty
    // with a topic alias, checked by the broker).
    mqtt_4_7_3_1_empty_topic_name_is_invalid_v311: V311, "30 02 0000" => TopicNameInvalid("empty topic name");
    mqtt_4_7_3_1_empty_topic_name_is_invalid_v31: V31, "30 02 0000" => TopicNameInvalid("empty topic name");
    // 3.1.1 [MQTT-3.1.3-10] + [MQTT-3.3.2-2]: the Will Topic is a topic name.
    mqtt_3_1_3_10_will_topic_with_wildcard_is_invalid: V311, "10 14 0004 4d515454 04 06 003c 0001 63 0003 612f23 0000" => WILDCARD;
    will_topic_empty_is_invalid: V5, "10 11 0004 4d515454 05 06 003c 00 0001 63 00 0000 0000" => TopicNameInvalid("empty topic name");
}

// Packet identifiers.
rejects! {
    // 3.1.1 [MQTT-2.3.1-1] / 5.0 [MQTT-2.2.1-3]: non-zero packet identifiers.
    mqtt_2_3_1_1_publish_qos1_with_id_0_is_rejected: V311, "32 05 0001 61 0000" => ZERO_ID;
    mqtt_2_2_1_3_subscribe_with_id_0_is_rejected: V5, "82 07 0000 00 0001 61 00" => ZERO_ID;
    mqtt_2_2_1_3_unsubscribe_with_id_0_is_rejected: V311, "a2 05 0000 0001 61" => ZERO_ID;
    mqtt_2_2_1_3_puback_with_id_0_is_rejected: V5, "40 02 0000" => ZERO_ID;
    mqtt_2_2_1_3_pubrel_with_id_0_is_rejected: V311, "62 02 0000" => ZERO_ID;
}

// 5.0 properties.
rejects! {
    // 5.0 section 3.3.2.3.3: "It is a Protocol Error to include the Message Expiry
    // Interval more than once".
    message_expiry_twice_is_protocol_error: V5, "30 0e 0001 61 0a 02 00000001 02 00000002" => DUPLICATE;
    // 5.0 section 3.8.2.1.2: Subscription Identifier at most once in SUBSCRIBE.
    subscription_identifier_twice_on_subscribe_is_protocol_error: V5, "82 0b 0001 04 0b 01 0b 02 0001 61 00" => DUPLICATE;
    // 5.0 section 3.8.2.1.2: "It is a Protocol Error if the Subscription Identifier has a
    // value of 0".
    subscription_identifier_0_is_protocol_error: V5, "82 09 0001 02 0b 00 0001 61 00" => Protocol("Subscription Identifier 0");
    // 5.0 section 2.2.2.2: an identifier not valid for the packet is a Malformed Packet
    // (Session Expiry Interval on PUBLISH).
    session_expiry_on_publish_is_malformed: V5, "30 09 0001 61 05 11 00000001" => NOT_ALLOWED;
    topic_alias_on_disconnect_is_malformed: V5, "e0 05 00 03 23 0001" => NOT_ALLOWED;
    session_expiry_on_auth_is_malformed: V5, "f0 07 18 05 11 00000001" => NOT_ALLOWED;
    will_delay_on_connect_is_malformed: V5, "10 13 0004 4d515454 05 02 003c 05 18 00000001 0001 63" => NOT_ALLOWED;
    reason_string_on_subscribe_is_malformed: V5, "82 0b 0001 04 1f 0001 72 0001 61 00" => NOT_ALLOWED;
    // 5.0 section 2.2.2.2: an unknown identifier is a Malformed Packet.
    unknown_property_identifier_is_malformed: V5, "30 06 0001 61 02 7f 00" => Malformed("unknown property identifier");
    // 5.0 section 2.2.2.1: the properties cannot run past the packet.
    property_length_past_the_packet_is_malformed: V5, "30 05 0001 61 05 01" => SHORT;
    // 5.0 [MQTT-1.5.5-1]: property length in its shortest form.
    non_minimal_property_length_is_malformed: V5, "30 05 0001 61 80 00" => Malformed("variable byte integer not in its shortest form");
    // 5.0 section 3.1.2.11.3: Receive Maximum 0 is a Protocol Error.
    receive_maximum_0_is_protocol_error: V5, "10 11 0004 4d515454 05 02 003c 03 21 0000 0001 63" => Protocol("Receive Maximum 0");
    // 5.0 section 3.1.2.11.4: Maximum Packet Size 0 is a Protocol Error.
    maximum_packet_size_0_is_protocol_error: V5, "10 13 0004 4d515454 05 02 003c 05 27 00000000 0001 63" => Protocol("Maximum Packet Size 0");
    // 5.0 section 3.1.2.11.7: Request Problem Information other than 0 or 1.
    request_problem_information_2_is_protocol_error: V5, "10 10 0004 4d515454 05 02 003c 02 17 02 0001 63" => NOT_0_OR_1;
    // 5.0 section 3.2.2.3.4: Maximum QoS other than 0 or 1.
    maximum_qos_2_is_protocol_error: V5, "20 05 00 00 02 24 02" => NOT_0_OR_1;
    // 5.0 section 3.1.2.11.10: Authentication Data without Authentication Method.
    authentication_data_without_method_is_protocol_error: V5, "10 11 0004 4d515454 05 02 003c 03 16 0000 0001 63" => Protocol("Authentication Data without Authentication Method");
}

// SUBSCRIBE and UNSUBSCRIBE payloads.
rejects! {
    // 3.1.1 [MQTT-3.8.3-3]: at least one Topic Filter / QoS pair.
    mqtt_3_8_3_3_subscribe_without_filters_is_protocol_error: V311, "82 02 0001" => Protocol("SUBSCRIBE with no topic filter");
    // 5.0 [MQTT-3.8.3-2]: at least one Topic Filter and Subscription Options pair.
    mqtt_3_8_3_2_subscribe_without_filters_is_protocol_error: V5, "82 03 0001 00" => Protocol("SUBSCRIBE with no topic filter");
    // 3.1.1 [MQTT-3-8.3-4]: reserved bits of the QoS byte.
    mqtt_3_8_3_4_subscribe_reserved_bits_are_malformed: V311, "82 06 0001 0001 61 04" => Malformed("subscription options reserved bits set");
    // 3.1.1 [MQTT-3-8.3-4]: QoS not 0, 1 or 2.
    mqtt_3_8_3_4_subscribe_qos_3_is_malformed: V311, "82 06 0001 0001 61 03" => Malformed("subscription QoS 3");
    // 5.0 [MQTT-3.8.3-5]: bits 6 and 7 of the options are reserved.
    mqtt_3_8_3_5_subscribe_reserved_bits_are_malformed: V5, "82 07 0001 00 0001 61 40" => Malformed("subscription options reserved bits set");
    // 5.0 section 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the value 3".
    subscribe_qos_3_is_protocol_error_v5: V5, "82 07 0001 00 0001 61 03" => Protocol("subscription QoS 3");
    // 5.0 section 3.8.3.1: "It is a Protocol Error to send a Retain Handling value of 3".
    subscribe_retain_handling_3_is_protocol_error: V5, "82 07 0001 00 0001 61 30" => Protocol("retain handling 3");
    // 5.0 section 3.8.3: a filter without its options byte is cut short.
    subscribe_filter_without_options_is_malformed: V5, "82 06 0001 00 0001 61" => SHORT;
    // 3.1.1 / 5.0 [MQTT-3.10.3-2]: at least one Topic Filter.
    mqtt_3_10_3_2_unsubscribe_without_filters_is_protocol_error_v311: V311, "a2 02 0001" => Protocol("UNSUBSCRIBE with no topic filter");
    mqtt_3_10_3_2_unsubscribe_without_filters_is_protocol_error_v5: V5, "a2 03 0001 00" => Protocol("UNSUBSCRIBE with no topic filter");
}

// CONNECT.
rejects! {
    // 3.1.1 [MQTT-3.1.2-2]: an unsupported protocol level.
    mqtt_3_1_2_2_unsupported_level_is_rejected: V311, "10 0d 0004 4d515454 06 02 003c 0001 63" => UnsupportedProtocol { level: 6 };
    // 3.1.1 [MQTT-3.1.2-1]: "MQTT" is the name for level 4 and 5, "MQIsdp" for level 3.
    mqtt_3_1_2_1_mqtt_name_with_level_3_is_rejected: V311, "10 0d 0004 4d515454 03 02 003c 0001 63" => UnsupportedProtocol { level: 3 };
    mqtt_3_1_2_1_mqisdp_name_with_level_4_is_rejected: V311, "10 0f 0006 4d5149736470 04 02 003c 0001 63" => UnsupportedProtocol { level: 4 };
    mqtt_3_1_2_1_unknown_protocol_name_is_rejected: V311, "10 0d 0004 4d515458 04 02 003c 0001 63" => UnsupportedProtocol { level: 4 };
    // 3.1.1 [MQTT-3.1.2-3] / 5.0 [MQTT-3.1.2-3]: the reserved connect flag must be 0.
    mqtt_3_1_2_3_connect_reserved_flag_is_malformed: V311, "10 0d 0004 4d515454 04 03 003c 0001 63" => Malformed("CONNECT reserved flag set");
    mqtt_3_1_2_3_connect_reserved_flag_is_malformed_v5: V5, "10 0e 0004 4d515454 05 03 003c 00 0001 63" => Malformed("CONNECT reserved flag set");
    // 3.1.1 [MQTT-3.1.2-13]: no will flag, so will QoS must be 0.
    mqtt_3_1_2_13_will_qos_without_will_flag_is_malformed: V311, "10 0d 0004 4d515454 04 0a 003c 0001 63" => NO_WILL_FLAG;
    // 3.1.1 [MQTT-3.1.2-15]: no will flag, so will retain must be 0.
    mqtt_3_1_2_15_will_retain_without_will_flag_is_malformed: V311, "10 0d 0004 4d515454 04 22 003c 0001 63" => NO_WILL_FLAG;
    // 5.0 [MQTT-3.1.2-11] and [MQTT-3.1.2-13]: the same rules in 5.0.
    mqtt_3_1_2_11_will_qos_without_will_flag_is_malformed_v5: V5, "10 0e 0004 4d515454 05 0a 003c 00 0001 63" => NO_WILL_FLAG;
    mqtt_3_1_2_13_will_retain_without_will_flag_is_malformed_v5: V5, "10 0e 0004 4d515454 05 22 003c 00 0001 63" => NO_WILL_FLAG;
    // 3.1.1 [MQTT-3.1.2-14] / 5.0 [MQTT-3.1.2-12]: will QoS 3 is malformed.
    mqtt_3_1_2_14_will_qos_3_is_malformed: V311, "10 12 0004 4d515454 04 1e 003c 0001 63 0001 77 0000" => Malformed("will QoS 3");
    // 3.1.1 [MQTT-3.1.2-22]: a password needs a user name.
    mqtt_3_1_2_22_password_without_user_name_is_malformed: V311, "10 10 0004 4d515454 04 42 003c 0001 63 0001 70" => Malformed("password flag without user name flag");
    mqtt_3_1_2_22_password_without_user_name_is_malformed_v31: V31, "10 12 0006 4d5149736470 03 42 003c 0001 63 0001 70" => Malformed("password flag without user name flag");
    // 3.1.1 section 3.1.3: the user name flag promises a user name.
    connect_missing_user_name_is_malformed: V311, "10 0d 0004 4d515454 04 82 003c 0001 63" => SHORT;
    // 3.1.1 section 3.1.3: nothing may follow the last declared field.
    connect_with_trailing_bytes_is_malformed: V311, "10 0e 0004 4d515454 04 02 003c 0001 63 ff" => TRAILING;
    // 3.1.1 section 3.1.2: a CONNECT cut off in its variable header.
    connect_without_keep_alive_is_malformed: V311, "10 08 0004 4d515454 04 02" => SHORT;
}

// CONNACK, acknowledgements, PINGREQ, PINGRESP, DISCONNECT.
rejects! {
    // 3.1.1 section 3.2.2.1 / 5.0 [MQTT-3.2.2-1]: bits 7-1 of the acknowledge flags are
    // reserved.
    connack_reserved_flags_are_malformed: V311, "20 02 02 00" => Malformed("CONNACK reserved flags set");
    mqtt_3_2_2_1_connack_reserved_flags_are_malformed_v5: V5, "20 03 02 00 00" => Malformed("CONNACK reserved flags set");
    // 3.1.1 section 3.2.2.3: return codes 6-255 are reserved.
    connack_reserved_return_code_is_malformed: V311, "20 02 00 06" => Malformed("reserved CONNACK return code");
    // 3.1.1 section 3.2.1: CONNACK's remaining length is 2.
    connack_v311_with_three_bytes_is_malformed: V311, "20 03 00 00 00" => TRAILING;
    // 3.1.1 section 3.4.1: PUBACK's remaining length is 2.
    puback_v311_with_reason_code_is_malformed: V311, "40 03 0001 00" => TRAILING;
    puback_shorter_than_packet_id_is_malformed: V5, "40 01 00" => SHORT;
    // 5.0 section 3.4.2.2: properties are announced by their length; a ragged end is short.
    puback_v5_with_truncated_properties_is_malformed: V5, "40 05 0001 00 03 1f" => SHORT;
    // 3.1.1 [MQTT-3.9.3-2]: SUBACK return codes other than 0, 1, 2 and 0x80 are reserved.
    mqtt_3_9_3_2_suback_reserved_return_code_is_malformed: V311, "90 03 0001 03" => Malformed("reserved SUBACK return code");
    // 3.1.1 section 3.9.3: one return code per filter, so at least one.
    suback_without_return_codes_is_protocol_error: V311, "90 02 0001" => Protocol("SUBACK with no return code");
    // 3.1.1 section 3.11: UNSUBACK has no payload.
    unsuback_v311_with_payload_is_malformed: V311, "b0 03 0001 00" => TRAILING;
    // 5.0 section 3.11.3: one reason code per filter, so at least one.
    unsuback_v5_without_reason_codes_is_protocol_error: V5, "b0 03 0001 00" => Protocol("UNSUBACK with no reason code");
    // 3.1.1 sections 3.12, 3.13: PINGREQ and PINGRESP have no variable header or payload.
    pingreq_with_body_is_malformed: V311, "c0 01 00" => TRAILING;
    pingresp_with_body_is_malformed: V5, "d0 01 00" => TRAILING;
    // 3.1.1 section 3.14: DISCONNECT has no variable header or payload before 5.0.
    disconnect_v311_with_body_is_malformed: V311, "e0 01 00" => TRAILING;
    // 5.0 section 3.14.2.2: properties that run past the packet.
    disconnect_v5_property_past_end_is_malformed: V5, "e0 03 00 05 11" => SHORT;
}

#[test]
fn empty_topic_name_is_left_to_the_broker_in_v5() {
    let decoded = decode_hex(V5, "30 04 0000 00 78").unwrap().unwrap();
    let Packet::Publish(publish) = decoded else {
        panic!("not a PUBLISH");
    };
    assert!(publish.topic.is_empty());
}

#[test]
fn password_without_user_name_is_allowed_in_v5() {
    let hex = "10 11 0004 4d515454 05 42 003c 00 0001 63 0001 70";
    let Packet::Connect(connect) = decode_hex(V5, hex).unwrap().unwrap() else {
        panic!("not a CONNECT");
    };
    assert_eq!(connect.username, None);
    assert_eq!(connect.password.as_deref(), Some(&b"p"[..]));
}

#[test]
fn user_property_may_repeat() {
    // [MQTT-3.3.2-18]: user properties repeat and keep their order.
    let hex = "30 13 0001 61 0e 26 0001 6b 0001 31 26 0001 6b 0001 32 00";
    let Packet::Publish(publish) = decode_hex(V5, hex).unwrap().unwrap() else {
        panic!("not a PUBLISH");
    };
    let values: Vec<&str> = publish
        .properties
        .user_properties
        .iter()
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values, ["1", "2"]);
}

#[test]
fn publish_from_server_may_carry_several_subscription_identifiers() {
    // 5.0 [MQTT-3.3.4-4]: one identifier per matching subscription.
    let hex = "30 09 0001 61 04 0b 01 0b 02 00";
    let Packet::Publish(publish) = decode_hex(V5, hex).unwrap().unwrap() else {
        panic!("not a PUBLISH");
    };
    assert_eq!(publish.properties.subscription_identifiers, [1, 2]);
}

#[test]
fn v311_publish_qos_0_with_dup_is_accepted() {
    // 3.1.1 [MQTT-3.3.1-2] states no consequence for the receiver; only 5.0 is strict.
    let decoded = decode_hex(V311, "38 03 0001 61").unwrap();
    assert!(matches!(decoded, Some(Packet::Publish(p)) if p.dup));
}
