//! Every persisted item survives a restart; expired state is dropped on load; shared
//! message bodies live exactly as long as their references. Each test runs on the disk
//! store and on the in-memory store.

mod common;

use common::*;
use midge_store::{
    check, ConnectedWill, InflightRecord, MessageRecord, Op, SessionStore, Stage,
    SubscriptionRecord, WillRecord,
};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn sessions_and_subscriptions_survive_restart() {
    for f in Fixture::both() {
        let sub = SubscriptionRecord {
            options: 0b0010_0101,
            id: Some(42),
        };
        let disconnected = now();
        f.commit(vec![
            Op::PutSession {
                client: "dev-1".into(),
                session: session(Some(3600), Some(disconnected)),
            },
            put_session("dev-2"),
            Op::PutSubscription {
                client: "dev-1".into(),
                filter: "a/+/c".into(),
                subscription: sub,
            },
            Op::PutSubscription {
                client: "dev-1".into(),
                filter: "$share/g/x/#".into(),
                subscription: sub,
            },
            Op::PutSubscription {
                client: "dev-1".into(),
                filter: "gone".into(),
                subscription: sub,
            },
            Op::DeleteSubscription {
                client: "dev-1".into(),
                filter: "gone".into(),
            },
        ]);
        let name = f.name();
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        assert_eq!(r.sessions.len(), 2, "{name}");
        let s = &r.sessions[0];
        assert_eq!(s.client_id, "dev-1");
        assert_eq!(s.session, session(Some(3600), Some(disconnected)));
        assert_eq!(
            s.subscriptions,
            vec![("$share/g/x/#".to_owned(), sub), ("a/+/c".to_owned(), sub)],
            "{name}"
        );
        assert_eq!(r.sessions[1].client_id, "dev-2");
        assert!(r.sessions[1].subscriptions.is_empty());
    }
}

#[test]
fn queued_messages_survive_restart_in_order() {
    for f in Fixture::both() {
        let mut ops = vec![put_session("c")];
        for seq in 0..50u64 {
            let m = message("t", format!("m{seq}").as_bytes(), None);
            ops.push(enqueue(f.store(), m, &[("c", seq)]));
        }
        f.commit(ops);
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        let s = &r.sessions[0];
        assert_eq!((s.queued, s.first_queued_seq, s.next_seq), (50, 0, 50));
        // "m0".."m9" are 2 bytes, "m10".."m49" 3 bytes: known without reading bodies.
        assert_eq!(s.queued_bytes, 10 * 2 + 40 * 3);
        let first = f.store().read_queue("c", 0, 20).expect("read");
        assert_eq!(first.len(), 20);
        let rest = f.store().read_queue("c", 20, 100).expect("read");
        assert_eq!(rest.len(), 30);
        for (i, q) in first.iter().chain(&rest).enumerate() {
            assert_eq!(q.seq, i as u64);
            assert_eq!(q.message.payload, format!("m{i}").as_bytes());
            assert_eq!(q.entry.subscription_ids, vec![7]);
            assert_eq!(q.message.properties.user_properties.len(), 1);
        }
        assert!(f
            .store()
            .read_queue("other", 0, 10)
            .expect("read")
            .is_empty());
    }
}

#[test]
fn inflight_messages_in_every_stage_survive_restart() {
    for f in Fixture::both() {
        let mut ops = vec![put_session("c")];
        for seq in 0..4 {
            ops.push(enqueue(
                f.store(),
                message("t", &[seq as u8], None),
                &[("c", seq)],
            ));
        }
        f.commit(ops);
        let set = |seq, packet_id, stage| Op::SetInflight {
            client: "c".into(),
            seq,
            inflight: InflightRecord { packet_id, stage },
        };
        f.commit(vec![
            set(0, 10, Stage::AwaitPubAck),
            set(1, 11, Stage::AwaitPubRec),
            set(2, 12, Stage::AwaitPubRec),
        ]);
        f.commit(vec![set(2, 12, Stage::AwaitPubComp)]);
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        let s = &r.sessions[0];
        let got: Vec<_> = s
            .inflight
            .iter()
            .map(|i| {
                (
                    i.seq,
                    i.inflight.packet_id,
                    i.inflight.stage,
                    i.message.is_some(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 10, Stage::AwaitPubAck, true),
                (1, 11, Stage::AwaitPubRec, true),
                (2, 12, Stage::AwaitPubComp, false),
            ],
            "{}",
            f.name()
        );
        assert_eq!(
            s.inflight[1]
                .message
                .as_ref()
                .map(|m| &m.message.payload[..]),
            Some(&[1u8][..])
        );
        // Only seq 3 is still queued; in-flight ones are not read as queued.
        assert_eq!((s.queued, s.first_queued_seq, s.next_seq), (1, 3, 4));
        let q = f.store().read_queue("c", 0, 10).expect("read");
        assert_eq!(q.iter().map(|q| q.seq).collect::<Vec<_>>(), vec![3]);
    }
}

#[test]
fn inbound_qos2_ids_retained_and_wills_survive_restart() {
    for f in Fixture::both() {
        let will = WillRecord {
            message: message("will/c", b"bye", None),
            publish_at: 1_000,
            while_connected: None,
        };
        let connected = WillRecord {
            message: message("will/e", b"gone", None),
            publish_at: 0,
            while_connected: Some(ConnectedWill {
                delay_secs: 5,
                message_expiry_secs: Some(10),
            }),
        };
        let mut retained = message("r/1", b"last", None);
        retained.retain = true;
        f.commit(vec![
            put_session("c"),
            Op::AddInboundQos2 {
                client: "c".into(),
                packet_id: 1,
            },
            Op::AddInboundQos2 {
                client: "c".into(),
                packet_id: 65535,
            },
            Op::AddInboundQos2 {
                client: "c".into(),
                packet_id: 7,
            },
            Op::RemoveInboundQos2 {
                client: "c".into(),
                packet_id: 7,
            },
            Op::PutRetained {
                topic: "r/1".into(),
                message: Arc::new(retained.clone()),
            },
            Op::PutRetained {
                topic: "r/2".into(),
                message: Arc::new(retained.clone()),
            },
            Op::DeleteRetained {
                topic: "r/2".into(),
            },
            Op::PutWill {
                client: "c".into(),
                will: will.clone(),
            },
            Op::PutWill {
                client: "d".into(),
                will: will.clone(),
            },
            Op::DeleteWill { client: "d".into() },
            Op::PutWill {
                client: "e".into(),
                will: connected.clone(),
            },
        ]);
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        assert_eq!(r.sessions[0].inbound_qos2, vec![1, 65535]);
        assert_eq!(r.retained, vec![("r/1".to_owned(), retained.clone())]);
        assert_eq!(
            r.wills,
            vec![
                ("c".to_owned(), will.clone()),
                ("e".to_owned(), connected.clone())
            ]
        );
    }
}

#[test]
fn expired_sessions_messages_and_retained_are_dropped_on_load() {
    for f in Fixture::both() {
        let long_ago = now() - Duration::from_secs(100);
        let will = WillRecord {
            message: message("w", b"w", None),
            publish_at: 0,
            while_connected: None,
        };
        let short = Some(Duration::from_millis(1));
        let mut ops = vec![
            // Expired 90 s ago.
            Op::PutSession {
                client: "old".into(),
                session: session(Some(10), Some(long_ago)),
            },
            Op::PutSubscription {
                client: "old".into(),
                filter: "x".into(),
                subscription: SubscriptionRecord {
                    options: 1,
                    id: None,
                },
            },
            Op::PutWill {
                client: "old".into(),
                will: will.clone(),
            },
            // Was connected at the crash with expiry 0: ended with the connection.
            Op::PutSession {
                client: "zero".into(),
                session: session(Some(0), None),
            },
            Op::PutSession {
                client: "live".into(),
                session: session(Some(1000), Some(long_ago)),
            },
            Op::PutRetained {
                topic: "gone".into(),
                message: Arc::new(message("gone", b"", short)),
            },
            Op::PutRetained {
                topic: "kept".into(),
                message: Arc::new(message("kept", b"", None)),
            },
        ];
        ops.push(enqueue(
            f.store(),
            message("t", b"old", None),
            &[("old", 0)],
        ));
        ops.push(enqueue(
            f.store(),
            message("t", b"x", short),
            &[("live", 0)],
        ));
        ops.push(enqueue(f.store(), message("t", b"y", None), &[("live", 1)]));
        f.commit(ops);
        std::thread::sleep(Duration::from_millis(5));
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        assert_eq!(
            r.sessions
                .iter()
                .map(|s| s.client_id.as_str())
                .collect::<Vec<_>>(),
            vec!["live"]
        );
        assert_eq!(
            (r.sessions[0].queued, r.sessions[0].first_queued_seq),
            (1, 1)
        );
        assert_eq!(r.retained.len(), 1);
        // The will of the expired session is due now, so it is still handed over.
        assert_eq!(r.wills, vec![("old".to_owned(), will)]);
        assert_eq!(
            (
                r.dropped.sessions,
                r.dropped.queued_messages,
                r.dropped.retained_messages
            ),
            (2, 1, 1)
        );
        // The drops were written: a second load finds nothing more to drop.
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        assert_eq!(r.dropped, Default::default());
        assert_eq!(r.sessions.len(), 1);
        assert!(f.store().read_queue("old", 0, 10).expect("read").is_empty());
        if let Fixture::Disk(s, dir) = f {
            drop(s);
            let report = check(dir.path());
            assert!(report.is_healthy(), "{report}");
            // Only the body still queued for "live" remains.
            assert_eq!(report.records["messages"], 1, "{report}");
            assert_eq!(report.orphan_messages, 0);
        }
    }
}

/// Counts stored message bodies through `check` (disk) after closing the store.
fn bodies_on_disk(f: Fixture) -> (u64, u64) {
    match f {
        Fixture::Disk(s, dir) => {
            drop(s);
            let report = check(dir.path());
            assert!(report.is_healthy(), "{report}");
            (report.records["messages"], report.orphan_messages)
        }
        Fixture::Memory(_) => unreachable!(),
    }
}

#[test]
fn fan_out_stores_the_body_once_and_frees_it_with_the_last_reference() {
    let f = Fixture::disk();
    let clients: Vec<String> = (0..10_000).map(|i| format!("client-{i}")).collect();
    let mut ops: Vec<Op> = clients.iter().map(|c| put_session(c)).collect();
    let to: Vec<(&str, u64)> = clients.iter().map(|c| (c.as_str(), 0)).collect();
    ops.push(enqueue(f.store(), message("t", &[7u8; 1024], None), &to));
    f.commit(ops);
    // Deliver to all but one.
    f.commit(
        clients[1..]
            .iter()
            .map(|c| Op::Dequeue {
                client: c.as_str().into(),
                seq: 0,
            })
            .collect(),
    );
    let f = f.restart();
    let r = f.store().load(now()).expect("load");
    assert_eq!(r.sessions.iter().map(|s| s.queued).sum::<u64>(), 1);
    let q = f.store().read_queue("client-0", 0, 10).expect("read");
    assert_eq!(q[0].message.payload.len(), 1024);
    f.commit(vec![Op::Dequeue {
        client: "client-0".into(),
        seq: 0,
    }]);
    assert_eq!(bodies_on_disk(f), (0, 0));
}

#[test]
fn one_body_for_many_subscribers_on_disk() {
    let f = Fixture::disk();
    let to: Vec<(String, u64)> = (0..100).map(|i| (format!("c{i}"), 5)).collect();
    let to: Vec<(&str, u64)> = to.iter().map(|(c, s)| (c.as_str(), *s)).collect();
    let mut ops: Vec<Op> = to.iter().map(|(c, _)| put_session(c)).collect();
    ops.push(enqueue(f.store(), message("t", b"shared", None), &to));
    f.commit(ops);
    assert_eq!(bodies_on_disk(f), (1, 0));
}

/// A persistent session of `client` whose queue is numbered from `first_seq`.
fn session_numbered_from(client: &str, first_seq: u64) -> Op {
    let mut record = session(Some(3600), None);
    record.first_seq = first_seq;
    Op::PutSession {
        client: client.into(),
        session: record,
    }
}

/// A publisher that routed to a session just before the session ended (a client
/// reconnecting with Clean Start, or its expiry) may commit its queue entry after the
/// session's deletion, under the client ID that a new session now has. The new session
/// starts its sequence numbers above the old one's, and says where in its record: what
/// lies below is not its own and is removed at load, not delivered [MQTT-3.1.2-4].
#[test]
fn entries_below_a_sessions_first_sequence_number_are_an_earlier_sessions() {
    for f in Fixture::both() {
        let old = message("t", b"old session", None);
        let new = message("t", b"new session", None);
        let ops = vec![
            session_numbered_from("c", 1_000),
            enqueue(f.store(), old.clone(), &[("c", 7)]),
            enqueue(f.store(), old, &[("c", 8)]),
            Op::SetInflight {
                client: "c".into(),
                seq: 7,
                inflight: InflightRecord {
                    packet_id: 8,
                    stage: Stage::AwaitPubAck,
                },
            },
            enqueue(f.store(), new.clone(), &[("c", 1_000)]),
            enqueue(f.store(), new, &[("c", 1_001)]),
        ];
        f.commit(ops);
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        let s = &r.sessions[0];
        assert_eq!(
            (s.queued, s.first_queued_seq, s.next_seq),
            (2, 1_000, 1_002)
        );
        assert!(s.inflight.is_empty(), "{}: {:?}", f.name(), s.inflight);
        assert_eq!(r.dropped.strays, 3, "{}", f.name());
        let q = f.store().read_queue("c", 0, 10).expect("read");
        assert_eq!(q.iter().map(|m| m.seq).collect::<Vec<_>>(), [1_000, 1_001]);
        assert!(q.iter().all(|m| &m.message.payload[..] == b"new session"));
        // Removed, not only passed over.
        let f = f.restart();
        assert_eq!(f.store().load(now()).expect("load").dropped.strays, 0);
    }
}

/// `check` counts those entries as strays and `repair` leaves them behind.
#[test]
fn check_and_repair_treat_entries_below_first_seq_as_strays() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    {
        let store = midge_store::DiskStore::open(&dir, Default::default()).expect("open");
        let ops = vec![
            session_numbered_from("c", 1_000),
            enqueue(&store, message("t", b"old", None), &[("c", 7)]),
            enqueue(&store, message("t", b"new", None), &[("c", 1_000)]),
        ];
        store.commit_blocking(ops).expect("commit");
        store.close();
    }
    let report = check(&dir);
    assert!(report.is_healthy(), "{report}");
    assert_eq!(report.strays, 1, "{report}");
    let done = midge_store::repair(&dir).expect("repair");
    let store = midge_store::DiskStore::open(&dir, Default::default()).expect("open");
    let r = store.load(now()).expect("load");
    assert_eq!(r.dropped.strays, 0, "{done}");
    let q = store.read_queue("c", 0, 10).expect("read");
    assert_eq!(q.iter().map(|m| m.seq).collect::<Vec<_>>(), [1_000]);
}

#[test]
fn delete_session_releases_its_queue_but_not_shared_bodies() {
    for f in Fixture::both() {
        let m1 = message("t", b"shared", None);
        let m2 = message("t", b"own", None);
        let ops = vec![
            put_session("a"),
            put_session("b"),
            enqueue(f.store(), m1, &[("a", 0), ("b", 0)]),
            enqueue(f.store(), m2, &[("a", 1)]),
            Op::SetInflight {
                client: "a".into(),
                seq: 0,
                inflight: InflightRecord {
                    packet_id: 1,
                    stage: Stage::AwaitPubAck,
                },
            },
            Op::AddInboundQos2 {
                client: "a".into(),
                packet_id: 3,
            },
        ];
        f.commit(ops);
        f.commit(vec![Op::DeleteSession { client: "a".into() }]);
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        assert_eq!(r.sessions.len(), 1);
        assert_eq!(r.dropped.strays, 0, "cascade left entries behind");
        let q = f.store().read_queue("b", 0, 10).expect("read");
        assert_eq!(&q[0].message.payload[..], b"shared");
        if matches!(f, Fixture::Disk(..)) {
            assert_eq!(bodies_on_disk(f), (1, 0));
        }
    }
}

#[test]
fn ops_on_one_key_within_a_commit_apply_in_order() {
    for f in Fixture::both() {
        let id = f.store().next_message_id();
        f.commit(vec![
            put_session("c"),
            Op::Enqueue {
                message_id: id,
                message: Arc::new(message("t", b"1", None)),
                deliveries: vec![delivery("c", 0)],
            },
            Op::Dequeue {
                client: "c".into(),
                seq: 0,
            },
            Op::DeleteSession { client: "c".into() },
            put_session("c"),
            enqueue(f.store(), message("t", b"2", None), &[("c", 0)]),
        ]);
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        assert_eq!(r.sessions[0].queued, 1);
        let q = f.store().read_queue("c", 0, 10).expect("read");
        assert_eq!(&q[0].message.payload[..], b"2");
        if matches!(f, Fixture::Disk(..)) {
            assert_eq!(bodies_on_disk(f), (1, 0));
        }
    }
}

#[test]
fn message_ids_are_not_reused_after_restart() {
    let f = Fixture::disk();
    let first = f.store().next_message_id();
    f.commit(vec![
        put_session("c"),
        Op::Enqueue {
            message_id: first,
            message: Arc::new(message("t", b"x", None)),
            deliveries: vec![delivery("c", 0)],
        },
    ]);
    let f = f.restart();
    assert!(f.store().next_message_id() > first);
}

#[test]
fn concurrent_commits_from_many_threads_all_become_durable() {
    for f in Fixture::both() {
        std::thread::scope(|s| {
            for t in 0..8 {
                let store = f.store();
                s.spawn(move || {
                    let client = format!("t{t}");
                    futures_block_on(store.commit(vec![put_session(&client)])).expect("commit");
                    for seq in 0..200 {
                        let op = enqueue(store, message("t", b"p", None), &[(&client, seq)]);
                        futures_block_on(store.commit(vec![op])).expect("commit");
                    }
                });
            }
        });
        let f = f.restart();
        let r = f.store().load(now()).expect("load");
        assert_eq!(r.sessions.len(), 8);
        assert!(r
            .sessions
            .iter()
            .all(|s| s.queued == 200 && s.next_seq == 200));
    }
}

#[test]
fn every_durability_policy_resolves_tickets_and_persists_on_close() {
    use midge_store::{DiskStore, Durability, StoreOptions};
    for durability in [
        Durability::Always,
        Durability::Periodic(Duration::from_millis(20)),
        Durability::Never,
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let store = DiskStore::open(dir.path(), StoreOptions { durability }).expect("open");
        assert_eq!(store.durability(), durability);
        for i in 0..20 {
            let t = store.commit(vec![put_session(&format!("c{i}"))]);
            futures_block_on(t).expect("commit");
        }
        // Let a periodic sync fire while idle.
        std::thread::sleep(Duration::from_millis(50));
        store.close();
        let store = DiskStore::open(dir.path(), StoreOptions { durability }).expect("reopen");
        assert_eq!(store.load(now()).expect("load").sessions.len(), 20);
    }
}

#[test]
fn commit_blocking_works_inside_an_async_runtime() {
    let f = Fixture::disk();
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        if let Fixture::Disk(Some(s), _) = &f {
            s.commit_blocking(vec![put_session("a")]).expect("commit");
            s.commit(vec![put_session("b")]).await.expect("commit");
            // load() uses the blocking path for its clean-up and must not panic here.
            assert_eq!(s.load(now()).expect("load").sessions.len(), 2);
        }
    });
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let _a = midge_store::DiskStore::open(dir.path(), Default::default()).expect("open");
    let err = midge_store::DiskStore::open(dir.path(), Default::default())
        .err()
        .expect("second open must fail");
    assert!(
        matches!(err, midge_store::StoreError::Locked { .. }),
        "{err}"
    );
}

#[test]
fn retained_record_keeps_every_field() {
    let f = Fixture::disk();
    let mut m: MessageRecord = message("a/b", b"payload", Some(Duration::from_secs(3600)));
    m.qos = 2;
    m.retain = true;
    m.properties.content_type = Some("text/plain".into());
    m.properties.correlation_data = Some(bytes::Bytes::from_static(b"\x00\x01"));
    m.properties.payload_format_indicator = Some(1);
    m.properties.response_topic = Some("resp".into());
    f.commit(vec![Op::PutRetained {
        topic: "a/b".into(),
        message: Arc::new(m.clone()),
    }]);
    let f = f.restart();
    assert_eq!(
        f.store().load(now()).expect("load").retained,
        vec![("a/b".into(), m)]
    );
}

/// The broker pages a queue in while publishers still commit to it; it relies on an empty
/// commit resolving only after every commit called before it is readable.
#[test]
fn empty_commit_is_a_barrier_for_earlier_commits() {
    for f in Fixture::both() {
        f.commit(vec![put_session("c")]);
        let tickets: Vec<_> = (0..200u64)
            .map(|seq| {
                let m = message("t", b"x", None);
                f.store().commit(vec![enqueue(f.store(), m, &[("c", seq)])])
            })
            .collect();
        f.store().commit(Vec::new()).wait().expect("barrier");
        let q = f.store().read_queue("c", 0, usize::MAX).expect("read");
        assert_eq!(q.len(), 200, "{}", f.name());
        for t in tickets {
            t.wait().expect("commit");
        }
    }
}

/// The broker lets a QoS 2 message through to subscribers from `commit_then`'s work: it
/// must run once the commit is answered (so it is readable), even when nobody awaits the
/// ticket.
#[test]
fn commit_then_runs_after_the_commit_is_answered() {
    for f in Fixture::both() {
        f.commit(vec![put_session("c")]);
        let (tx, rx) = std::sync::mpsc::channel();
        let m = message("t", b"x", None);
        drop(f.store().commit_then(
            vec![enqueue(f.store(), m, &[("c", 1)])],
            Box::new(move || {
                let _ = tx.send(());
            }),
        ));
        rx.recv_timeout(Duration::from_secs(5))
            .expect("then ran without the ticket being awaited");
        let q = f.store().read_queue("c", 0, 10).expect("read");
        assert_eq!(
            q.len(),
            1,
            "{}: the commit is readable once then ran",
            f.name()
        );
    }
}
