//! Each persisted item survives a restart of the real `midge` binary (killed with
//! SIGKILL, so nothing is flushed on the way out): retained messages, sessions with their
//! subscriptions and offline queues, in-flight messages (resent with DUP and the same
//! packet identifier), inbound QoS 2 packet identifiers, delayed wills; and what expired
//! while the broker was down is dropped.

mod support;

use bytes::BytesMut;
use midge_proto::{
    decode, encode, ByteStr, Connect, Disconnect, Packet, ProtocolVersion, PubResp, Publish, QoS,
    Subscribe, Will,
};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::{free_port, kill, signal, wait_ready, Dir, MIDGE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A broker process on a data directory that outlives it.
struct Node {
    dir: Dir,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Node {
    async fn start(tag: &str) -> Node {
        Node::start_with(tag, 0).await
    }

    async fn start_with(tag: &str, sys_interval: u32) -> Node {
        let dir = Dir::new(&format!("restart-{tag}"));
        let port = free_port();
        let conf = format!(
            "data_dir = \"{}\"\nsys_interval = {sys_interval}\n[[listener]]\nport = {port}\nbind_address = \"127.0.0.1\"\nallow_anonymous = true\n",
            dir.0.join("data").display()
        );
        std::fs::write(dir.0.join("midge.toml"), conf).expect("config");
        let mut node = Node {
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            dir,
            child: None,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("broker.log"))
            .expect("log file");
        let child = Command::new(MIDGE)
            .arg("-c")
            .arg(self.dir.0.join("midge.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("midge starts");
        self.child = Some(child);
        wait_ready(self.addr).await;
    }

    /// SIGKILL; the data stays for a later `spawn`.
    fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    /// SIGKILL, then start again on the same data.
    async fn crash_and_restart(&mut self) {
        self.crash();
        self.spawn().await;
    }

    /// SIGTERM, waits for the process to exit, then starts again on the same data.
    async fn stop_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "-TERM");
            let status = tokio::task::spawn_blocking(move || c.wait())
                .await
                .expect("join")
                .expect("wait");
            assert!(status.success(), "{status:?}");
        }
        self.spawn().await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.dir.0.join("broker.log")) {
                eprintln!("--- broker log ---\n{log}");
            }
        }
        self.crash();
        // `dir` is removed when the field drops, after the process is gone.
    }
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    session_present: bool,
}

impl Client {
    async fn connect(addr: SocketAddr, id: &str, tweak: impl FnOnce(&mut Connect)) -> Client {
        let stream = TcpStream::connect(addr).await.expect("tcp");
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
            session_present: false,
        };
        let mut connect = Connect {
            protocol: V5,
            clean_start: false,
            keep_alive: 60,
            client_id: ByteStr::from(id),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        };
        connect.properties.session_expiry_interval = Some(3600);
        tweak(&mut connect);
        c.send(&Packet::Connect(Box::new(connect))).await;
        match c.recv().await {
            Packet::ConnAck(a) => {
                assert_eq!(a.reason_code.0, 0, "CONNACK");
                c.session_present = a.session_present;
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode(p, V5, &mut out);
        self.stream.write_all(&out).await.expect("write");
    }

    async fn recv(&mut self) -> Packet {
        loop {
            if let Some(p) = decode(&mut self.buf, V5, 1 << 20).expect("valid packet") {
                return p;
            }
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.stream.read_buf(&mut self.buf))
                    .await
                    .expect("an answer within 10 s")
                    .expect("read");
            assert!(n > 0, "connection closed");
        }
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let mut s = Subscribe {
            packet_id: 1,
            filters: vec![(ByteStr::from(filter), Default::default())],
            properties: Default::default(),
        };
        if let Some((_, o)) = s.filters.first_mut() {
            o.qos = qos;
        }
        self.send(&Packet::Subscribe(s)).await;
        assert!(matches!(self.recv().await, Packet::SubAck(_)));
    }

    /// Publishes and completes the QoS flow.
    async fn publish(
        &mut self,
        topic: &str,
        payload: &str,
        qos: QoS,
        retain: bool,
        tweak: impl FnOnce(&mut Publish),
    ) {
        let mut p = Publish {
            qos,
            retain,
            topic: ByteStr::from(topic),
            packet_id: if qos == QoS::AtMostOnce { 0 } else { 7 },
            payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
            ..Default::default()
        };
        tweak(&mut p);
        self.send(&Packet::Publish(p)).await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => assert!(matches!(self.recv().await, Packet::PubAck(_))),
            QoS::ExactlyOnce => {
                assert!(matches!(self.recv().await, Packet::PubRec(_)));
                self.send(&Packet::PubRel(PubResp::new(7))).await;
                assert!(matches!(self.recv().await, Packet::PubComp(_)));
            }
        }
    }

    async fn recv_publish(&mut self) -> Publish {
        loop {
            if let Packet::Publish(p) = self.recv().await {
                return p;
            }
        }
    }

    /// A PINGREQ round trip: everything sent before it has been handled. A PUBREL resent
    /// after a restart is answered; a PUBLISH fails the test.
    async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        loop {
            match self.recv().await {
                Packet::PingResp => return,
                Packet::PubRel(r) => self.send(&Packet::PubComp(PubResp::new(r.packet_id))).await,
                Packet::Publish(p) => panic!("unexpected PUBLISH {p:?}"),
                _ => {}
            }
        }
    }
}

/// Waits until `$SYS/broker/clients/connected` reads `n` (the broker has processed the
/// connections that went away). Needs `sys_interval` > 0.
async fn wait_connected(c: &mut Client, n: u32) {
    c.subscribe("$SYS/broker/clients/connected", QoS::AtMostOnce)
        .await;
    let want = n.to_string();
    loop {
        let p = c.recv_publish().await;
        if &*p.topic == "$SYS/broker/clients/connected" && p.payload[..] == *want.as_bytes() {
            break;
        }
    }
    let unsub = midge_proto::Unsubscribe {
        packet_id: 2,
        filters: vec![ByteStr::from("$SYS/broker/clients/connected")],
        properties: Default::default(),
    };
    c.send(&Packet::Unsubscribe(unsub)).await;
    loop {
        if let Packet::UnsubAck(_) = c.recv().await {
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_survive() {
    let mut node = Node::start("retained").await;
    let mut p = Client::connect(node.addr, "r-pub", |c| c.clean_start = true).await;
    // QoS 0 retained messages are stored too (nothing waits for them; the QoS 1 PUBACKs
    // below come after their writes, which the store applies in order).
    p.publish("keep/c", "qos0 kept", QoS::AtMostOnce, true, |_| {})
        .await;
    p.publish("keep/d", "qos0 gone", QoS::AtMostOnce, true, |_| {})
        .await;
    p.publish("keep/d", "", QoS::AtMostOnce, true, |_| {}).await;
    p.publish("keep/a", "kept", QoS::AtLeastOnce, true, |_| {})
        .await;
    p.publish("keep/b", "gone", QoS::AtLeastOnce, true, |_| {})
        .await;
    // An empty retained payload deletes it, durably too [MQTT-3.3.1-6].
    p.publish("keep/b", "", QoS::AtLeastOnce, true, |_| {})
        .await;
    node.crash_and_restart().await;
    let mut s = Client::connect(node.addr, "r-sub", |c| c.clean_start = true).await;
    s.subscribe("keep/#", QoS::AtLeastOnce).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let p = s.recv_publish().await;
        assert!(p.retain);
        if p.qos != QoS::AtMostOnce {
            s.send(&Packet::PubAck(PubResp::new(p.packet_id))).await;
        }
        got.push((
            p.topic.to_string(),
            String::from_utf8_lossy(&p.payload).to_string(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("keep/a".to_string(), "kept".to_string()),
            ("keep/c".to_string(), "qos0 kept".to_string())
        ]
    );
    s.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_subscriptions_and_offline_queue_survive() {
    let mut node = Node::start("session").await;
    let mut s = Client::connect(node.addr, "q-sub", |_| {}).await;
    s.subscribe("q/#", QoS::ExactlyOnce).await;
    drop(s);
    let mut p = Client::connect(node.addr, "q-pub", |c| c.clean_start = true).await;
    p.publish("q/1", "one", QoS::AtLeastOnce, false, |_| {})
        .await;
    p.publish("q/2", "two", QoS::ExactlyOnce, false, |_| {})
        .await;
    node.crash_and_restart().await;
    let mut s = Client::connect(node.addr, "q-sub", |_| {}).await;
    assert!(s.session_present, "the session survived [MQTT-3.2.2-2]");
    let a = s.recv_publish().await;
    assert_eq!(&a.payload[..], b"one");
    s.send(&Packet::PubAck(PubResp::new(a.packet_id))).await;
    let b = s.recv_publish().await;
    assert_eq!((&b.payload[..], b.qos), (&b"two"[..], QoS::ExactlyOnce));
    s.send(&Packet::PubRec(PubResp::new(b.packet_id))).await;
    assert!(matches!(s.recv().await, Packet::PubRel(_)));
    s.send(&Packet::PubComp(PubResp::new(b.packet_id))).await;
    // The subscription survived too: a new message reaches the session.
    p = Client::connect(node.addr, "q-pub", |c| c.clean_start = true).await;
    p.publish("q/3", "three", QoS::AtLeastOnce, false, |_| {})
        .await;
    assert_eq!(&s.recv_publish().await.payload[..], b"three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_messages_are_resent_with_dup_and_the_same_packet_id() {
    let mut node = Node::start("inflight").await;
    let mut s = Client::connect(node.addr, "i-sub", |_| {}).await;
    s.subscribe("i/#", QoS::ExactlyOnce).await;
    let mut p = Client::connect(node.addr, "i-pub", |c| c.clean_start = true).await;
    p.publish("i/x", "unacked", QoS::ExactlyOnce, false, |_| {})
        .await;
    let first = s.recv_publish().await; // not acknowledged
                                        // The in-flight marker (written without waiting, when the PUBLISH went out) is in the
                                        // store once a later commit is: the store applies commits in order, and a retained
                                        // QoS 1 message's PUBACK waits for its commit. Without the marker the message would
                                        // still come again with the same packet identifier (derived from its queue position,
                                        // docs/design/persistence.md), but the broker could not know to set DUP.
    p.publish("i-barrier", "x", QoS::AtLeastOnce, true, |_| {})
        .await;
    node.crash_and_restart().await;
    let mut s = Client::connect(node.addr, "i-sub", |_| {}).await;
    let again = s.recv_publish().await;
    assert_eq!(&again.payload[..], b"unacked");
    assert_eq!(
        again.packet_id, first.packet_id,
        "same packet identifier after a restart"
    );
    assert!(again.dup, "resent with DUP [MQTT-4.4.0-1]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_delivery_in_flight_at_a_shutdown_is_resent_with_dup_after_the_restart() {
    // A QoS 1 delivery's in-flight marker is written when its client detaches with it
    // unacknowledged (here: the broker's shutdown ends the connection), not as it is
    // sent (docs/design/persistence.md).
    let mut node = Node::start("inflight-q1").await;
    let mut s = Client::connect(node.addr, "q1-sub", |_| {}).await;
    s.subscribe("q1/#", QoS::AtLeastOnce).await;
    let mut p = Client::connect(node.addr, "q1-pub", |c| c.clean_start = true).await;
    p.publish("q1/x", "unacked", QoS::AtLeastOnce, false, |_| {})
        .await;
    let first = s.recv_publish().await; // not acknowledged
    assert!(!first.dup);
    node.stop_and_restart().await;
    let mut s = Client::connect(node.addr, "q1-sub", |_| {}).await;
    assert!(s.session_present);
    let again = s.recv_publish().await;
    assert_eq!(&again.payload[..], b"unacked");
    assert_eq!(
        again.packet_id, first.packet_id,
        "same packet identifier after a restart"
    );
    assert!(again.dup, "re-delivered with DUP [MQTT-3.3.1-1]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_qos2_packet_ids_survive_so_a_resend_is_not_delivered_twice() {
    let mut node = Node::start("qos2in").await;
    let mut s = Client::connect(node.addr, "x-sub", |_| {}).await;
    // QoS 2 to the subscriber too, so that a copy resent to it after the restart would
    // show up as a PUBLISH only if the publisher's resend had been routed again.
    s.subscribe("x/#", QoS::ExactlyOnce).await;
    let mut p = Client::connect(node.addr, "x-pub", |_| {}).await;
    let publish = Publish {
        qos: QoS::ExactlyOnce,
        topic: ByteStr::from("x/once"),
        packet_id: 42,
        payload: bytes::Bytes::from_static(b"once"),
        ..Default::default()
    };
    p.send(&Packet::Publish(publish.clone())).await;
    assert!(matches!(p.recv().await, Packet::PubRec(_)));
    let got = s.recv_publish().await;
    s.send(&Packet::PubRec(PubResp::new(got.packet_id))).await;
    assert!(matches!(s.recv().await, Packet::PubRel(_)));
    s.send(&Packet::PubComp(PubResp::new(got.packet_id))).await;
    s.ping().await;
    node.crash_and_restart().await;
    // The publisher resends (it has no PUBCOMP yet); the broker still holds packet id 42.
    let mut p = Client::connect(node.addr, "x-pub", |_| {}).await;
    p.send(&Packet::Publish(Publish {
        dup: true,
        ..publish
    }))
    .await;
    assert!(matches!(p.recv().await, Packet::PubRec(_)));
    p.send(&Packet::PubRel(PubResp::new(42))).await;
    match p.recv().await {
        Packet::PubComp(c) => assert_eq!(c.reason_code.0, 0, "the identifier was still held"),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let mut s = Client::connect(node.addr, "x-sub", |_| {}).await;
    s.ping().await; // nothing delivered a second time [MQTT-4.3.3-10]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_and_messages_are_dropped_on_load() {
    let mut node = Node::start_with("expiry", 1).await;
    let mut short = Client::connect(node.addr, "short", |c| {
        c.properties.session_expiry_interval = Some(1)
    })
    .await;
    short.subscribe("e/#", QoS::AtLeastOnce).await;
    drop(short);
    let mut keep = Client::connect(node.addr, "keep", |_| {}).await;
    keep.subscribe("e/#", QoS::AtLeastOnce).await;
    drop(keep);
    let mut p = Client::connect(node.addr, "e-pub", |c| c.clean_start = true).await;
    // Both subscribers must be offline (queued, not in flight) when the messages come.
    wait_connected(&mut p, 1).await;
    p.publish("e/soon", "expires", QoS::AtLeastOnce, false, |p| {
        p.properties.message_expiry_interval = Some(1)
    })
    .await;
    p.publish("e/late", "stays", QoS::AtLeastOnce, false, |_| {})
        .await;
    // The broker is down while both the 1 s session and the 1 s message expire.
    node.crash();
    tokio::time::sleep(Duration::from_millis(1500)).await; // real expiry time must pass
    node.spawn().await;
    let short = Client::connect(node.addr, "short", |_| {}).await;
    assert!(!short.session_present, "the expired session is gone");
    let mut keep = Client::connect(node.addr, "keep", |_| {}).await;
    assert!(keep.session_present);
    let got = keep.recv_publish().await;
    assert_eq!(
        &got.payload[..],
        b"stays",
        "the expired message was dropped [MQTT-3.3.2-5]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_will_survives_and_is_sent_by_the_restarted_broker() {
    let mut node = Node::start_with("will", 1).await;
    let mut watcher = Client::connect(node.addr, "w-watch", |_| {}).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    let mut dying = Client::connect(node.addr, "w-dying", |c| {
        let mut will = Will {
            topic: ByteStr::from("wills/dying"),
            payload: bytes::Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
        };
        will.properties.will_delay_interval = Some(1);
        c.will = Some(will);
    })
    .await;
    dying.ping().await;
    drop(dying); // connection lost: the will waits 1 s
                 // Wait until the broker has seen the connection go, so that the will is pending (and
                 // stored) when the broker is killed.
    wait_connected(&mut watcher, 1).await;
    node.crash_and_restart().await;
    let mut watcher = Client::connect(node.addr, "w-watch", |_| {}).await;
    let will = watcher.recv_publish().await;
    assert_eq!(
        (&*will.topic, &will.payload[..]),
        ("wills/dying", &b"gone"[..])
    );
}

/// A will already due when the broker restarts goes at once, and reaches every
/// subscriber, including sessions the store returns after the will's own (sessions load
/// in client ID order: "a-dying" first, then 400 "z-…" sessions) [MQTT-3.1.3-9].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_due_at_the_restart_reaches_sessions_restored_after_its_own() {
    let mut node = Node::start_with("will-order", 1).await;
    const WATCHERS: usize = 400;
    for i in 0..WATCHERS {
        let mut w = Client::connect(node.addr, &format!("z-watch-{i:03}"), |_| {}).await;
        w.subscribe("wills/#", QoS::AtLeastOnce).await;
    }
    let mut dying = Client::connect(node.addr, "a-dying", |c| {
        c.will = Some(will("wills/a-dying", Some(1), false));
    })
    .await;
    dying.ping().await;
    drop(dying);
    // Only this clean session left connected: the will is pending, and stored.
    let mut probe = Client::connect(node.addr, "probe", |c| {
        c.clean_start = true;
        c.properties.session_expiry_interval = None;
    })
    .await;
    wait_connected(&mut probe, 1).await;
    node.crash();
    tokio::time::sleep(Duration::from_millis(1100)).await; // real delay time must pass
    node.spawn().await;
    let mut last =
        Client::connect(node.addr, &format!("z-watch-{:03}", WATCHERS - 1), |_| {}).await;
    assert!(last.session_present);
    let got = last.recv_publish().await;
    assert_eq!(
        (&*got.topic, &got.payload[..]),
        ("wills/a-dying", &b"offline"[..])
    );
}

fn will(topic: &str, delay: Option<u32>, retain: bool) -> Will {
    let mut will = Will {
        topic: ByteStr::from(topic),
        payload: bytes::Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = delay;
    will
}

/// Topics of the PUBLISHes `c` receives up to and including one on `last`, each
/// acknowledged; resends (DUP, of deliveries unacknowledged before a restart) are left out.
async fn topics_until(c: &mut Client, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let p = c.recv_publish().await;
        if p.qos == QoS::AtLeastOnce {
            c.send(&Packet::PubAck(PubResp::new(p.packet_id))).await;
        }
        if !p.dup {
            seen.push(p.topic.to_string());
        }
        if &*p.topic == last {
            return seen;
        }
    }
}

/// Connects clients with wills to a broker that is then stopped by `stop` (SIGKILL or
/// SIGTERM) and started again: the connections ended without DISCONNECT 0x00, so their
/// wills go [MQTT-3.1.2-8], after their delay counted from the start; a client that
/// disconnected normally before has none [MQTT-3.1.2-10], and one whose will went before
/// the stop does not get it sent twice.
async fn connected_wills_are_sent_after(tag: &str, crash: bool) {
    let mut node = Node::start_with(tag, 1).await;
    let mut watcher = Client::connect(node.addr, "cw-watch", |_| {}).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await;
    // A clean session: its session ends with the connection, so its will goes at once.
    let _clean = Client::connect(node.addr, "cw-clean", |c| {
        c.clean_start = true;
        c.properties.session_expiry_interval = None;
        c.will = Some(will("wills/clean", Some(600), true));
    })
    .await;
    // A persistent session with a 1 s delay, that does not come back.
    let _away = Client::connect(node.addr, "cw-away", |c| {
        c.will = Some(will("wills/away", Some(1), false));
    })
    .await;
    // Its connection drops before the stop: its will goes then, and not again.
    let dropped = Client::connect(node.addr, "cw-dropped", |c| {
        c.will = Some(will("wills/dropped", None, false));
    })
    .await;
    drop(dropped);
    assert_eq!(
        topics_until(&mut watcher, "wills/dropped").await,
        ["wills/dropped"]
    );
    let mut gone = Client::connect(node.addr, "cw-gone", |c| {
        c.will = Some(will("wills/gone", None, false));
    })
    .await;
    gone.send(&Packet::Disconnect(Disconnect {
        reason_code: midge_proto::ReasonCode::NORMAL_DISCONNECTION,
        properties: Default::default(),
    }))
    .await;
    // The broker has seen it go (and deleted its will) ...
    wait_connected(&mut watcher, 3).await;
    // ... and everything it wrote before is in the store: a QoS 1 PUBLISH to a
    // persistent subscriber is acknowledged once its record is, after all earlier ones.
    let mut publisher = Client::connect(node.addr, "cw-pub", |c| c.clean_start = true).await;
    publisher
        .publish("wills/barrier", "b", QoS::AtLeastOnce, false, |_| {})
        .await;
    assert_eq!(
        topics_until(&mut watcher, "wills/barrier").await,
        ["wills/barrier"]
    );
    // The watcher's acknowledgements are in the store too: its SUBACK waits for a commit
    // made after them (else a delivery whose PUBACK the crash lost comes again).
    watcher.subscribe("sync/acks", QoS::AtLeastOnce).await;
    drop(publisher);
    if crash {
        node.crash_and_restart().await;
    } else {
        node.stop_and_restart().await;
    }

    let mut watcher = Client::connect(node.addr, "cw-watch", |_| {}).await;
    assert!(watcher.session_present);
    let mut publisher = Client::connect(node.addr, "cw-pub", |c| c.clean_start = true).await;
    publisher
        .publish("wills/marker", "m", QoS::AtLeastOnce, false, |_| {})
        .await;
    // Wills due at the start were queued for the watcher's session before the marker;
    // cw-away's goes 1 s after the start (before the marker on a slow machine).
    let mut seen = topics_until(&mut watcher, "wills/marker").await;
    if !seen.iter().any(|t| t == "wills/away") {
        seen.extend(topics_until(&mut watcher, "wills/away").await);
    }
    seen.retain(|t| t != "wills/away");
    assert_eq!(
        seen,
        ["wills/clean", "wills/marker"],
        "none for cw-gone, none again for cw-dropped"
    );
    // The retained will is kept for later subscribers.
    let mut late = Client::connect(node.addr, "cw-late", |c| c.clean_start = true).await;
    late.subscribe("wills/clean", QoS::AtLeastOnce).await;
    let retained = late.recv_publish().await;
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], b"offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_of_clients_connected_at_a_crash_are_sent_by_the_restarted_broker() {
    connected_wills_are_sent_after("crash-wills", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wills_of_clients_connected_at_a_shutdown_are_sent_at_the_next_start() {
    connected_wills_are_sent_after("stop-wills", false).await;
}
