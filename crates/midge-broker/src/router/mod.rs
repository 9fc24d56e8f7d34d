//! The router: which sessions a message goes to.
//!
//! Subscriptions sit in a topic trie (`trie.rs`) keyed by session and shared group.
//! Matching collects targets into a scratch list owned by the publishing connection (no
//! allocation per message in the steady state), merges overlapping subscriptions of one
//! session into one delivery, picks one member per shared group, and hands each target
//! the shared `Arc<Message>`.
//!
//! A target is anything that implements [`DeliveryTarget`]: a local session today, a
//! remote node's proxy when Midge runs as a cluster.

pub mod trie;

use crate::message::{Message, SessionId};
use midge_proto::{ByteStr, QoS, SubscriptionOptions};
use parking_lot::RwLock;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use trie::SubscriptionTrie;

/// Subscription identifiers carried by one delivery (usually none or one).
pub type SubIds = SmallVec<[u32; 2]>;

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Queued past the target's limit under publisher back-pressure: the publisher should
    /// hold its acknowledgement until [`DeliveryTarget::has_room`], at most the target's
    /// [`DeliveryTarget::hold_allowance`].
    Congested,
    /// Not queued (limit reached offline, QoS 0 to an offline session, not readable);
    /// counted in `$SYS` when over a limit.
    Dropped,
    /// Not queued: the connected target's queue reached its limit, the first drop since it
    /// last drained (later ones are `Dropped`; all are counted). The publisher yields its
    /// turn before reading more, so that the target's connection gets to drain its queue
    /// (see `RouteScratch::routed_to_full`).
    Full,
}

/// Whether a target can take a message now (shared groups pick a ready member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// No client connected.
    Offline,
    /// Connected, with its queue at its limit: a message for it would be dropped.
    Full,
    /// Connected, with room.
    Ready,
}

/// Where the router puts a message: a session's queue, or (later) a remote node.
pub trait DeliveryTarget: Send + Sync {
    /// Queues `msg` for delivery at `qos` (already the lower of published and granted),
    /// with the RETAIN flag `retain` and the matching subscription identifiers.
    /// A target that stores the message durably pushes its store delivery onto `durable`;
    /// the publisher commits them all in one write before acknowledging.
    fn deliver(
        &self,
        msg: &Arc<Message>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
        durable: &mut Vec<midge_store::Delivery>,
    ) -> Delivery;
    /// Whether a client is connected to it and has room now (shared groups prefer ready
    /// members, then connected ones).
    fn availability(&self) -> Availability;
    /// False while the target is congested (see [`Delivery::Congested`]).
    fn has_room(&self) -> bool;
    /// Woken when a congested target has room again.
    fn room(&self) -> &tokio::sync::Notify;
    /// How much longer a congested target may hold a publisher now (publisher
    /// back-pressure); zero when it may not.
    fn hold_allowance(&self) -> std::time::Duration;
    /// Records that a publisher was held for the target from `from` to `to` (holds of
    /// several publishers at once count once).
    fn charge_hold(&self, from: tokio::time::Instant, to: tokio::time::Instant);
}

/// The key of one subscription in the trie: a session, and the shared subscription if
/// any, as the whole `$share/{group}/{filter}` string (so one value names the group and
/// the filter it shares).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SubKey {
    pub session: SessionId,
    pub shared: Option<ByteStr>,
}

/// What the trie holds for one subscription.
#[derive(Clone)]
pub struct Subscriber {
    pub target: Arc<dyn DeliveryTarget>,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

/// One pending delivery while a message is being routed.
struct Match {
    session: SessionId,
    target: Arc<dyn DeliveryTarget>,
    qos: QoS,
    retain_as_published: bool,
    sub_ids: SubIds,
}

/// One shared group's candidates while a message is being routed.
struct GroupMatch {
    shared: ByteStr,
    members: Vec<(SessionId, Subscriber)>,
}

/// Reusable buffers for routing; one per publishing connection.
#[derive(Default)]
pub struct RouteScratch {
    matches: Vec<Match>,
    groups: Vec<GroupMatch>,
    /// Targets that reported `Delivery::Congested` for the last message routed.
    pub congested: Vec<Arc<dyn DeliveryTarget>>,
    /// Store deliveries of the last message routed (persistent sessions, QoS 1/2).
    pub durable: Vec<midge_store::Delivery>,
    /// A message routed since the connection last looked found a connected target full
    /// (`Delivery::Full`); the connection clears it when it yields.
    pub routed_to_full: bool,
}

/// What a [`LazyScratch`] reads as before its first write.
static EMPTY_SCRATCH: RouteScratch = RouteScratch {
    matches: Vec::new(),
    groups: Vec::new(),
    congested: Vec::new(),
    durable: Vec::new(),
    routed_to_full: false,
};

/// A connection's [`RouteScratch`], allocated the first time it is written to: a
/// connection that never publishes (most idle ones) holds one pointer, not four vectors.
/// Reading it before then reads an empty scratch.
#[derive(Default)]
pub struct LazyScratch(Option<Box<RouteScratch>>);

impl std::ops::Deref for LazyScratch {
    type Target = RouteScratch;

    fn deref(&self) -> &RouteScratch {
        self.0.as_deref().unwrap_or(&EMPTY_SCRATCH)
    }
}

impl std::ops::DerefMut for LazyScratch {
    fn deref_mut(&mut self) -> &mut RouteScratch {
        self.0.get_or_insert_with(Box::default)
    }
}

/// The subscription index and routing.
#[derive(Default)]
pub struct Router {
    trie: RwLock<SubscriptionTrie<SubKey, Subscriber>>,
    shared_cursor: AtomicUsize,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a subscription. `filter` is the topic filter without any
    /// `$share/{group}/` prefix. Returns true when it replaced an existing one.
    pub fn subscribe(&self, filter: &str, key: SubKey, sub: Subscriber) -> bool {
        self.trie.write().insert(filter, key, sub).is_some()
    }

    /// Removes a subscription; returns true when it existed.
    pub fn unsubscribe(&self, filter: &str, key: &SubKey) -> bool {
        self.trie.write().remove(filter, key).is_some()
    }

    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.trie.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Delivers `msg` to every matching subscription; returns the number of deliveries.
    ///
    /// Overlapping subscriptions of one session give one copy at the highest granted QoS
    /// with every matching subscription identifier. A shared group gives one copy to one
    /// member, preferring members that are connected.
    pub fn route(&self, msg: &Arc<Message>, scratch: &mut RouteScratch) -> usize {
        scratch.matches.clear();
        {
            let trie = self.trie.read();
            trie.for_each_match(&msg.topic, |_filter, key, sub| {
                match &key.shared {
                    None => {
                        // No-local: not to the session that published it [MQTT-3.8.3-3].
                        if sub.options.no_local && key.session == msg.origin {
                            return;
                        }
                        scratch.matches.push(Match {
                            session: key.session,
                            target: sub.target.clone(),
                            qos: sub.options.qos.min(msg.qos),
                            retain_as_published: sub.options.retain_as_published,
                            sub_ids: sub.id.into_iter().collect(),
                        });
                    }
                    Some(shared) => {
                        let found = scratch.groups.iter_mut().find(|g| g.shared == *shared);
                        let entry = (key.session, sub.clone());
                        match found {
                            Some(g) => g.members.push(entry),
                            None => scratch.groups.push(GroupMatch {
                                shared: shared.clone(),
                                members: vec![entry],
                            }),
                        }
                    }
                }
            });
        }
        // Only non-shared subscriptions of one session merge [MQTT-3.3.4-2]; each shared
        // group is a delivery of its own, even to a session that is also a plain
        // subscriber (5.0 section 4.8.2).
        merge_overlapping(&mut scratch.matches);
        for g in scratch.groups.drain(..) {
            if let Some((session, sub)) = self.pick_member(g.members) {
                scratch.matches.push(Match {
                    session,
                    target: sub.target,
                    qos: sub.options.qos.min(msg.qos),
                    retain_as_published: sub.options.retain_as_published,
                    sub_ids: sub.id.into_iter().collect(),
                });
            }
        }
        scratch.congested.clear();
        scratch.durable.clear();
        let n = scratch.matches.len();
        for m in scratch.matches.drain(..) {
            // Without retain-as-published, forwarded messages have RETAIN 0 [MQTT-3.3.1-12].
            let retain = m.retain_as_published && msg.retain;
            let status = m
                .target
                .deliver(msg, m.qos, retain, m.sub_ids, &mut scratch.durable);
            match status {
                Delivery::Congested => scratch.congested.push(m.target),
                Delivery::Full => scratch.routed_to_full = true,
                Delivery::Queued | Delivery::Dropped => {}
            }
        }
        n
    }

    /// Round robin over the members of a shared group that are connected and have room;
    /// when none has room, over the connected ones; when none is connected, over all. A
    /// member that does not keep up thus gets no share while another could take it.
    fn pick_member(
        &self,
        mut members: Vec<(SessionId, Subscriber)>,
    ) -> Option<(SessionId, Subscriber)> {
        if members.is_empty() {
            return None;
        }
        // Trie iteration order is not stable across inserts; sort so round robin is fair.
        members.sort_unstable_by_key(|(s, _)| *s);
        let states: SmallVec<[Availability; 8]> = members
            .iter()
            .map(|(_, s)| s.target.availability())
            .collect();
        let of = |want: &dyn Fn(Availability) -> bool| -> SmallVec<[usize; 8]> {
            (0..states.len())
                .filter(|&i| states.get(i).is_some_and(|&a| want(a)))
                .collect()
        };
        let mut candidates = of(&|a| a == Availability::Ready);
        if candidates.is_empty() {
            candidates = of(&|a| a != Availability::Offline);
        }
        let turn = self.shared_cursor.fetch_add(1, Ordering::Relaxed);
        let index = if candidates.is_empty() {
            turn % members.len()
        } else {
            candidates
                .get(turn % candidates.len())
                .copied()
                .unwrap_or(0)
        };
        if index < members.len() {
            Some(members.swap_remove(index))
        } else {
            None
        }
    }
}

/// Merges deliveries to the same session into one: the highest QoS, every subscription
/// identifier, retain-as-published if any subscription asked for it.
fn merge_overlapping(matches: &mut Vec<Match>) {
    if matches.len() < 2 {
        return;
    }
    matches.sort_unstable_by_key(|m| m.session);
    let mut write = 0;
    for read in 1..matches.len() {
        let (head, tail) = matches.split_at_mut(read);
        let (Some(kept), Some(next)) = (head.get_mut(write), tail.first_mut()) else {
            continue;
        };
        if kept.session == next.session {
            kept.qos = kept.qos.max(next.qos);
            kept.retain_as_published |= next.retain_as_published;
            kept.sub_ids.extend(next.sub_ids.drain(..));
        } else {
            write += 1;
            matches.swap(write, read);
        }
    }
    matches.truncate(write + 1);
}
