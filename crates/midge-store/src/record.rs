//! The records kept on disk: plain structs, serialised with postcard behind a format byte.
//!
//! They are the store's own types, not the broker's, so the store does not depend on the
//! broker and a change of the broker's in-memory shapes does not change the file format.
//! Conversions from and to `midge-proto` types sit next to each record.

use bytes::Bytes;
use midge_proto::{ByteStr, Properties, QoS, RetainHandling, SubscriptionOptions};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch. Stored instead of `Instant`
/// because it must mean the same thing after a restart.
pub type UnixMillis = u64;

/// Identifies one stored message body, shared by every queue entry that refers to it.
pub type MessageId = u64;

/// The first byte of every stored value. A value with another first byte was written by
/// another format (or is damage) and is reported, never guessed at.
pub(crate) const RECORD_FORMAT: u8 = 1;

/// Converts a wall-clock time to [`UnixMillis`] (times before 1970 become 0).
pub fn unix_millis(t: SystemTime) -> UnixMillis {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Converts [`UnixMillis`] back to a wall-clock time.
pub fn system_time(ms: UnixMillis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// A session as the broker must remember it across a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session Expiry Interval in seconds; `None` = never expires (5.0 `0xFFFFFFFF`,
    /// or a 3.1.1 session without clean session).
    pub expiry_interval: Option<u32>,
    /// When its network connection closed; `None` while a connection is attached. A
    /// session recovered with `None` lost its connection in the crash: the broker sets it.
    pub disconnected_at: Option<UnixMillis>,
    /// Protocol level of the last CONNECT (3 = 3.1, 4 = 3.1.1, 5 = 5.0).
    pub protocol_level: u8,
    /// The session's first queue sequence number. Queue entries and in-flight markers of
    /// its client ID below it belong to an earlier session of that client ID (a publisher
    /// that routed to it just before it ended may commit after its deletion): they are
    /// dropped at load. 0 in records of format 1.
    pub first_seq: u64,
}

/// The record format of sessions since they carry `first_seq`. Sessions of format 1 are
/// still read.
pub(crate) const SESSION_FORMAT: u8 = 2;

/// A session as record format 1 wrote it.
#[derive(Deserialize)]
struct SessionRecordV1 {
    expiry_interval: Option<u32>,
    disconnected_at: Option<UnixMillis>,
    protocol_level: u8,
}

impl SessionRecord {
    /// Serialises the session behind [`SESSION_FORMAT`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_as(SESSION_FORMAT, self)
    }

    /// Reads a session of format 2, or of format 1 (with `first_seq: 0`).
    pub(crate) fn decode(bytes: &[u8]) -> Result<SessionRecord, String> {
        decode_upgrading(bytes, SESSION_FORMAT, |s: SessionRecordV1| SessionRecord {
            expiry_interval: s.expiry_interval,
            disconnected_at: s.disconnected_at,
            protocol_level: s.protocol_level,
            first_seq: 0,
        })
    }

    /// True when the session outlived its expiry interval at `now`. A session that was
    /// connected at the crash and has interval 0 ended with that connection.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        match (self.expiry_interval, self.disconnected_at) {
            (None, _) => false,
            (Some(0), None) => true,
            (Some(_), None) => false,
            (Some(secs), Some(at)) => at.saturating_add(u64::from(secs) * 1000) <= now,
        }
    }
}

/// One subscription of a session, keyed by the filter exactly as subscribed
/// (`$share/group/...` included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// The SUBSCRIBE options byte (QoS, no local, retain as published, retain handling).
    pub options: u8,
    /// The 5.0 Subscription Identifier, if one was given.
    pub id: Option<u32>,
}

impl SubscriptionRecord {
    /// Builds the record from the broker's decoded options.
    pub fn new(options: SubscriptionOptions, id: Option<u32>) -> Self {
        SubscriptionRecord {
            options: encode_subscription_options(options),
            id,
        }
    }

    /// The options as `midge-proto` types; reserved or invalid bits read as the nearest
    /// valid value (QoS 3 as QoS 2, retain handling 3 as "do not send").
    pub fn subscription_options(&self) -> SubscriptionOptions {
        let b = self.options;
        SubscriptionOptions {
            qos: QoS::from_u8(b & 0b11).unwrap_or(QoS::ExactlyOnce),
            no_local: b & 0b0100 != 0,
            retain_as_published: b & 0b1000 != 0,
            retain_handling: match (b >> 4) & 0b11 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            },
        }
    }
}

/// The SUBSCRIBE options byte of MQTT 5.0 section 3.8.3.1.
pub fn encode_subscription_options(o: SubscriptionOptions) -> u8 {
    o.qos.as_u8()
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

/// The properties of an application message that are forwarded to subscribers. Topic
/// alias and subscription identifiers are per delivery; the expiry interval is kept as
/// an absolute time in [`MessageRecord::expires_at`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageProperties {
    pub payload_format_indicator: Option<u8>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(String, String)>,
}

impl MessageProperties {
    /// Keeps the forwarded properties of a PUBLISH or will.
    pub fn from_properties(p: &Properties) -> Self {
        let s = |v: &Option<ByteStr>| v.as_ref().map(|b| b.as_str().to_owned());
        MessageProperties {
            payload_format_indicator: p.payload_format_indicator,
            content_type: s(&p.content_type),
            response_topic: s(&p.response_topic),
            correlation_data: p.correlation_data.clone(),
            user_properties: p
                .user_properties
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
                .collect(),
        }
    }

    /// The `midge-proto` properties to forward (no expiry, alias or subscription ids).
    pub fn to_properties(&self) -> Properties {
        let b = |v: &Option<String>| v.as_deref().map(ByteStr::from);
        Properties {
            payload_format_indicator: self.payload_format_indicator,
            content_type: b(&self.content_type),
            response_topic: b(&self.response_topic),
            correlation_data: self.correlation_data.clone(),
            user_properties: self
                .user_properties
                .iter()
                .map(|(k, v)| (ByteStr::from(k.as_str()), ByteStr::from(v.as_str())))
                .collect(),
            ..Properties::default()
        }
    }
}

/// An application message body: stored once however many queues refer to it, and used
/// as is for retained messages and wills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub topic: String,
    pub payload: Bytes,
    /// QoS as published (0, 1 or 2).
    pub qos: u8,
    /// RETAIN as published.
    pub retain: bool,
    pub properties: MessageProperties,
    /// When the Message Expiry Interval runs out; `None` = never.
    pub expires_at: Option<UnixMillis>,
}

impl MessageRecord {
    /// True when the message expired at `now`.
    pub fn is_expired(&self, now: UnixMillis) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// One message waiting in (or sent from) a session's queue: a reference to the shared
/// body plus what is particular to this delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub message_id: MessageId,
    /// QoS of this delivery (the lower of the published QoS and the granted one).
    pub qos: u8,
    /// RETAIN flag of this delivery (after retain-as-published).
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions (5.0).
    pub subscription_ids: Vec<u32>,
    /// Copied from the body so that expired entries can be dropped at start-up without
    /// reading message bodies.
    pub expires_at: Option<UnixMillis>,
    /// Payload length of the body, so that a queue's size in bytes (`max_queued_bytes`)
    /// is known at start-up without reading message bodies. `None` in entries written
    /// before it was kept (record format 1).
    pub payload_len: Option<u32>,
}

/// The record format of queue entries since they carry the payload length. Entries of
/// format 1 (without it) are still read.
pub(crate) const QUEUE_ENTRY_FORMAT: u8 = 2;

/// A queue entry as record format 1 wrote it.
#[derive(Deserialize)]
struct QueueEntryV1 {
    message_id: MessageId,
    qos: u8,
    retain: bool,
    subscription_ids: Vec<u32>,
    expires_at: Option<UnixMillis>,
}

impl QueueEntry {
    /// Serialises the entry behind [`QUEUE_ENTRY_FORMAT`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_as(QUEUE_ENTRY_FORMAT, self)
    }

    /// Reads an entry of format 2, or of format 1 (with `payload_len: None`).
    pub(crate) fn decode(bytes: &[u8]) -> Result<QueueEntry, String> {
        decode_upgrading(bytes, QUEUE_ENTRY_FORMAT, |e: QueueEntryV1| QueueEntry {
            message_id: e.message_id,
            qos: e.qos,
            retain: e.retain,
            subscription_ids: e.subscription_ids,
            expires_at: e.expires_at,
            payload_len: None,
        })
    }
}

/// Where an outgoing QoS 1/2 message is in its acknowledgement flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP. The body is no longer needed.
    AwaitPubComp,
}

/// The in-flight marker of a queue entry: the packet identifier it was sent with and its
/// stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InflightRecord {
    pub packet_id: u16,
    pub stage: Stage,
}

/// A will: of a connected client (`while_connected`), or waiting for its Will Delay
/// Interval (or its session's end) after its client went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WillRecord {
    pub message: MessageRecord,
    /// When it is due to be published (unused while the client is connected).
    pub publish_at: UnixMillis,
    /// Set while the will's client is connected. A broker that starts and finds it
    /// stopped without the connection ending (a crash, `kill -9`): the connection
    /// ended without DISCONNECT, so the will goes, its delay counted from the start.
    pub while_connected: Option<ConnectedWill>,
}

/// The times of a connected client's will, counted once it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedWill {
    /// Will Delay Interval, seconds.
    pub delay_secs: u32,
    /// The will's Message Expiry Interval, seconds (counted from its publication).
    pub message_expiry_secs: Option<u32>,
}

/// The record format of wills since they can belong to a connected client. Wills of
/// format 1 (all of a client that went) are still read.
pub(crate) const WILL_FORMAT: u8 = 2;

/// A will as record format 1 wrote it.
#[derive(Deserialize)]
struct WillRecordV1 {
    message: MessageRecord,
    publish_at: UnixMillis,
}

impl WillRecord {
    /// Serialises the will behind [`WILL_FORMAT`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        encode_as(WILL_FORMAT, self)
    }

    /// Reads a will of format 2, or of format 1 (with `while_connected: None`).
    pub(crate) fn decode(bytes: &[u8]) -> Result<WillRecord, String> {
        decode_upgrading(bytes, WILL_FORMAT, |w: WillRecordV1| WillRecord {
            message: w.message,
            publish_at: w.publish_at,
            while_connected: None,
        })
    }

    /// The will as due when a broker starts at `now` and finds it: a connected client's
    /// will becomes due its delay after `now`, its expiry counted from then.
    pub fn due_from(mut self, now: UnixMillis) -> WillRecord {
        if let Some(c) = self.while_connected.take() {
            self.publish_at = now.saturating_add(u64::from(c.delay_secs) * 1000);
            self.message.expires_at = c
                .message_expiry_secs
                .map(|e| self.publish_at.saturating_add(u64::from(e) * 1000));
        }
        self
    }
}

/// Serialises a record behind the format byte.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_as(RECORD_FORMAT, value)
}

/// Serialises a record behind the format byte `format`.
fn encode_as<T: Serialize>(format: u8, value: &T) -> Vec<u8> {
    let out = vec![format];
    // Serialising these plain structs into a Vec cannot fail: postcard fails only for
    // sequences of unknown length and full buffers, which these types and `Vec` rule out.
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(e) => unreachable!("postcard cannot fail on a Vec: {e}"),
    }
}

/// Reads a record written by [`encode`]; the error says what is wrong, for the report.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        None => Err("empty value".to_owned()),
        Some((&RECORD_FORMAT, rest)) => decode_body(rest),
        Some((other, _)) => Err(format!("unknown record format {other}")),
    }
}

/// Reads a record of `format`, or one of format 1 (its shape `Old`) made current by
/// `upgrade`; any other format byte is reported as [`decode`] does.
fn decode_upgrading<T: DeserializeOwned, Old: DeserializeOwned>(
    bytes: &[u8],
    format: u8,
    upgrade: impl FnOnce(Old) -> T,
) -> Result<T, String> {
    match bytes.split_first() {
        Some((f, rest)) if *f == format => decode_body(rest),
        Some((&RECORD_FORMAT, rest)) => decode_body::<Old>(rest).map(upgrade),
        _ => decode(bytes),
    }
}

/// Reads the postcard body after the format byte; all of it must be used.
fn decode_body<T: DeserializeOwned>(rest: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(rest) {
        Ok((v, [])) => Ok(v),
        Ok((_, tail)) => Err(format!("{} trailing bytes", tail.len())),
        Err(e) => Err(format!("cannot decode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Debug;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(v: T) {
        let bytes = encode(&v);
        assert_eq!(bytes[0], RECORD_FORMAT);
        let back: T = decode(&bytes).expect("decodes");
        assert_eq!(back, v);
    }

    fn message() -> MessageRecord {
        MessageRecord {
            topic: "a/b/c".into(),
            payload: Bytes::from_static(b"hello"),
            qos: 2,
            retain: true,
            properties: MessageProperties {
                payload_format_indicator: Some(1),
                content_type: Some("text/plain".into()),
                response_topic: Some("reply/here".into()),
                correlation_data: Some(Bytes::from_static(&[0, 1, 2])),
                user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
            },
            expires_at: Some(1_700_000_000_123),
        }
    }

    #[test]
    fn session_records_round_trip_and_format_1_is_still_read() {
        for s in [
            SessionRecord {
                expiry_interval: Some(3600),
                disconnected_at: Some(1_700_000_000_000),
                protocol_level: 5,
                first_seq: 1 << 60,
            },
            SessionRecord {
                expiry_interval: None,
                disconnected_at: None,
                protocol_level: 4,
                first_seq: 0,
            },
        ] {
            let bytes = s.encode();
            assert_eq!(bytes[0], SESSION_FORMAT);
            assert_eq!(SessionRecord::decode(&bytes), Ok(s));
        }
        #[derive(Serialize)]
        struct V1 {
            expiry_interval: Option<u32>,
            disconnected_at: Option<UnixMillis>,
            protocol_level: u8,
        }
        let old = encode(&V1 {
            expiry_interval: Some(60),
            disconnected_at: None,
            protocol_level: 4,
        });
        assert_eq!(
            SessionRecord::decode(&old),
            Ok(SessionRecord {
                expiry_interval: Some(60),
                disconnected_at: None,
                protocol_level: 4,
                first_seq: 0,
            })
        );
    }

    #[test]
    fn subscription_record_round_trips() {
        round_trip(SubscriptionRecord {
            options: 0b0010_1110,
            id: Some(268_435_455),
        });
        round_trip(SubscriptionRecord {
            options: 1,
            id: None,
        });
    }

    #[test]
    fn message_record_round_trips() {
        round_trip(message());
        round_trip(MessageRecord {
            topic: String::new(),
            payload: Bytes::new(),
            qos: 0,
            retain: false,
            properties: MessageProperties::default(),
            expires_at: None,
        });
    }

    #[test]
    fn queue_entry_round_trips() {
        for payload_len in [None, Some(0), Some(u32::MAX)] {
            let e = QueueEntry {
                message_id: u64::MAX,
                qos: 1,
                retain: false,
                subscription_ids: vec![1, 2, 268_435_455],
                expires_at: None,
                payload_len,
            };
            let bytes = e.encode();
            assert_eq!(bytes[0], QUEUE_ENTRY_FORMAT);
            assert_eq!(QueueEntry::decode(&bytes), Ok(e));
        }
    }

    #[test]
    fn queue_entry_of_format_1_reads_without_payload_length() {
        #[derive(Serialize)]
        struct V1 {
            message_id: MessageId,
            qos: u8,
            retain: bool,
            subscription_ids: Vec<u32>,
            expires_at: Option<UnixMillis>,
        }
        let bytes = encode(&V1 {
            message_id: 7,
            qos: 2,
            retain: true,
            subscription_ids: vec![3],
            expires_at: Some(9),
        });
        assert_eq!(bytes[0], RECORD_FORMAT);
        assert_eq!(
            QueueEntry::decode(&bytes),
            Ok(QueueEntry {
                message_id: 7,
                qos: 2,
                retain: true,
                subscription_ids: vec![3],
                expires_at: Some(9),
                payload_len: None,
            })
        );
        assert!(QueueEntry::decode(&[9, 0])
            .unwrap_err()
            .contains("format 9"));
    }

    #[test]
    fn inflight_record_round_trips() {
        for stage in [Stage::AwaitPubAck, Stage::AwaitPubRec, Stage::AwaitPubComp] {
            round_trip(InflightRecord {
                packet_id: 65535,
                stage,
            });
        }
    }

    #[test]
    fn will_records_round_trip_and_format_1_is_still_read() {
        for while_connected in [
            None,
            Some(ConnectedWill {
                delay_secs: 30,
                message_expiry_secs: Some(60),
            }),
        ] {
            let will = WillRecord {
                message: message(),
                publish_at: 42,
                while_connected,
            };
            let bytes = will.encode();
            assert_eq!(bytes[0], WILL_FORMAT);
            assert_eq!(WillRecord::decode(&bytes), Ok(will));
        }
        #[derive(Serialize)]
        struct V1 {
            message: MessageRecord,
            publish_at: UnixMillis,
        }
        let old = encode(&V1 {
            message: message(),
            publish_at: 42,
        });
        assert_eq!(
            WillRecord::decode(&old),
            Ok(WillRecord {
                message: message(),
                publish_at: 42,
                while_connected: None,
            })
        );
        assert!(WillRecord::decode(&[9, 1]).is_err());
    }

    #[test]
    fn a_connected_clients_will_is_due_its_delay_after_the_start() {
        let mut msg = message();
        msg.expires_at = None;
        let will = WillRecord {
            message: msg,
            publish_at: 0,
            while_connected: Some(ConnectedWill {
                delay_secs: 30,
                message_expiry_secs: Some(60),
            }),
        }
        .due_from(1_000_000);
        assert_eq!(will.publish_at, 1_030_000);
        assert_eq!(will.message.expires_at, Some(1_090_000));
        assert_eq!(will.while_connected, None);
        // A will of a client that went is due when it was.
        let gone = will.clone().due_from(5_000_000);
        assert_eq!(gone, will);
    }

    #[test]
    fn decode_reports_damage_instead_of_guessing() {
        assert!(decode::<SessionRecord>(&[]).is_err());
        assert!(decode::<SessionRecord>(&[9, 0, 0])
            .unwrap_err()
            .contains("format 9"));
        let mut bytes = encode(&message());
        bytes.truncate(bytes.len() / 2);
        assert!(decode::<MessageRecord>(&bytes).is_err());
        let mut bytes = encode(&InflightRecord {
            packet_id: 1,
            stage: Stage::AwaitPubAck,
        });
        bytes.push(0);
        assert!(decode::<InflightRecord>(&bytes)
            .unwrap_err()
            .contains("trailing"));
    }

    #[test]
    fn subscription_options_byte_round_trips() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for rh in [
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendIfNew,
                RetainHandling::DoNotSend,
            ] {
                for (nl, rap) in [(false, false), (true, false), (false, true), (true, true)] {
                    let o = SubscriptionOptions {
                        qos,
                        no_local: nl,
                        retain_as_published: rap,
                        retain_handling: rh,
                    };
                    assert_eq!(SubscriptionRecord::new(o, None).subscription_options(), o);
                }
            }
        }
    }

    #[test]
    fn message_properties_keep_what_is_forwarded() {
        let p = message().properties;
        assert_eq!(MessageProperties::from_properties(&p.to_properties()), p);
    }

    #[test]
    fn session_expiry_rules() {
        let s = |e, d| SessionRecord {
            expiry_interval: e,
            disconnected_at: d,
            protocol_level: 5,
            first_seq: 0,
        };
        assert!(!s(None, Some(0)).is_expired(u64::MAX));
        assert!(s(Some(0), None).is_expired(0));
        assert!(!s(Some(10), None).is_expired(u64::MAX));
        assert!(!s(Some(10), Some(1000)).is_expired(10_999));
        assert!(s(Some(10), Some(1000)).is_expired(11_000));
    }
}
