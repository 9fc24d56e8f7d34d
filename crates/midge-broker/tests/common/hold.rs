//! A broker on an in-memory store whose writes a test can hold: while a write is held, its
//! commit is not durable, and a test looks at what clients get meanwhile.

use super::{test_config, TestBroker, TestClient, RECV_TIMEOUT};
use midge_broker::{Broker, Config};
use midge_proto::Packet;
use midge_store::engine::memory::MemoryEngine;
use midge_store::engine::{Engine, EngineError, Visit, Write};
use midge_store::{Durability, SessionStore, Store, StoreOptions, Table};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

/// What the test tells the engine, and what it reports back.
#[derive(Default)]
struct HoldState {
    /// Writes block while this is set.
    hold: bool,
    /// Writes that have reached the engine while held.
    arrived: usize,
}

/// A memory engine whose writes wait while the test holds them.
#[derive(Clone, Default)]
pub struct HoldEngine {
    inner: MemoryEngine,
    state: Arc<(Mutex<HoldState>, Condvar)>,
}

impl HoldEngine {
    /// Holds writes until the returned guard is dropped (also when a test fails: the
    /// store's writer must not stay blocked, or the runtime never shuts down).
    pub fn hold(&self) -> Held {
        let mut st = self.state.0.lock();
        st.hold = true;
        st.arrived = 0;
        Held(self.clone())
    }

    /// Blocks (call it on a blocking thread) until a write is waiting.
    fn wait_for_held_write(&self) {
        let (lock, cv) = &*self.state;
        let mut st = lock.lock();
        while st.arrived == 0 {
            cv.wait(&mut st);
        }
    }
}

/// Releases the held writes when dropped.
pub struct Held(HoldEngine);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.state.0.lock().hold = false;
        self.0.state.1.notify_all();
    }
}

impl Engine for HoldEngine {
    fn name(&self) -> &'static str {
        "held memory"
    }

    fn write(&self, batch: &[Write]) -> Result<(), EngineError> {
        {
            let (lock, cv) = &*self.state;
            let mut st = lock.lock();
            if st.hold {
                st.arrived += 1;
                cv.notify_all();
                while st.hold {
                    cv.wait(&mut st);
                }
            }
        }
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

/// A broker whose store runs on `engine`.
pub async fn start(engine: &HoldEngine) -> TestBroker {
    let store = Store::with_engine(
        engine.clone(),
        std::path::Path::new("held-memory"),
        StoreOptions {
            durability: Durability::Always,
        },
    )
    .expect("store opens");
    let config: Config = test_config("127.0.0.1:0".parse().expect("address"));
    let broker = Broker::start_with_store(config, Arc::new(store) as Arc<dyn SessionStore>)
        .await
        .expect("broker starts");
    let addr = broker.local_addrs()[0];
    TestBroker {
        broker: Some(broker),
        addr,
    }
}

/// Waits until a write has reached the held engine (the commit is under way).
pub async fn held_write_arrives(engine: &HoldEngine) {
    let e = engine.clone();
    tokio::time::timeout(
        RECV_TIMEOUT,
        tokio::task::spawn_blocking(move || e.wait_for_held_write()),
    )
    .await
    .expect("the publisher's commit reaches the store")
    .expect("waiting thread");
}

/// Proves that no packet `is` picks arrived from the broker: a PINGREQ round trip after
/// the request (the broker answers in order, so one sent earlier would be here).
pub async fn assert_not_yet(c: &mut TestClient, what: &str, is: impl Fn(&Packet) -> bool) {
    c.ping().await;
    assert!(
        !c.pending().iter().any(is),
        "{what} before the store has the change"
    );
}
