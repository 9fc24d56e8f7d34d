//! Decoding packets from a byte buffer, with the validation the specifications require.
//!
//! The decoder never copies: a whole packet is split off the read buffer as one `Bytes`,
//! and topics, strings and payloads are slices of it. Every read is checked (`Reader`),
//! so no input can make it panic; a body that ends early is `Malformed`.

use crate::error::SHORT;
use crate::properties::PropertyContext;
use crate::{
    Auth, ByteStr, ConnAck, Connect, DecodeError, Disconnect, Packet, PacketType, Properties,
    ProtocolVersion, PubResp, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};
use bytes::{Buf, Bytes, BytesMut};

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
    let Some(&byte1) = buf.first() else {
        return Ok(None);
    };
    let mut remaining_len = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            // A trailing zero byte adds nothing: the value did not need this byte.
            if i > 0 && b == 0 {
                return Err(DecodeError::Malformed(
                    "remaining length not in its shortest form",
                ));
            }
            return Ok(Some(FixedHeader {
                byte1,
                remaining_len,
                header_len: 2 + i,
            }));
        }
    }
    Err(DecodeError::Malformed("remaining length over four bytes"))
}

/// Decodes one packet from the front of `buf`, consuming its bytes.
///
/// `Ok(None)` when the buffer does not yet hold a whole packet. `version` is the
/// connection's protocol version (a CONNECT carries its own and ignores it). A packet
/// whose total size exceeds `max_size` is rejected as soon as its fixed header is read.
///
/// After an error the buffer's contents are unspecified: the connection must be closed.
/// Checks that need connection state are the caller's: topic aliases (and so an empty
/// 5.0 topic name), a Subscription Identifier on a PUBLISH from a client
/// [MQTT-3.3.4-6], the AUTH method matching CONNECT's, client identifier rules.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = decode_fixed_header(buf)? else {
        return Ok(None);
    };
    let packet_type = packet_type(header.byte1 >> 4, version)?;
    let flags = header.byte1 & 0x0f;
    check_flags(packet_type, flags, version)?;

    let size = header.header_len + header.remaining_len;
    if size > max_size {
        return Err(DecodeError::PacketTooLarge {
            size,
            max: max_size,
        });
    }
    if buf.len() < size {
        // Bounded by max_size, checked above.
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let mut bytes = buf.split_to(size).freeze();
    bytes.advance(header.header_len);
    let r = Reader::new(bytes);
    decode_body(packet_type, flags, r, version).map(Some)
}

/// The packet type of the high nibble; 0 is reserved and AUTH exists only in 5.0.
fn packet_type(nibble: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
    Ok(match nibble {
        1 => PacketType::Connect,
        2 => PacketType::ConnAck,
        3 => PacketType::Publish,
        4 => PacketType::PubAck,
        5 => PacketType::PubRec,
        6 => PacketType::PubRel,
        7 => PacketType::PubComp,
        8 => PacketType::Subscribe,
        9 => PacketType::SubAck,
        10 => PacketType::Unsubscribe,
        11 => PacketType::UnsubAck,
        12 => PacketType::PingReq,
        13 => PacketType::PingResp,
        14 => PacketType::Disconnect,
        15 if version.is_v5() => PacketType::Auth,
        15 => return Err(DecodeError::Malformed("AUTH packet before MQTT 5.0")),
        _ => return Err(DecodeError::Malformed("reserved packet type 0")),
    })
}

/// Checks the fixed-header flags [MQTT-2.1.3-1], [MQTT-3.3.1-4], [MQTT-3.3.1-2].
fn check_flags(
    packet_type: PacketType,
    flags: u8,
    version: ProtocolVersion,
) -> Result<(), DecodeError> {
    match packet_type {
        PacketType::Publish => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                return Err(DecodeError::Malformed("PUBLISH with QoS 3"));
            }
            if version.is_v5() && qos == 0 && flags & 0b1000 != 0 {
                return Err(DecodeError::Malformed("PUBLISH QoS 0 with DUP set"));
            }
            Ok(())
        }
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => {
            if flags == 0b0010 {
                Ok(())
            } else {
                Err(DecodeError::Malformed(
                    "reserved fixed header flags not 0b0010",
                ))
            }
        }
        _ if flags == 0 => Ok(()),
        _ => Err(DecodeError::Malformed("reserved fixed header flags not 0")),
    }
}

fn decode_body(
    packet_type: PacketType,
    flags: u8,
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let packet = match packet_type {
        PacketType::Connect => Packet::Connect(Box::new(decode_connect(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(decode_connack(&mut r, version)?),
        PacketType::Publish => Packet::Publish(decode_publish(&mut r, flags, version)?),
        PacketType::PubAck => Packet::PubAck(decode_pub_resp(&mut r, version)?),
        PacketType::PubRec => Packet::PubRec(decode_pub_resp(&mut r, version)?),
        PacketType::PubRel => Packet::PubRel(decode_pub_resp(&mut r, version)?),
        PacketType::PubComp => Packet::PubComp(decode_pub_resp(&mut r, version)?),
        PacketType::Subscribe => Packet::Subscribe(decode_subscribe(&mut r, version)?),
        PacketType::SubAck => Packet::SubAck(decode_suback(&mut r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(decode_unsubscribe(&mut r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(decode_unsuback(&mut r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(decode_disconnect(&mut r, version)?),
        PacketType::Auth => Packet::Auth(decode_auth(&mut r)?),
    };
    if r.is_empty() {
        Ok(packet)
    } else {
        Err(DecodeError::Malformed(
            "bytes after the packet's last field",
        ))
    }
}

/// CONNECT: MQTT 3.1 section 3.1, 3.1.1 section 3.1, 5.0 section 3.1.
fn decode_connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.string()?;
    let level = r.u8()?;
    let protocol = match (name.as_str(), level) {
        ("MQIsdp", 3) => ProtocolVersion::V31,
        ("MQTT", 4) => ProtocolVersion::V311,
        ("MQTT", 5) => ProtocolVersion::V5,
        _ => return Err(DecodeError::UnsupportedProtocol { level }),
    };
    let flags = r.u8()?;
    if flags & 0b0000_0001 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = (flags >> 3) & 0b11;
    let will_retain = flags & 0b0010_0000 != 0;
    let password_flag = flags & 0b0100_0000 != 0;
    let username_flag = flags & 0b1000_0000 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        return Err(DecodeError::Malformed(
            "will QoS or retain set without will flag",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::Malformed("will QoS 3"))?;
    if password_flag && !username_flag && !protocol.is_v5() {
        return Err(DecodeError::Malformed(
            "password flag without user name flag",
        ));
    }
    let keep_alive = r.u16()?;
    let properties = decode_properties(r, protocol, PropertyContext::Connect)?;
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = decode_properties(r, protocol, PropertyContext::Will)?;
        let topic = r.string()?;
        check_topic_name(&topic, false)?;
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string()?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & 0b0000_0010 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

/// CONNACK. In 3.1 the first byte is reserved (no session present flag).
fn decode_connack(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = r.u8()?;
    let session_present = match version {
        ProtocolVersion::V31 => false,
        _ if flags & 0xfe != 0 => {
            return Err(DecodeError::Malformed("CONNACK reserved flags set"));
        }
        _ => flags & 1 != 0,
    };
    let code = r.u8()?;
    let reason_code = match code {
        _ if version.is_v5() => ReasonCode(code),
        0..=5 => ReasonCode::from_v3_connack(code),
        // 3.1.1 section 3.2.2.3: 6-255 are reserved.
        _ => return Err(DecodeError::Malformed("reserved CONNACK return code")),
    };
    let properties = decode_properties(r, version, PropertyContext::ConnAck)?;
    Ok(ConnAck {
        session_present,
        reason_code,
        properties,
    })
}

/// PUBLISH. An empty topic is left to the broker in 5.0 (it may be a topic alias).
fn decode_publish(
    r: &mut Reader,
    flags: u8,
    version: ProtocolVersion,
) -> Result<Publish, DecodeError> {
    // QoS 3 was rejected by check_flags.
    let qos = QoS::from_u8((flags >> 1) & 0b11).ok_or(DecodeError::Malformed("PUBLISH QoS 3"))?;
    let topic = r.string()?;
    check_topic_name(&topic, version.is_v5())?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let properties = decode_properties(r, version, PropertyContext::Publish)?;
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        packet_id,
        properties,
        payload: r.rest(),
    })
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP. In 5.0 the reason code and properties may be left
/// out (remaining length 2 or 3).
fn decode_pub_resp(r: &mut Reader, version: ProtocolVersion) -> Result<PubResp, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut resp = PubResp::new(packet_id);
    if version.is_v5() && !r.is_empty() {
        resp.reason_code = ReasonCode(r.u8()?);
        if !r.is_empty() {
            resp.properties = decode_properties(r, version, PropertyContext::PubResp)?;
        }
    }
    Ok(resp)
}

/// SUBSCRIBE: at least one filter (3.1.1 [MQTT-3.8.3-3], 5.0 [MQTT-3.8.3-2]), each with
/// its options byte.
fn decode_subscribe(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties(r, version, PropertyContext::Subscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let options = decode_subscription_options(r.u8()?, version)?;
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("SUBSCRIBE with no topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

/// The options byte: QoS only before 5.0 [MQTT-3-8.3-4]; 5.0 adds no local, retain as
/// published and retain handling, bits 6 and 7 reserved [MQTT-3.8.3-5].
fn decode_subscription_options(
    byte: u8,
    version: ProtocolVersion,
) -> Result<SubscriptionOptions, DecodeError> {
    let reserved = if version.is_v5() {
        0b1100_0000
    } else {
        0b1111_1100
    };
    if byte & reserved != 0 {
        return Err(DecodeError::Malformed(
            "subscription options reserved bits set",
        ));
    }
    let qos = match QoS::from_u8(byte & 0b11) {
        Some(qos) => qos,
        // 5.0 section 3.8.3.1: "It is a Protocol Error if the Maximum QoS field has the
        // value 3"; 3.1.1 treats it as malformed [MQTT-3-8.3-4].
        None if version.is_v5() => return Err(DecodeError::Protocol("subscription QoS 3")),
        None => return Err(DecodeError::Malformed("subscription QoS 3")),
    };
    let retain_handling = match (byte >> 4) & 0b11 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(DecodeError::Protocol("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0b0100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling,
    })
}

/// SUBACK: one return code per filter; before 5.0 only 0, 1, 2 and 0x80 exist
/// [MQTT-3.9.3-2].
fn decode_suback(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties(r, version, PropertyContext::SubAck)?;
    let mut reason_codes = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = r.u8()?;
        if !version.is_v5() && !matches!(code, 0 | 1 | 2 | 0x80) {
            return Err(DecodeError::Malformed("reserved SUBACK return code"));
        }
        reason_codes.push(ReasonCode(code));
    }
    if reason_codes.is_empty() {
        return Err(DecodeError::Protocol("SUBACK with no return code"));
    }
    Ok(SubAck {
        packet_id,
        reason_codes,
        properties,
    })
}

/// UNSUBSCRIBE: at least one filter [MQTT-3.10.3-2].
fn decode_unsubscribe(
    r: &mut Reader,
    version: ProtocolVersion,
) -> Result<Unsubscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = decode_properties(r, version, PropertyContext::Unsubscribe)?;
    let mut filters = Vec::new();
    while !r.is_empty() {
        filters.push(r.string()?);
    }
    if filters.is_empty() {
        return Err(DecodeError::Protocol("UNSUBSCRIBE with no topic filter"));
    }
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

/// UNSUBACK: only the packet id before 5.0; 5.0 adds properties and reason codes.
fn decode_unsuback(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, DecodeError> {
    let packet_id = r.packet_id()?;
    let mut ack = UnsubAck {
        packet_id,
        ..UnsubAck::default()
    };
    if version.is_v5() {
        ack.properties = decode_properties(r, version, PropertyContext::UnsubAck)?;
        while !r.is_empty() {
            ack.reason_codes.push(ReasonCode(r.u8()?));
        }
        if ack.reason_codes.is_empty() {
            return Err(DecodeError::Protocol("UNSUBACK with no reason code"));
        }
    }
    Ok(ack)
}

/// DISCONNECT: empty before 5.0; in 5.0 remaining length 0 means Normal disconnection
/// and 1 means no properties.
fn decode_disconnect(r: &mut Reader, version: ProtocolVersion) -> Result<Disconnect, DecodeError> {
    let mut disconnect = Disconnect::default();
    if version.is_v5() && !r.is_empty() {
        disconnect.reason_code = ReasonCode(r.u8()?);
        if !r.is_empty() {
            disconnect.properties = decode_properties(r, version, PropertyContext::Disconnect)?;
        }
    }
    Ok(disconnect)
}

/// AUTH (5.0 only): remaining length 0 means Success with no properties.
fn decode_auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut auth = Auth::default();
    if !r.is_empty() {
        auth.reason_code = ReasonCode(r.u8()?);
        if !r.is_empty() {
            auth.properties = decode_properties(r, ProtocolVersion::V5, PropertyContext::Auth)?;
        }
    }
    Ok(auth)
}

/// Properties are only on the wire in 5.0.
fn decode_properties(
    r: &mut Reader,
    version: ProtocolVersion,
    context: PropertyContext,
) -> Result<Properties, DecodeError> {
    if version.is_v5() {
        Properties::decode(r, context)
    } else {
        Ok(Properties::default())
    }
}

/// A topic name must not hold wildcards [MQTT-3.3.2-2] and must not be empty
/// [MQTT-4.7.3-1], except a 5.0 PUBLISH that may rely on a topic alias.
fn check_topic_name(topic: &str, empty_allowed: bool) -> Result<(), DecodeError> {
    if topic.is_empty() && !empty_allowed {
        return Err(DecodeError::TopicNameInvalid("empty topic name"));
    }
    if topic.contains(['+', '#']) {
        return Err(DecodeError::TopicNameInvalid("wildcard in topic name"));
    }
    Ok(())
}

/// A checked cursor over one packet's body. Every read fails with `Malformed` rather than
/// panicking when the body is too short.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.buf.try_get_u8().map_err(|_| SHORT)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.buf.try_get_u16().map_err(|_| SHORT)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.buf.try_get_u32().map_err(|_| SHORT)
    }

    /// A non-zero packet identifier [MQTT-2.2.1-3].
    pub(crate) fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::Protocol("packet identifier 0")),
            id => Ok(id),
        }
    }

    /// A Variable Byte Integer (5.0 section 1.5.5), at most four bytes and in its shortest
    /// form [MQTT-1.5.5-1].
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(DecodeError::Malformed(
                        "variable byte integer not in its shortest form",
                    ));
                }
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed(
            "variable byte integer over four bytes",
        ))
    }

    /// The next `n` bytes, sharing the packet's buffer.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if n > self.buf.len() {
            return Err(SHORT);
        }
        Ok(self.buf.split_to(n))
    }

    /// Everything left (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary Data: a two-byte length, then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 Encoded String: valid UTF-8 [MQTT-1.5.4-1] without U+0000 [MQTT-1.5.4-2].
    pub(crate) fn string(&mut self) -> Result<ByteStr, DecodeError> {
        let bytes = self.binary()?;
        if bytes.contains(&0) {
            return Err(DecodeError::Malformed("U+0000 in a UTF-8 string"));
        }
        ByteStr::from_utf8(bytes).map_err(|_| DecodeError::Malformed("invalid UTF-8 string"))
    }

    /// A sub-reader over the next `n` bytes (a property block).
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader, DecodeError> {
        self.take(n).map(Reader::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    fn hex(s: &str) -> BytesMut {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect::<Vec<u8>>()
            .as_slice()
            .into()
    }

    fn decode_all(s: &str, version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
        decode(&mut hex(s), version, usize::MAX)
    }

    #[test]
    fn fixed_header_lengths_of_one_to_four_bytes() {
        let h = decode_fixed_header(&[0x30, 0x00]).unwrap().unwrap();
        assert_eq!((h.remaining_len, h.header_len), (0, 2));
        let h = decode_fixed_header(&[0x30, 0xc1, 0x02]).unwrap().unwrap();
        assert_eq!((h.remaining_len, h.header_len), (321, 3));
        let h = decode_fixed_header(&[0x30, 0xff, 0xff, 0xff, 0x7f])
            .unwrap()
            .unwrap();
        assert_eq!((h.remaining_len, h.header_len), (268_435_455, 5));
    }

    #[test]
    fn fixed_header_needs_more_bytes() {
        assert_eq!(decode_fixed_header(&[]), Ok(None));
        assert_eq!(decode_fixed_header(&[0x30]), Ok(None));
        assert_eq!(decode_fixed_header(&[0x30, 0x80, 0x80]), Ok(None));
    }

    #[test]
    fn fixed_header_rejects_five_byte_length() {
        let err = decode_fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(err, Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn fixed_header_rejects_non_minimal_length() {
        let err = decode_fixed_header(&[0x30, 0x80, 0x00]);
        assert!(matches!(err, Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn incomplete_packet_is_left_in_the_buffer() {
        let mut buf = hex("30 05 00 01 61 68");
        assert_eq!(decode(&mut buf, ProtocolVersion::V311, 1000), Ok(None));
        assert_eq!(buf.len(), 6);
        buf.extend_from_slice(b"i");
        let packet = decode(&mut buf, ProtocolVersion::V311, 1000)
            .unwrap()
            .unwrap();
        assert!(buf.is_empty());
        let Packet::Publish(p) = packet else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.topic, "a");
        assert_eq!(&p.payload[..], b"hi");
    }

    #[test]
    fn decodes_back_to_back_packets() {
        let mut buf = hex("c0 00 d0 00");
        let v = ProtocolVersion::V311;
        assert_eq!(decode(&mut buf, v, 10), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut buf, v, 10), Ok(Some(Packet::PingResp)));
        assert_eq!(decode(&mut buf, v, 10), Ok(None));
    }

    #[test]
    fn decodes_a_v311_connect() {
        // MQTT, level 4, clean session + will qos 1 + user name, keep alive 60, id "c",
        // will topic "w" payload "x", user name "u".
        let packet = decode_all(
            "10 16 0004 4d515454 04 8e 003c 0001 63 0001 77 0001 78 0001 75",
            ProtocolVersion::V5,
        )
        .unwrap()
        .unwrap();
        let Packet::Connect(c) = packet else {
            panic!("not a CONNECT")
        };
        assert_eq!(c.protocol, ProtocolVersion::V311);
        assert!(c.clean_start);
        assert_eq!(c.keep_alive, 60);
        assert_eq!(c.client_id, "c");
        let will = c.will.unwrap();
        assert_eq!((will.topic.as_str(), &will.payload[..]), ("w", &b"x"[..]));
        assert_eq!(will.qos, QoS::AtLeastOnce);
        assert_eq!(c.username.unwrap(), "u");
        assert_eq!(c.password, None);
    }

    #[test]
    fn decodes_a_v5_publish_with_properties() {
        // QoS 1, topic "t", id 7, properties: message expiry 10, user property ("k","v").
        let packet = decode_all(
            "32 14 0001 74 0007 0c 02 0000000a 26 0001 6b 0001 76 6869",
            ProtocolVersion::V5,
        )
        .unwrap()
        .unwrap();
        let Packet::Publish(p) = packet else {
            panic!("not a PUBLISH")
        };
        assert_eq!(p.packet_id, 7);
        assert_eq!(p.properties.message_expiry_interval, Some(10));
        assert_eq!(p.properties.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(&p.payload[..], b"hi");
    }

    #[test]
    fn v5_puback_short_forms() {
        let v = ProtocolVersion::V5;
        let two = decode_all("40 02 0001", v).unwrap().unwrap();
        assert_eq!(two, Packet::PubAck(PubResp::new(1)));
        let three = decode_all("40 03 0001 10", v).unwrap().unwrap();
        let expected = PubResp::with_reason(1, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        assert_eq!(three, Packet::PubAck(expected));
    }

    #[test]
    fn v5_disconnect_with_no_body_is_normal() {
        let packet = decode_all("e0 00", ProtocolVersion::V5).unwrap().unwrap();
        assert_eq!(packet, Packet::Disconnect(Disconnect::default()));
    }

    #[test]
    fn v3_connack_return_code_maps_to_reason_code() {
        let packet = decode_all("20 02 01 05", ProtocolVersion::V311)
            .unwrap()
            .unwrap();
        let Packet::ConnAck(c) = packet else {
            panic!("not a CONNACK")
        };
        assert!(c.session_present);
        assert_eq!(c.reason_code, ReasonCode::NOT_AUTHORIZED);
    }

    #[test]
    fn auth_is_malformed_before_v5() {
        let err = decode_all("f0 00", ProtocolVersion::V311);
        assert!(matches!(err, Err(DecodeError::Malformed(_))));
        assert_eq!(
            decode_all("f0 00", ProtocolVersion::V5),
            Ok(Some(Packet::Auth(Auth::default())))
        );
    }

    #[test]
    fn reencoding_a_decoded_packet_gives_the_same_bytes() {
        let wire = "82 0e 0001 0003 612f62 01 0003 632f23 02";
        let v = ProtocolVersion::V311;
        let packet = decode_all(wire, v).unwrap().unwrap();
        let mut out = BytesMut::new();
        encode::encode(&packet, v, &mut out);
        assert_eq!(out, hex(wire));
    }
}
