//! The changes the broker asks the store to make: one [`Op`] per state change.

use crate::record::{
    InflightRecord, MessageId, MessageRecord, SessionRecord, SubscriptionRecord, WillRecord,
};
use midge_proto::ByteStr;
use std::sync::Arc;

/// One change to the durable state. The ops of one `commit` call are applied in order and
/// atomically (all or none of them survive a crash).
#[derive(Debug, Clone)]
pub enum Op {
    /// Creates or replaces a session (CONNECT with a persistent session, DISCONNECT or a
    /// lost connection setting `disconnected_at`, a changed expiry interval).
    PutSession {
        client: ByteStr,
        session: SessionRecord,
    },
    /// Removes a session with its subscriptions, queue, in-flight messages and inbound
    /// QoS 2 packet IDs (clean start, expiry). Its pending will is left alone: remove it
    /// with [`Op::DeleteWill`] once published or cancelled.
    DeleteSession { client: ByteStr },
    /// Creates or replaces a subscription; `filter` exactly as subscribed.
    PutSubscription {
        client: ByteStr,
        filter: ByteStr,
        subscription: SubscriptionRecord,
    },
    /// Removes a subscription (UNSUBSCRIBE).
    DeleteSubscription { client: ByteStr, filter: ByteStr },
    /// Stores a message body once and a queue entry for each delivery. A body with no
    /// deliveries is not written. `message_id` comes from `SessionStore::next_message_id`
    /// and is used for one `Enqueue` only.
    Enqueue {
        message_id: MessageId,
        message: Arc<MessageRecord>,
        deliveries: Vec<Delivery>,
    },
    /// Removes a queue entry and its in-flight marker: the delivery is complete (PUBACK,
    /// PUBCOMP, QoS 0 sent) or dropped (expired, queue full). The body goes with its last
    /// reference. Removing an entry that is not there is not an error.
    Dequeue { client: ByteStr, seq: u64 },
    /// Marks a queue entry as in flight with its packet ID and stage, or moves it to the
    /// next stage. At [`Stage::AwaitPubComp`](crate::Stage::AwaitPubComp) the body is
    /// released (only the packet ID is needed to resend PUBREL); [`Op::Dequeue`] on
    /// PUBCOMP removes the marker.
    SetInflight {
        client: ByteStr,
        seq: u64,
        inflight: InflightRecord,
    },
    /// A QoS 2 PUBLISH was received and routed; PUBREC follows once this is durable.
    AddInboundQos2 { client: ByteStr, packet_id: u16 },
    /// PUBREL received for that packet ID.
    RemoveInboundQos2 { client: ByteStr, packet_id: u16 },
    /// Sets the retained message of a topic.
    PutRetained {
        topic: ByteStr,
        message: Arc<MessageRecord>,
    },
    /// Clears the retained message of a topic.
    DeleteRetained { topic: ByteStr },
    /// A will now waits for its delay (connection lost with a Will Delay Interval).
    PutWill { client: ByteStr, will: WillRecord },
    /// The will was published or cancelled (reconnect, normal DISCONNECT).
    DeleteWill { client: ByteStr },
}

/// One subscriber's copy of an enqueued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub client: ByteStr,
    /// The session's next queue sequence number; strictly increasing per client and never
    /// reused while the entry exists.
    pub seq: u64,
    /// QoS of this delivery.
    pub qos: u8,
    /// RETAIN flag of this delivery.
    pub retain: bool,
    /// Subscription identifiers of the matching subscriptions.
    pub subscription_ids: Vec<u32>,
}
