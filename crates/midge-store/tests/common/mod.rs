//! Helpers shared by the integration tests: a store that can be restarted, and record
//! builders.

#![allow(dead_code)]

use bytes::Bytes;
use midge_store::{
    Delivery, DiskStore, Durability, MemoryStore, MessageProperties, MessageRecord, Op,
    SessionRecord, SessionStore, StoreOptions,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tempfile::TempDir;

/// A store on disk or in memory that a test can restart.
pub enum Fixture {
    Memory(MemoryStore),
    Disk(Option<DiskStore>, TempDir),
}

impl Fixture {
    pub fn memory() -> Fixture {
        Fixture::Memory(MemoryStore::in_memory(options()))
    }

    pub fn disk() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DiskStore::open(dir.path(), options()).expect("open");
        Fixture::Disk(Some(store), dir)
    }

    /// Both kinds, for tests that must hold for each.
    pub fn both() -> [Fixture; 2] {
        [Fixture::memory(), Fixture::disk()]
    }

    pub fn store(&self) -> &dyn SessionStore {
        match self {
            Fixture::Memory(s) => s,
            Fixture::Disk(s, _) => s.as_ref().expect("open"),
        }
    }

    /// Closes the store and opens it again, as a broker restart does.
    pub fn restart(self) -> Fixture {
        match self {
            Fixture::Memory(s) => {
                let again = s.reopen();
                drop(s);
                Fixture::Memory(again)
            }
            Fixture::Disk(s, dir) => {
                if let Some(s) = s {
                    s.close();
                }
                let store = DiskStore::open(dir.path(), options()).expect("reopen");
                Fixture::Disk(Some(store), dir)
            }
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Fixture::Memory(_) => "memory",
            Fixture::Disk(..) => "disk",
        }
    }

    pub fn commit(&self, ops: Vec<Op>) {
        futures_block_on(self.store().commit(ops)).expect("commit");
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        durability: Durability::Always,
    }
}

/// Waits for a ticket on this thread (tests are not async).
pub fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

pub fn now() -> SystemTime {
    SystemTime::now()
}

pub fn session(expiry: Option<u32>, disconnected_at: Option<SystemTime>) -> SessionRecord {
    SessionRecord {
        expiry_interval: expiry,
        disconnected_at: disconnected_at.map(midge_store::unix_millis),
        protocol_level: 5,
        first_seq: 0,
    }
}

pub fn message(topic: &str, payload: &[u8], expires_in: Option<Duration>) -> MessageRecord {
    MessageRecord {
        topic: topic.into(),
        payload: Bytes::copy_from_slice(payload),
        qos: 1,
        retain: false,
        properties: MessageProperties {
            user_properties: vec![("k".into(), "v".into())],
            ..MessageProperties::default()
        },
        expires_at: expires_in.map(|d| midge_store::unix_millis(now() + d)),
    }
}

pub fn delivery(client: &str, seq: u64) -> Delivery {
    Delivery {
        client: client.into(),
        seq,
        qos: 1,
        retain: false,
        subscription_ids: vec![7],
    }
}

/// An `Enqueue` of a fresh message to each `(client, seq)`.
pub fn enqueue(store: &dyn SessionStore, msg: MessageRecord, to: &[(&str, u64)]) -> Op {
    Op::Enqueue {
        message_id: store.next_message_id(),
        message: Arc::new(msg),
        deliveries: to.iter().map(|(c, s)| delivery(c, *s)).collect(),
    }
}

pub fn put_session(client: &str) -> Op {
    Op::PutSession {
        client: client.into(),
        session: session(None, None),
    }
}
