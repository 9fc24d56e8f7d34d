//! `Message`: one application message as the broker holds it, shared by every
//! subscriber it goes to.

use midge_proto::{ByteStr, Properties, Publish, QoS};
use std::sync::Arc;
use tokio::time::Instant;

/// Identifies a session inside this broker (cheaper to compare than a client ID).
pub type SessionId = u64;

/// An application message after it was accepted from a publisher. It is wrapped in an
/// `Arc` and shared by every queue it lands in; the payload is the publisher's read
/// buffer, never copied.
#[derive(Debug)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: bytes::Bytes,
    /// The QoS it was published with (each subscriber gets the lower of this and its grant).
    pub qos: QoS,
    /// The RETAIN flag as published.
    pub retain: bool,
    /// Properties forwarded to subscribers (5.0): payload format, content type, response
    /// topic, correlation data, user properties. Topic alias, subscription identifiers and
    /// message expiry are per delivery and never kept here.
    pub properties: Properties,
    /// When the message expires (from its Message Expiry Interval).
    pub expires_at: Option<Instant>,
    /// The session that published it (for no-local); 0 for messages the broker makes.
    pub origin: SessionId,
}

impl Message {
    /// Builds the shared message from an incoming PUBLISH whose topic has been resolved
    /// (topic alias already applied).
    pub fn from_publish(
        publish: Publish,
        topic: ByteStr,
        origin: SessionId,
        now: Instant,
    ) -> Arc<Message> {
        let mut properties = publish.properties;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|secs| now + std::time::Duration::from_secs(u64::from(secs)));
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Arc::new(Message {
            topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
            origin,
        })
    }

    /// True when the message's expiry interval has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Seconds left before expiry, rounded up, for the Message Expiry Interval sent to a
    /// subscriber [MQTT-3.3.2-6].
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}
