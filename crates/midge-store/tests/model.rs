//! Random sequences of ops, committed in random groups, checked against a plain model
//! after a restart: sessions, queues (order and bodies), in-flight stages, inbound QoS 2
//! IDs, and the number of stored bodies (none leaked, none freed early).

mod common;

use common::*;
use midge_store::engine::Engine;
use midge_store::{InflightRecord, Op, SessionStore, Stage, Store, Table};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const CLIENTS: [&str; 3] = ["a", "b", "c"];

/// A queue entry in the model: message id, payload, stage if in flight.
type Entry = (u64, Vec<u8>, Option<Stage>);

/// What the store should hold.
#[derive(Default)]
struct Model {
    sessions: BTreeSet<String>,
    /// (client, seq) -> (message id, payload, stage if in flight)
    queue: BTreeMap<(String, u64), Entry>,
    inbound: BTreeSet<(String, u16)>,
    next_seq: BTreeMap<String, u64>,
}

/// A step the generator picks; turned into an `Op` against the current model.
#[derive(Debug, Clone)]
enum Step {
    PutSession(usize),
    DeleteSession(usize),
    /// Payload byte, and which clients get it (bit mask).
    Enqueue(u8, u8),
    /// Acts on the n-th queue entry (modulo their number).
    Dequeue(usize),
    Send(usize, bool),
    PubRec(usize),
    Inbound(usize, u16, bool),
    /// Ends the current commit.
    Commit,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0..3usize).prop_map(Step::PutSession),
        1 => (0..3usize).prop_map(Step::DeleteSession),
        3 => (any::<u8>(), 1..8u8).prop_map(|(p, m)| Step::Enqueue(p, m)),
        2 => any::<usize>().prop_map(Step::Dequeue),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, q2)| Step::Send(i, q2)),
        1 => any::<usize>().prop_map(Step::PubRec),
        1 => (0..3usize, 1..4u16, any::<bool>()).prop_map(|(c, p, add)| Step::Inbound(c, p, add)),
        2 => Just(Step::Commit),
    ]
}

impl Model {
    fn nth_entry(&self, n: usize, want: impl Fn(&Option<Stage>) -> bool) -> Option<(String, u64)> {
        let candidates: Vec<_> = self.queue.iter().filter(|(_, v)| want(&v.2)).collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[n % candidates.len()].0.clone())
    }

    /// Applies `step` to the model and returns the op that does the same to the store.
    fn apply(&mut self, step: &Step, store: &dyn SessionStore) -> Option<Op> {
        match *step {
            Step::PutSession(c) => {
                self.sessions.insert(CLIENTS[c].into());
                Some(put_session(CLIENTS[c]))
            }
            Step::DeleteSession(c) => {
                let c = CLIENTS[c];
                self.sessions.remove(c);
                self.queue.retain(|(client, _), _| client != c);
                self.inbound.retain(|(client, _)| client != c);
                Some(Op::DeleteSession { client: c.into() })
            }
            Step::Enqueue(payload, mask) => {
                let to: Vec<&str> = CLIENTS
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| mask & (1 << i) != 0 && self.sessions.contains(**c))
                    .map(|(_, c)| *c)
                    .collect();
                let id = store.next_message_id();
                let mut deliveries = Vec::new();
                for c in to {
                    let seq = self.next_seq.entry(c.into()).or_insert(0);
                    self.queue
                        .insert((c.into(), *seq), (id, vec![payload], None));
                    deliveries.push(delivery(c, *seq));
                    *seq += 1;
                }
                Some(Op::Enqueue {
                    message_id: id,
                    message: Arc::new(message("t", &[payload], None)),
                    deliveries,
                })
            }
            Step::Dequeue(n) => {
                let (client, seq) = self.nth_entry(n, |_| true)?;
                self.queue.remove(&(client.clone(), seq));
                Some(Op::Dequeue {
                    client: client.as_str().into(),
                    seq,
                })
            }
            Step::Send(n, qos2) => {
                let (client, seq) = self.nth_entry(n, Option::is_none)?;
                let stage = if qos2 {
                    Stage::AwaitPubRec
                } else {
                    Stage::AwaitPubAck
                };
                self.queue.get_mut(&(client.clone(), seq))?.2 = Some(stage);
                Some(set_inflight(&client, seq, stage))
            }
            Step::PubRec(n) => {
                let (client, seq) = self.nth_entry(n, |s| *s == Some(Stage::AwaitPubRec))?;
                self.queue.get_mut(&(client.clone(), seq))?.2 = Some(Stage::AwaitPubComp);
                Some(set_inflight(&client, seq, Stage::AwaitPubComp))
            }
            Step::Inbound(c, packet_id, add) => {
                let c = CLIENTS[c];
                if !self.sessions.contains(c) {
                    return None;
                }
                if add {
                    self.inbound.insert((c.into(), packet_id));
                    Some(Op::AddInboundQos2 {
                        client: c.into(),
                        packet_id,
                    })
                } else {
                    self.inbound.remove(&(c.into(), packet_id));
                    Some(Op::RemoveInboundQos2 {
                        client: c.into(),
                        packet_id,
                    })
                }
            }
            Step::Commit => None,
        }
    }
}

fn set_inflight(client: &str, seq: u64, stage: Stage) -> Op {
    Op::SetInflight {
        client: client.into(),
        seq,
        inflight: InflightRecord {
            packet_id: (seq % 1000 + 1) as u16,
            stage,
        },
    }
}

/// Runs `steps` on `store`, returning the model.
fn run(steps: &[Step], store: &dyn SessionStore) -> Model {
    let mut model = Model::default();
    let mut ops = Vec::new();
    let mut tickets = Vec::new();
    for s in steps {
        match s {
            Step::Commit => tickets.push(store.commit(std::mem::take(&mut ops))),
            s => ops.extend(model.apply(s, store)),
        }
    }
    tickets.push(store.commit(ops));
    for t in tickets {
        futures_block_on(t).expect("commit");
    }
    model
}

/// Compares a reopened store with the model.
fn compare<E: Engine>(store: &Store<E>, model: &Model) -> Result<(), TestCaseError> {
    let r = store.load(now()).expect("load");
    let sessions: BTreeSet<String> = r.sessions.iter().map(|s| s.client_id.clone()).collect();
    prop_assert_eq!(&sessions, &model.sessions);
    prop_assert_eq!(r.dropped.strays, 0);
    let mut inbound = BTreeSet::new();
    for s in &r.sessions {
        let c = s.client_id.clone();
        inbound.extend(s.inbound_qos2.iter().map(|p| (c.clone(), *p)));
        let queued: Vec<(u64, Vec<u8>)> = store
            .read_queue(&c, 0, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|q| (q.seq, q.message.payload.to_vec()))
            .collect();
        let want: Vec<(u64, Vec<u8>)> = model
            .queue
            .range((c.clone(), 0)..=(c.clone(), u64::MAX))
            .filter(|(_, v)| v.2.is_none())
            .map(|((_, seq), v)| (*seq, v.1.clone()))
            .collect();
        prop_assert_eq!(queued, want, "queue of {}", c);
        let inflight: Vec<(u64, Stage, Option<Vec<u8>>)> = s
            .inflight
            .iter()
            .map(|i| {
                let body = i.message.as_ref().map(|m| m.message.payload.to_vec());
                (i.seq, i.inflight.stage, body)
            })
            .collect();
        let want: Vec<(u64, Stage, Option<Vec<u8>>)> = model
            .queue
            .range((c.clone(), 0)..=(c.clone(), u64::MAX))
            .filter_map(|((_, seq), v)| {
                let stage = v.2?;
                let body = (stage != Stage::AwaitPubComp).then(|| v.1.clone());
                Some((*seq, stage, body))
            })
            .collect();
        prop_assert_eq!(inflight, want, "in flight of {}", c);
    }
    prop_assert_eq!(&inbound, &model.inbound);
    // Exactly the bodies still referenced are stored.
    let referenced: BTreeSet<u64> = model
        .queue
        .values()
        .filter(|v| v.2 != Some(Stage::AwaitPubComp))
        .map(|v| v.0)
        .collect();
    let mut stored = 0usize;
    store
        .engine()
        .scan(Table::Messages, &[], &[], &mut |_, _| {
            stored += 1;
            true
        })
        .expect("scan");
    prop_assert_eq!(stored, referenced.len(), "stored bodies vs referenced");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn memory_store_matches_the_model(steps in prop::collection::vec(step(), 1..80)) {
        let store = midge_store::MemoryStore::in_memory(Default::default());
        let model = run(&steps, &store);
        let again = store.reopen();
        drop(store);
        compare(&again, &model)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn disk_store_matches_the_model(steps in prop::collection::vec(step(), 1..80)) {
        let dir = tempfile::tempdir().expect("dir");
        let store = midge_store::DiskStore::open(dir.path(), Default::default()).expect("open");
        let model = run(&steps, &store);
        store.close();
        let again = midge_store::DiskStore::open(dir.path(), Default::default()).expect("reopen");
        compare(&again, &model)?;
    }
}
