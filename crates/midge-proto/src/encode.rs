//! Encoding packets into a byte buffer, in the form each protocol version expects.
//!
//! Every packet body is written once, through the `Sink` trait: into a `BytesMut` to
//! encode it, into a `Counter` to measure it. `encoded_len` therefore cannot disagree
//! with `encode`, which matters because the broker uses it to respect the peer's
//! Maximum Packet Size.
//!
//! The encoder trusts its input (it comes from the broker, not the network): strings and
//! binary data longer than 65,535 bytes and packets longer than 268,435,455 bytes cannot
//! be represented and are the caller's bug (checked by debug assertions).

use crate::{
    Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResp, Publish, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use bytes::{BufMut, BytesMut};

/// Appends `packet`, encoded for `version`, to `buf`.
///
/// A CONNECT is encoded for its own `protocol`, whatever `version` says. AUTH exists only
/// in 5.0 and is always written in the 5.0 form.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    let version = effective_version(packet, version);
    let body = body_len(packet, version);
    debug_assert!(body <= MAX_REMAINING_LEN, "packet too large to encode");
    buf.reserve(1 + varint_len(body) + body);
    Sink::put_u8(buf, first_byte(packet));
    put_varint(buf, body as u32);
    encode_body(packet, version, buf);
}

/// The number of bytes `encode` would write for `packet` (fixed header included).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body = body_len(packet, effective_version(packet, version));
    1 + varint_len(body) + body
}

/// The largest Remaining Length a four-byte Variable Byte Integer can hold.
const MAX_REMAINING_LEN: usize = 268_435_455;

fn effective_version(packet: &Packet, version: ProtocolVersion) -> ProtocolVersion {
    match packet {
        Packet::Connect(connect) => connect.protocol,
        _ => version,
    }
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let mut counter = Counter::default();
    encode_body(packet, version, &mut counter);
    counter.0
}

/// Packet type and flags [MQTT-2.1.3-1].
fn first_byte(packet: &Packet) -> u8 {
    let flags = match packet {
        Packet::Publish(p) => (u8::from(p.dup) << 3) | (p.qos.as_u8() << 1) | u8::from(p.retain),
        Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
        _ => 0,
    };
    ((packet.packet_type() as u8) << 4) | flags
}

fn encode_body<S: Sink>(packet: &Packet, version: ProtocolVersion, out: &mut S) {
    match packet {
        Packet::Connect(connect) => encode_connect(connect, out),
        Packet::ConnAck(connack) => encode_connack(connack, version, out),
        Packet::Publish(publish) => encode_publish(publish, version, out),
        Packet::PubAck(resp)
        | Packet::PubRec(resp)
        | Packet::PubRel(resp)
        | Packet::PubComp(resp) => encode_pub_resp(resp, version, out),
        Packet::Subscribe(subscribe) => encode_subscribe(subscribe, version, out),
        Packet::SubAck(suback) => encode_suback(suback, version, out),
        Packet::Unsubscribe(unsubscribe) => encode_unsubscribe(unsubscribe, version, out),
        Packet::UnsubAck(unsuback) => encode_unsuback(unsuback, version, out),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(Disconnect {
            reason_code,
            properties,
        })
        | Packet::Auth(Auth {
            reason_code,
            properties,
        }) => {
            let v5 = version.is_v5() || matches!(packet, Packet::Auth(_));
            encode_reason_tail(*reason_code, properties, v5, out);
        }
    }
}

fn encode_connect<S: Sink>(c: &Connect, out: &mut S) {
    let v5 = c.protocol.is_v5();
    let name: &[u8] = if c.protocol == ProtocolVersion::V31 {
        b"MQIsdp"
    } else {
        b"MQTT"
    };
    put_binary(out, name);
    out.put_u8(c.protocol.level());
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(will) = &c.will {
        flags |= 0b100 | (will.qos.as_u8() << 3) | (u8::from(will.retain) << 5);
    }
    flags |= u8::from(c.password.is_some()) << 6;
    flags |= u8::from(c.username.is_some()) << 7;
    out.put_u8(flags);
    out.put_u16(c.keep_alive);
    if v5 {
        c.properties.encode(out);
    }
    put_binary(out, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        if v5 {
            will.properties.encode(out);
        }
        put_binary(out, will.topic.as_bytes());
        put_binary(out, &will.payload);
    }
    if let Some(username) = &c.username {
        put_binary(out, username.as_bytes());
    }
    if let Some(password) = &c.password {
        put_binary(out, password);
    }
}

/// CONNACK: 3.1 has no session present flag and 3.x uses return codes.
fn encode_connack<S: Sink>(c: &ConnAck, version: ProtocolVersion, out: &mut S) {
    let session_present = c.session_present && version != ProtocolVersion::V31;
    out.put_u8(u8::from(session_present));
    if version.is_v5() {
        out.put_u8(c.reason_code.0);
        c.properties.encode(out);
    } else {
        out.put_u8(c.reason_code.to_v3_connack());
    }
}

fn encode_publish<S: Sink>(p: &Publish, version: ProtocolVersion, out: &mut S) {
    put_binary(out, p.topic.as_bytes());
    if p.qos != QoS::AtMostOnce {
        out.put_u16(p.packet_id);
    }
    if version.is_v5() {
        p.properties.encode(out);
    }
    out.put_slice(&p.payload);
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP: 5.0 uses the short forms when it can.
fn encode_pub_resp<S: Sink>(r: &PubResp, version: ProtocolVersion, out: &mut S) {
    out.put_u16(r.packet_id);
    if version.is_v5() {
        encode_reason_tail(r.reason_code, &r.properties, true, out);
    }
}

/// The optional "reason code, then properties" tail of 5.0 acks, DISCONNECT and AUTH:
/// nothing for Success without properties, the code alone without properties.
fn encode_reason_tail<S: Sink>(code: ReasonCode, props: &Properties, v5: bool, out: &mut S) {
    if !v5 {
        return;
    }
    let no_props = props.is_empty();
    if code == ReasonCode::SUCCESS && no_props {
        return;
    }
    out.put_u8(code.0);
    if !no_props {
        props.encode(out);
    }
}

fn encode_subscribe<S: Sink>(s: &Subscribe, version: ProtocolVersion, out: &mut S) {
    out.put_u16(s.packet_id);
    if version.is_v5() {
        s.properties.encode(out);
    }
    for (filter, options) in &s.filters {
        put_binary(out, filter.as_bytes());
        out.put_u8(options_byte(options, version));
    }
}

/// The subscription options byte; before 5.0 only the QoS bits exist.
fn options_byte(o: &SubscriptionOptions, version: ProtocolVersion) -> u8 {
    let mut byte = o.qos.as_u8();
    if version.is_v5() {
        byte |= u8::from(o.no_local) << 2;
        byte |= u8::from(o.retain_as_published) << 3;
        byte |= match o.retain_handling {
            RetainHandling::SendAtSubscribe => 0,
            RetainHandling::SendIfNew => 1,
            RetainHandling::DoNotSend => 2,
        } << 4;
    }
    byte
}

/// SUBACK: before 5.0 every failure is 0x80 [MQTT-3.9.3-2].
fn encode_suback<S: Sink>(s: &SubAck, version: ProtocolVersion, out: &mut S) {
    out.put_u16(s.packet_id);
    if version.is_v5() {
        s.properties.encode(out);
    }
    for code in &s.reason_codes {
        let byte = if !version.is_v5() && code.is_error() {
            0x80
        } else {
            code.0
        };
        out.put_u8(byte);
    }
}

fn encode_unsubscribe<S: Sink>(u: &Unsubscribe, version: ProtocolVersion, out: &mut S) {
    out.put_u16(u.packet_id);
    if version.is_v5() {
        u.properties.encode(out);
    }
    for filter in &u.filters {
        put_binary(out, filter.as_bytes());
    }
}

/// UNSUBACK: only the packet id before 5.0.
fn encode_unsuback<S: Sink>(u: &UnsubAck, version: ProtocolVersion, out: &mut S) {
    out.put_u16(u.packet_id);
    if version.is_v5() {
        u.properties.encode(out);
        for code in &u.reason_codes {
            out.put_u8(code.0);
        }
    }
}

/// Where encoded bytes go: a buffer, or a counter that only measures.
pub(crate) trait Sink {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_slice(&mut self, s: &[u8]);
}

impl Sink for BytesMut {
    fn put_u8(&mut self, v: u8) {
        BufMut::put_u8(self, v);
    }
    fn put_u16(&mut self, v: u16) {
        BufMut::put_u16(self, v);
    }
    fn put_u32(&mut self, v: u32) {
        BufMut::put_u32(self, v);
    }
    fn put_slice(&mut self, s: &[u8]) {
        BufMut::put_slice(self, s);
    }
}

/// A `Sink` that counts bytes instead of writing them.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_u8(&mut self, _: u8) {
        self.0 += 1;
    }
    fn put_u16(&mut self, _: u16) {
        self.0 += 2;
    }
    fn put_u32(&mut self, _: u32) {
        self.0 += 4;
    }
    fn put_slice(&mut self, s: &[u8]) {
        self.0 += s.len();
    }
}

/// Writes a Variable Byte Integer (5.0 section 1.5.5) in its shortest form.
pub(crate) fn put_varint<S: Sink>(out: &mut S, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.put_u8(byte);
            return;
        }
        out.put_u8(byte | 0x80);
    }
}

/// Bytes a Variable Byte Integer of this value takes.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes Binary Data or a UTF-8 string: two-byte length, then the bytes.
pub(crate) fn put_binary<S: Sink>(out: &mut S, bytes: &[u8]) {
    debug_assert!(bytes.len() <= usize::from(u16::MAX), "string too long");
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ByteStr;

    fn encoded(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(packet, version, &mut buf);
        assert_eq!(buf.len(), encoded_len(packet, version));
        buf.to_vec()
    }

    #[test]
    fn v5_puback_uses_the_short_forms() {
        let v = ProtocolVersion::V5;
        let ok = Packet::PubAck(PubResp::new(5));
        assert_eq!(encoded(&ok, v), [0x40, 2, 0, 5]);
        let no_match = Packet::PubAck(PubResp::with_reason(5, ReasonCode(0x10)));
        assert_eq!(encoded(&no_match, v), [0x40, 3, 0, 5, 0x10]);
        let mut with_props = PubResp::new(5);
        with_props.properties.reason_string = Some(ByteStr::from("r"));
        let bytes = encoded(&Packet::PubAck(with_props), v);
        assert_eq!(bytes, [0x40, 8, 0, 5, 0, 4, 0x1f, 0, 1, b'r']);
    }

    #[test]
    fn v311_pubrel_has_only_the_packet_id() {
        let packet = Packet::PubRel(PubResp::with_reason(9, ReasonCode(0x92)));
        assert_eq!(encoded(&packet, ProtocolVersion::V311), [0x62, 2, 0, 9]);
    }

    #[test]
    fn v5_disconnect_short_form() {
        let normal = Packet::Disconnect(Disconnect::default());
        assert_eq!(encoded(&normal, ProtocolVersion::V5), [0xe0, 0]);
        let with_will = Packet::Disconnect(Disconnect {
            reason_code: ReasonCode::DISCONNECT_WITH_WILL,
            ..Disconnect::default()
        });
        assert_eq!(encoded(&with_will, ProtocolVersion::V5), [0xe0, 1, 4]);
        assert_eq!(encoded(&with_will, ProtocolVersion::V311), [0xe0, 0]);
    }

    #[test]
    fn v3_connack_uses_return_codes() {
        let connack = Packet::ConnAck(ConnAck {
            session_present: true,
            reason_code: ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            properties: Properties::default(),
        });
        assert_eq!(encoded(&connack, ProtocolVersion::V311), [0x20, 2, 1, 4]);
        assert_eq!(encoded(&connack, ProtocolVersion::V31), [0x20, 2, 0, 4]);
        assert_eq!(
            encoded(&connack, ProtocolVersion::V5),
            [0x20, 3, 1, 0x86, 0]
        );
    }

    #[test]
    fn v3_suback_failures_become_0x80() {
        let suback = Packet::SubAck(SubAck {
            packet_id: 1,
            reason_codes: vec![ReasonCode(1), ReasonCode::NOT_AUTHORIZED],
            properties: Properties::default(),
        });
        assert_eq!(
            encoded(&suback, ProtocolVersion::V311),
            [0x90, 4, 0, 1, 1, 0x80]
        );
        assert_eq!(
            encoded(&suback, ProtocolVersion::V5),
            [0x90, 5, 0, 1, 0, 1, 0x87]
        );
    }

    #[test]
    fn v311_unsuback_has_no_payload() {
        let unsuback = Packet::UnsubAck(UnsubAck {
            packet_id: 3,
            reason_codes: vec![ReasonCode::SUCCESS],
            properties: Properties::default(),
        });
        assert_eq!(encoded(&unsuback, ProtocolVersion::V311), [0xb0, 2, 0, 3]);
        assert_eq!(
            encoded(&unsuback, ProtocolVersion::V5),
            [0xb0, 4, 0, 3, 0, 0]
        );
    }

    #[test]
    fn publish_header_flags_and_long_remaining_length() {
        let publish = Packet::Publish(Publish {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: ByteStr::from("t"),
            packet_id: 1,
            properties: Properties::default(),
            payload: vec![7u8; 200].into(),
        });
        let bytes = encoded(&publish, ProtocolVersion::V311);
        // 3 (topic) + 2 (id) + 200 = 205 = 0xcd 0x01 as a Variable Byte Integer.
        assert_eq!(&bytes[..3], [0x3d, 0xcd, 0x01]);
        assert_eq!(bytes.len(), 3 + 205);
    }

    #[test]
    fn varint_len_matches_put_varint() {
        for value in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut counter = Counter::default();
            put_varint(&mut counter, value as u32);
            assert_eq!(counter.0, varint_len(value), "value {value}");
        }
    }
}
