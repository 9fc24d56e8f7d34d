//! Store faults at run time (issue 11): a data directory removed or replaced under an open
//! store, a second open of a store in use, and a store's stop: every commit after a fault
//! fails at once with it, the fault is reported by `health`, stopping never hangs, and a
//! second process (here: a second open) is refused naming the holder's pid, even after the
//! directory was replaced.

use midge_store::{
    CommitTicket, DiskStore, Op, SessionRecord, SessionStore, StoreError, StoreOptions,
};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The longest any one wait here may take.
const WAIT: Duration = Duration::from_secs(10);

fn put_session(client: &str) -> Op {
    Op::PutSession {
        client: client.into(),
        session: SessionRecord {
            expiry_interval: Some(3600),
            disconnected_at: None,
            protocol_level: 5,
            first_seq: 1,
        },
    }
}

fn open(dir: &Path) -> DiskStore {
    DiskStore::open(dir, StoreOptions::default()).expect("open")
}

/// Waits for `ticket` on another thread, failing the test if it takes longer than
/// [`WAIT`] (a hang).
fn within(ticket: CommitTicket) -> Result<(), StoreError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(ticket.wait());
    });
    rx.recv_timeout(WAIT).expect("the ticket resolves in time")
}

#[test]
fn a_second_open_of_a_store_in_use_names_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(&dir);
    let err = DiskStore::open(&dir, StoreOptions::default()).err();
    let pid = std::process::id();
    assert_eq!(
        err.map(|e| e.to_string()),
        Some(format!(
            "the store in {} is in use by another process (pid {pid})",
            dir.display()
        ))
    );
    drop(store);
    open(&dir);
}

#[test]
fn a_replaced_directory_fails_later_commits_at_once_and_stops_without_flushing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(&dir);
    within(store.commit(vec![put_session("before")])).expect("commit");
    assert_eq!(store.health().fault, None);

    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let started = Instant::now();
    let err = within(store.commit(vec![put_session("after")])).expect_err("refused");
    assert!(matches!(err, StoreError::Gone { .. }), "{err:?}");
    assert!(err.to_string().contains("was removed or replaced"), "{err}");
    // Later commits get the same fault without touching the engine.
    let again = within(store.commit(vec![put_session("later")])).expect_err("refused");
    assert_eq!(again, err);
    let health = store.health();
    assert_eq!(health.fault, Some(err.to_string()));
    assert_eq!(health.failures, 2);
    // The second process of the issue: refused, although the new directory has no lock.
    let second = DiskStore::open(&dir, StoreOptions::default()).err();
    assert!(
        matches!(&second, Some(StoreError::Locked { what, .. }) if what == &format!("pid {}", std::process::id())),
        "{second:?}"
    );
    assert_eq!(within(store.stop()), Err(err));
    assert!(started.elapsed() < WAIT);
    drop(store);
}

#[test]
fn an_idle_store_notices_that_its_directory_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    // No commit: the writer's idle check (about once a second) finds it.
    let deadline = Instant::now() + WAIT;
    let fault = loop {
        if let Some(f) = store.health().fault {
            break f;
        }
        assert!(Instant::now() < deadline, "the removal was not noticed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(fault.contains(&dir.display().to_string()), "{fault}");
    assert_eq!(store.health().failures, 0);
    assert!(within(store.stop()).is_err());
}

#[test]
fn stop_makes_earlier_commits_durable_and_refuses_later_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let store = open(&dir);
    let earlier = store.commit(vec![put_session("kept")]);
    within(store.stop()).expect("stopped");
    within(earlier).expect("the earlier commit");
    let later = within(store.commit(vec![put_session("refused")]));
    assert!(matches!(later, Err(StoreError::Closed { .. })), "{later:?}");
    drop(store);
    let reopened = open(&dir);
    let recovered = reopened.load(std::time::SystemTime::now()).expect("load");
    let clients: Vec<_> = recovered
        .sessions
        .iter()
        .map(|s| s.client_id.as_str())
        .collect();
    assert_eq!(clients, ["kept"]);
}
