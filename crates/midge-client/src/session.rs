//! The client side of the session: packet identifiers, operations awaiting their
//! acknowledgement, incoming QoS 2 messages awaiting PUBREL, and the subscriptions to
//! restore when the server lost the session. Outlives any one network connection.

use crate::message::{Message, PublishAck, SubscribeAck, Subscription, UnsubscribeAck};
use crate::Error;
use midge_proto::{Properties, Subscribe, Unsubscribe};
use std::collections::{HashMap, HashSet};
use tokio::sync::oneshot;

/// Where the answer to one operation goes (`None` for the client's own operations, such
/// as re-subscribing after a lost session).
pub(crate) type Responder<T> = Option<oneshot::Sender<Result<T, Error>>>;

pub(crate) fn respond<T>(responder: Responder<T>, result: Result<T, Error>) {
    if let Some(tx) = responder {
        // The caller may have stopped waiting; that is its choice.
        let _ = tx.send(result);
    }
}

/// Where an outgoing QoS 1/2 publish stands: the acknowledgement it awaits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the packet awaited
pub(crate) enum Stage {
    /// QoS 1, PUBLISH sent.
    PubAck,
    /// QoS 2, PUBLISH sent.
    PubRec,
    /// QoS 2, PUBREC received and PUBREL sent.
    PubComp,
}

/// An operation holding a packet identifier until the server acknowledges it.
pub(crate) enum Outgoing {
    Publish {
        message: Message,
        stage: Stage,
        respond: Responder<PublishAck>,
    },
    Subscribe {
        packet: Subscribe,
        respond: Responder<SubscribeAck>,
    },
    Unsubscribe {
        packet: Unsubscribe,
        respond: Responder<UnsubscribeAck>,
    },
}

impl Outgoing {
    pub(crate) fn fail(self, error: Error) {
        match self {
            Outgoing::Publish { respond, .. } => respond_err(respond, error),
            Outgoing::Subscribe { respond, .. } => respond_err(respond, error),
            Outgoing::Unsubscribe { respond, .. } => respond_err(respond, error),
        }
    }
}

fn respond_err<T>(responder: Responder<T>, error: Error) {
    respond(responder, Err(error));
}

#[derive(Default)]
pub(crate) struct Session {
    next_id: u16,
    next_seq: u64,
    /// By packet identifier, with the order the operations were first sent in.
    pub outgoing: HashMap<u16, (u64, Outgoing)>,
    /// QoS 1/2 publishes in `outgoing`: what counts against the server's Receive Maximum.
    pub publishes_in_flight: usize,
    /// Packet identifiers of QoS 2 messages delivered and PUBRECed, awaiting PUBREL.
    pub inbound_qos2: HashSet<u16>,
    /// Granted subscriptions, with the properties of the SUBSCRIBE that made them.
    pub subscriptions: Vec<(Subscription, Properties)>,
}

impl Session {
    /// A free packet identifier, or `None` when all 65,535 are in use.
    pub(crate) fn free_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.outgoing.contains_key(&self.next_id) {
                return Some(self.next_id);
            }
        }
        None
    }

    pub(crate) fn has_free_id(&self) -> bool {
        self.outgoing.len() < usize::from(u16::MAX)
    }

    pub(crate) fn insert(&mut self, id: u16, op: Outgoing) {
        if matches!(op, Outgoing::Publish { .. }) {
            self.publishes_in_flight += 1;
        }
        self.next_seq += 1;
        self.outgoing.insert(id, (self.next_seq, op));
    }

    pub(crate) fn remove(&mut self, id: u16) -> Option<Outgoing> {
        let (_, op) = self.outgoing.remove(&id)?;
        if matches!(op, Outgoing::Publish { .. }) {
            self.publishes_in_flight -= 1;
        }
        Some(op)
    }

    /// Packet identifiers of the outstanding operations, oldest first (resend order).
    pub(crate) fn ids_in_send_order(&self) -> Vec<u16> {
        let mut ids: Vec<(u64, u16)> = self
            .outgoing
            .iter()
            .map(|(&id, (seq, _))| (*seq, id))
            .collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Records the subscriptions a SUBACK granted.
    pub(crate) fn record_subscriptions(&mut self, packet: &Subscribe, ack: &SubscribeAck) {
        for ((filter, options), code) in packet.filters.iter().zip(&ack.reason_codes) {
            if code.is_error() {
                continue;
            }
            self.subscriptions.retain(|(s, _)| s.filter != *filter);
            let sub = Subscription {
                filter: filter.clone(),
                options: *options,
            };
            self.subscriptions.push((sub, packet.properties.clone()));
        }
    }

    pub(crate) fn forget_subscriptions(&mut self, packet: &Unsubscribe) {
        self.subscriptions
            .retain(|(s, _)| !packet.filters.contains(&s.filter));
    }

    /// Fails every outstanding operation (the client is closing).
    pub(crate) fn fail_all(&mut self, error: &Error) {
        for (_, (_, op)) in self.outgoing.drain() {
            op.fail(error.clone());
        }
        self.publishes_in_flight = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish() -> Outgoing {
        Outgoing::Publish {
            message: Message::new("t", "x"),
            stage: Stage::PubAck,
            respond: None,
        }
    }

    #[test]
    fn ids_start_at_one_and_skip_those_in_use() {
        let mut s = Session::default();
        assert_eq!(s.free_id(), Some(1));
        s.insert(1, publish());
        s.insert(2, publish());
        s.next_id = 0;
        assert_eq!(s.free_id(), Some(3));
        assert_eq!(s.publishes_in_flight, 2);
    }

    #[test]
    fn ids_wrap_after_65535_and_are_reused_once_free() {
        let mut s = Session {
            next_id: u16::MAX - 1,
            ..Session::default()
        };
        assert_eq!(s.free_id(), Some(u16::MAX));
        s.insert(u16::MAX, publish());
        assert_eq!(s.free_id(), Some(1));
        s.remove(u16::MAX);
        s.next_id = u16::MAX - 1;
        assert_eq!(s.free_id(), Some(u16::MAX));
        assert_eq!(s.publishes_in_flight, 0);
    }

    #[test]
    fn no_id_when_all_are_in_use() {
        let mut s = Session::default();
        for id in 1..=u16::MAX {
            s.insert(id, publish());
        }
        assert!(!s.has_free_id());
        assert_eq!(s.free_id(), None);
    }

    #[test]
    fn resend_order_is_send_order_not_id_order() {
        let mut s = Session::default();
        s.insert(9, publish());
        s.insert(3, publish());
        s.insert(5, publish());
        assert_eq!(s.ids_in_send_order(), vec![9, 3, 5]);
    }
}
