//! A delivery whose whole life falls inside one writer batch (enqueued, marked in flight
//! and acknowledged before the batch is written: an online subscriber that acknowledges
//! while its publisher's commit waits) writes nothing; one that spans batches writes its
//! records and then deletes them. Counted on an engine that records every write.

mod common;

use common::*;
use midge_store::engine::memory::MemoryEngine;
use midge_store::engine::{Engine, EngineError, Visit, Write};
use midge_store::{
    Durability, InflightRecord, Op, SessionStore, Stage, Store, StoreOptions, Table,
};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::SystemTime;

/// A memory engine that records what each batch writes: (table, put or delete).
#[derive(Clone, Default)]
struct Counting {
    inner: MemoryEngine,
    writes: Arc<Mutex<Vec<(Table, bool)>>>,
}

impl Counting {
    /// The writes recorded since the last call, in the tables a delivery touches.
    fn take_delivery_writes(&self) -> Vec<(Table, bool)> {
        let mut w = std::mem::take(&mut *self.writes.lock());
        w.retain(|(t, _)| matches!(t, Table::Queue | Table::Messages | Table::Inflight));
        w.sort();
        w
    }
}

impl Engine for Counting {
    fn name(&self) -> &'static str {
        "counting memory"
    }

    fn write(&self, batch: &[Write]) -> Result<(), EngineError> {
        self.writes
            .lock()
            .extend(batch.iter().map(|w| (w.table, w.value.is_some())));
        self.inner.write(batch)
    }

    fn sync(&self) -> Result<(), EngineError> {
        self.inner.sync()
    }

    fn crash_safe_without_sync(&self) -> bool {
        true
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.get(table, key)
    }

    fn scan(
        &self,
        table: Table,
        prefix: &[u8],
        start: &[u8],
        visit: Visit<'_>,
    ) -> Result<(), EngineError> {
        self.inner.scan(table, prefix, start, visit)
    }

    fn last_key(&self, table: Table) -> Result<Option<Vec<u8>>, EngineError> {
        self.inner.last_key(table)
    }
}

/// A store on a counting engine with these sessions, their writes already counted away.
struct Fixture {
    engine: Counting,
    store: Store<Counting>,
}

impl Fixture {
    fn with_sessions(clients: &[&str]) -> Fixture {
        let engine = Counting::default();
        let store = open(&engine);
        store.load(SystemTime::now()).expect("load");
        let f = Fixture { engine, store };
        f.commit(clients.iter().map(|c| put_session(c)).collect());
        f.engine.take_delivery_writes();
        f
    }

    fn commit(&self, ops: Vec<Op>) {
        futures_block_on(self.store.commit(ops)).expect("commit");
    }

    fn enqueue(&self, payload: &[u8], to: &[(&str, u64)]) -> Op {
        enqueue(&self.store, message("t", payload, None), to)
    }

    /// The delivery writes of the commits since the last call.
    fn writes(&self) -> Vec<(Table, bool)> {
        self.engine.take_delivery_writes()
    }

    /// The sessions' queues after a restart on the same data: (client, queued, in flight).
    fn restart(self) -> Vec<(String, u64, usize)> {
        let Fixture { engine, store } = self;
        drop(store);
        let recovered = open(&engine).load(SystemTime::now()).expect("load");
        recovered
            .sessions
            .into_iter()
            .map(|s| (s.client_id, s.queued, s.inflight.len()))
            .collect()
    }
}

/// Opens a store on `engine` (its writer running); load it before committing.
fn open(engine: &Counting) -> Store<Counting> {
    Store::with_engine(
        engine.clone(),
        std::path::Path::new("counting-memory"),
        StoreOptions {
            durability: Durability::Always,
        },
    )
    .expect("store opens")
}

fn inflight(client: &str, seq: u64, packet_id: u16, stage: Stage) -> Op {
    Op::SetInflight {
        client: client.into(),
        seq,
        inflight: InflightRecord { packet_id, stage },
    }
}

fn dequeue(client: &str, seq: u64) -> Op {
    Op::Dequeue {
        client: client.into(),
        seq,
    }
}

#[test]
fn a_qos1_delivery_acknowledged_within_one_batch_writes_nothing() {
    let f = Fixture::with_sessions(&["a"]);
    f.commit(vec![
        f.enqueue(b"x", &[("a", 1)]),
        inflight("a", 1, 1, Stage::AwaitPubAck),
        dequeue("a", 1),
    ]);
    assert_eq!(f.writes(), vec![]);
    assert_eq!(f.restart(), vec![("a".into(), 0, 0)]);
}

#[test]
fn a_qos2_delivery_completed_within_one_batch_writes_nothing() {
    let f = Fixture::with_sessions(&["a"]);
    f.commit(vec![
        f.enqueue(b"x", &[("a", 1)]),
        inflight("a", 1, 1, Stage::AwaitPubRec),
        inflight("a", 1, 1, Stage::AwaitPubComp),
        dequeue("a", 1),
    ]);
    assert_eq!(f.writes(), vec![]);
    assert_eq!(f.restart(), vec![("a".into(), 0, 0)]);
}

/// What removing a stored entry (body, entry, marker) writes: three deletions.
const REMOVED: [(Table, bool); 3] = [
    (Table::Messages, false),
    (Table::Queue, false),
    (Table::Inflight, false),
];

#[test]
fn a_delivery_spanning_batches_is_written_then_deleted() {
    let f = Fixture::with_sessions(&["a"]);
    f.commit(vec![f.enqueue(b"x", &[("a", 1)])]);
    assert_eq!(
        f.writes(),
        vec![(Table::Messages, true), (Table::Queue, true)]
    );
    f.commit(vec![inflight("a", 1, 1, Stage::AwaitPubAck)]);
    assert_eq!(f.writes(), vec![(Table::Inflight, true)]);
    f.commit(vec![dequeue("a", 1)]);
    assert_eq!(f.writes(), REMOVED);
    assert_eq!(f.restart(), vec![("a".into(), 0, 0)]);
}

#[test]
fn a_marker_for_an_entry_stored_earlier_is_deleted_even_within_one_batch() {
    // The entry was written by an earlier batch: its in-flight marker may be stored too
    // (a resend after a reconnect), so the batch that marks and acknowledges it must
    // delete the marker, not merely forget it.
    let f = Fixture::with_sessions(&["a"]);
    f.commit(vec![f.enqueue(b"x", &[("a", 1)])]);
    f.commit(vec![inflight("a", 1, 1, Stage::AwaitPubAck)]);
    f.writes();
    f.commit(vec![
        inflight("a", 1, 1, Stage::AwaitPubAck),
        dequeue("a", 1),
    ]);
    assert_eq!(f.writes(), REMOVED);
    assert_eq!(f.restart(), vec![("a".into(), 0, 0)]);
}

#[test]
fn a_shared_body_stays_for_the_subscriber_that_has_not_acknowledged() {
    let f = Fixture::with_sessions(&["a", "b"]);
    f.commit(vec![
        f.enqueue(b"x", &[("a", 1), ("b", 1)]),
        inflight("a", 1, 1, Stage::AwaitPubAck),
        dequeue("a", 1),
    ]);
    // b's entry and the body it refers to; nothing of a's.
    assert_eq!(
        f.writes(),
        vec![(Table::Messages, true), (Table::Queue, true)]
    );
    assert_eq!(f.restart(), vec![("a".into(), 0, 0), ("b".into(), 1, 0)]);
}

#[test]
fn a_body_reenqueued_after_its_last_reference_went_in_the_same_batch_is_written() {
    // An entry written by an earlier batch is removed (deleting its stored body) in the
    // same batch as a new message is queued: the deletions of the stored records must be
    // written, and the new message with them.
    let f = Fixture::with_sessions(&["a"]);
    f.commit(vec![f.enqueue(b"x", &[("a", 1)])]);
    f.writes();
    f.commit(vec![dequeue("a", 1), f.enqueue(b"y", &[("a", 2)])]);
    assert_eq!(
        f.writes(),
        vec![
            (Table::Messages, false),
            (Table::Messages, true),
            (Table::Queue, false),
            (Table::Queue, true),
            (Table::Inflight, false)
        ]
    );
    assert_eq!(f.restart(), vec![("a".into(), 1, 0)]);
}
