//! `Message`: one application message as the broker holds it, shared by every
//! subscriber it goes to.

use crate::session::SessionCell;
use midge_proto::{ByteStr, Properties, Publish, QoS};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
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
    /// message expiry are per delivery and never kept here. `None` when there are none (all
    /// 3.1.1 messages and most 5.0 ones): boxed, so that a message (a retained one, one
    /// queued for many sessions) does not carry a full `Properties` inline.
    pub properties: Option<Box<Properties>>,
    /// When the message expires (from its Message Expiry Interval).
    pub expires_at: Option<Instant>,
    /// The session that published it (for no-local); 0 for messages the broker makes.
    pub origin: SessionId,
    /// Holds the message back from every subscriber until the publisher's store commit
    /// is durable (`None`: never held). See [`Gate`].
    pub gate: Option<Arc<Gate>>,
}

/// Keeps a QoS 2 message from its subscribers until the commit that records its inbound
/// packet identifier is durable.
///
/// A QoS 2 PUBLISH is routed at once, but a resend of it is recognised only from that
/// record. Were a subscriber to get the message before the record is durable, a crash
/// in between would make the publisher's resend a second, new message: delivered twice
/// [MQTT-4.3.3-*]. So a connection stops draining its session's queue at a message whose
/// gate is shut (order is kept: what was queued after it waits too) and registers its
/// session; the store's writer opens the gate once the commit is answered, which wakes
/// those sessions. See "QoS 2 exactly once" in `docs/design/persistence.md`.
#[derive(Debug, Default)]
pub struct Gate {
    open: AtomicBool,
    /// Sessions stopped at this gate; woken when it opens.
    waiting: Mutex<Vec<Weak<SessionCell>>>,
}

impl Gate {
    /// Whether the message may go to `cell`'s client now. If not, `cell` is woken (its
    /// `notify`) when the gate opens.
    pub fn pass(&self, cell: &Arc<SessionCell>) -> bool {
        if self.open.load(Ordering::Acquire) {
            return true;
        }
        let mut waiting = self.waiting.lock();
        // Checked again under the lock that `open` takes: no wake-up is lost.
        if self.open.load(Ordering::Acquire) {
            return true;
        }
        let me = Arc::downgrade(cell);
        if !waiting.iter().any(|w| w.ptr_eq(&me)) {
            waiting.push(me);
        }
        false
    }

    /// Lets the message through and wakes every session stopped at it.
    pub fn open(&self) {
        let waiting = {
            let mut waiting = self.waiting.lock();
            self.open.store(true, Ordering::Release);
            std::mem::take(&mut *waiting)
        };
        for cell in waiting.iter().filter_map(Weak::upgrade) {
            cell.wake(&mut cell.state.lock());
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

/// Opens its gate when dropped: run by the store once the commit is answered, dropped
/// unrun if the store is gone. Either way the message is not held for ever.
#[derive(Debug)]
pub struct OpenOnDrop(pub Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
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
        Self::build(publish, topic, origin, now, None)
    }

    /// As [`Message::from_publish`], held back from subscribers by a shut [`Gate`] until
    /// the store commit that [`Broker::publish_durable`](crate::Broker::publish_durable)
    /// makes for it is answered.
    pub fn from_publish_gated(
        publish: Publish,
        topic: ByteStr,
        origin: SessionId,
        now: Instant,
    ) -> Arc<Message> {
        Self::build(publish, topic, origin, now, Some(Arc::default()))
    }

    fn build(
        publish: Publish,
        topic: ByteStr,
        origin: SessionId,
        now: Instant,
        gate: Option<Arc<Gate>>,
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
            properties: (!properties.is_empty()).then(|| Box::new(properties)),
            expires_at,
            origin,
            gate,
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
