//! kill -9: a child process commits and prints every sequence number whose ticket
//! resolved; the parent kills it with SIGKILL at a random moment, reopens the store and
//! checks that every printed (acknowledged) message is there. Three rounds on the same
//! store, for `Always` and for the default policy (which must survive a process crash
//! without an fsync per commit).
//!
//! The child is this same test binary, started on the hidden `crash_child` test with
//! the `MIDGE_STORE_CRASH_CHILD` environment variable set.

mod common;

use common::*;
use midge_store::engine::Engine;
use midge_store::{DiskStore, Durability, Op, SessionStore, Store, StoreOptions};
use rand::Rng;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const CHILD_ENV: &str = "MIDGE_STORE_CRASH_CHILD";
const WRITERS: usize = 4;

fn policy(name: &str) -> Durability {
    match name {
        "always" => Durability::Always,
        _ => Durability::default(),
    }
}

/// The child: `WRITERS` threads, each with its own session, enqueue messages (with an
/// occasional dequeue) and print `ACK <client> <seq>` once each commit is durable.
#[test]
#[ignore = "started by the kill -9 tests as a child process"]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (engine, policy_name, dir) = (
        parts.next().expect("engine"),
        parts.next().expect("policy"),
        parts.next().expect("dir"),
    );
    let options = StoreOptions {
        durability: policy(policy_name),
    };
    match engine {
        #[cfg(feature = "redb")]
        "redb" => child_loop(&midge_store::RedbStore::open(dir, options).expect("open")),
        _ => child_loop(&DiskStore::open(dir, options).expect("open")),
    }
}

fn child_loop<E: Engine>(store: &Store<E>) {
    let recovered = store.load(now()).expect("load");
    let stdout = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let client = format!("w{w}");
            let start = recovered
                .sessions
                .iter()
                .find(|r| r.client_id == client)
                .map_or(0, |r| r.next_seq);
            let stdout = &stdout;
            s.spawn(move || {
                store
                    .commit_blocking(vec![put_session(&client)])
                    .expect("session");
                for seq in start.. {
                    let payload = format!("{client}/{seq}").into_bytes();
                    let mut ops = vec![enqueue(
                        store,
                        message("t", &payload, None),
                        &[(&client, seq)],
                    )];
                    // Every tenth message a dequeue-then-enqueue of a scratch entry, so
                    // that deletions and body releases are in the crash mix too.
                    if seq % 10 == 0 {
                        ops.push(enqueue(
                            store,
                            message("x", b"scratch", None),
                            &[(&client, u64::MAX)],
                        ));
                        ops.push(Op::Dequeue {
                            client: client.as_str().into(),
                            seq: u64::MAX,
                        });
                    }
                    store.commit(ops).wait().expect("commit");
                    let mut out = stdout.lock().expect("stdout");
                    writeln!(out, "ACK {client} {seq}").expect("print");
                    out.flush().expect("flush");
                }
            });
        }
    });
}

/// Runs the child on `dir`, kills it after a random delay, returns what it acknowledged.
fn run_and_kill(engine: &str, policy_name: &str, dir: &std::path::Path) -> BTreeSet<(String, u64)> {
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{engine}:{policy_name}:{}", dir.display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (first_ack, started) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acked = BTreeSet::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            if parts.next() == Some("ACK") {
                let client = parts.next().expect("client").to_owned();
                let seq = parts.next().expect("seq").parse().expect("seq number");
                acked.insert((client, seq));
                let _ = first_ack.send(());
            }
        }
        acked
    });
    // Kill at a random moment once it is writing (start-up time varies with the load).
    let _ = started.recv_timeout(Duration::from_secs(60));
    let delay = rand::rng().random_range(20..1000);
    std::thread::sleep(Duration::from_millis(delay));
    // `Child::kill` sends SIGKILL on Unix: no destructor, no final flush or fsync.
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    reader.join().expect("reader")
}

fn survives_kill_9<E: Engine>(
    engine: &str,
    policy_name: &str,
    open: impl Fn(&std::path::Path) -> Store<E>,
) {
    let dir = tempfile::tempdir().expect("dir");
    let mut all_acked = BTreeSet::new();
    for round in 0..3 {
        let acked = run_and_kill(engine, policy_name, dir.path());
        assert!(
            !acked.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        all_acked.extend(acked);
        let store = open(dir.path());
        let recovered = store.load(now()).expect("load");
        let mut present = BTreeSet::new();
        for s in &recovered.sessions {
            for q in store.read_queue(&s.client_id, 0, usize::MAX).expect("read") {
                assert_eq!(
                    q.message.payload,
                    format!("{}/{}", s.client_id, q.seq).into_bytes(),
                    "body of {} {} does not match",
                    s.client_id,
                    q.seq
                );
                present.insert((s.client_id.clone(), q.seq));
            }
        }
        let lost: Vec<_> = all_acked.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "round {round}, {policy_name}: {} acknowledged messages lost, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        store.close();
        if engine == "fjall" {
            let report = midge_store::check(dir.path());
            assert!(report.is_healthy(), "{report}");
        }
        eprintln!(
            "round {round} ({engine}, {policy_name}): {} acknowledged, all present",
            all_acked.len()
        );
    }
}

fn open_fjall(dir: &std::path::Path) -> DiskStore {
    DiskStore::open(dir, StoreOptions::default()).expect("reopen")
}

#[test]
fn acknowledged_messages_survive_kill_9_with_fsync_always() {
    survives_kill_9("fjall", "always", open_fjall);
}

#[test]
fn acknowledged_messages_survive_kill_9_with_the_default_policy() {
    survives_kill_9("fjall", "default", open_fjall);
}

/// The engine comparison's second candidate (`--features redb`), with fsync per commit:
/// redb keeps non-durable commits in process memory only, so only `Always` applies.
#[cfg(feature = "redb")]
#[test]
fn redb_acknowledged_messages_survive_kill_9_with_fsync_always() {
    survives_kill_9("redb", "always", |dir| {
        midge_store::RedbStore::open(dir, StoreOptions::default()).expect("reopen")
    });
}
