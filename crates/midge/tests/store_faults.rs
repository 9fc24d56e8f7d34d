//! Store faults at run time on the real binary (issue 11): the data directory removed,
//! replaced (by hand and by a second `midge` on the same directory), made read-only
//! (`chattr +i`: the tests run as root, where permissions stop no write), and a full disk
//! (a 2 MB tmpfs mounted in the broker's own mount namespace, `unshare -m`).
//!
//! In each case the broker logs the fault once, raises the alarm in
//! `$SYS/broker/store/status`, acknowledges no QoS 1 message it could not store,
//! keeps serving clients that need no store, and SIGTERM ends it within
//! `shutdown_timeout` (2 s here) with exit code 1. A second broker never opens a store a
//! running one holds, and says which process holds it.

mod support;

use bytes::BytesMut;
use midge_proto::{
    decode, encode, ByteStr, Connect, Packet, ProtocolVersion, Publish, QoS, Subscribe,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{free_port, output_within, wait_for_port, Proc, MIDGE, WAIT};

const V5: ProtocolVersion = ProtocolVersion::V5;
/// `shutdown_timeout` of every broker here.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// What process start-up and scheduling may add to it.
const SLACK: Duration = Duration::from_millis(1500);
const ALARM_TOPIC: &str = "$SYS/broker/store/status";

/// A directory for one test under the build's own temporary directory (a real disk
/// file system, where `chattr +i` works; /tmp may be a tmpfs), removed on drop even when
/// made immutable.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("store-faults-{name}"));
        unfreeze(&p);
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("dir");
        TestDir(std::fs::canonicalize(&p).expect("canonical"))
    }

    fn data(&self) -> PathBuf {
        self.0.join("data")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        unfreeze(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unfreeze(dir: &Path) {
    if dir.exists() {
        let _ = Command::new("chattr").arg("-R").arg("-i").arg(dir).status();
    }
}

/// Writes the broker's configuration: `data_dir`, a loopback listener on `port`,
/// `$SYS` every second, a 2 s shutdown timeout, fsync on every commit.
fn write_config(dir: &Path, data: &Path, port: u16) -> PathBuf {
    let conf = format!(
        "data_dir = \"{}\"\nfsync = \"always\"\nsys_interval = 1\nshutdown_timeout = {}\n\
         [[listener]]\nport = {port}\nbind_address = \"127.0.0.1\"\nallow_anonymous = true\n",
        data.display(),
        SHUTDOWN_TIMEOUT.as_secs()
    );
    let path = dir.join("midge.toml");
    std::fs::write(&path, conf).expect("config");
    path
}

/// A broker process (or a shell running it), its standard error read line by line.
struct Broker {
    proc: Proc,
}

const LOG: (&str, &str) = ("RUST_LOG", "info,fjall=warn,lsm_tree=error");

impl Broker {
    fn start(config: &Path, port: u16) -> Broker {
        let config = config.to_str().expect("utf-8");
        let mut proc = Proc::spawn_with(MIDGE, &["-c", config], &[LOG], true);
        proc.name = "broker".into();
        proc.wait_for("midge 0.1.0 running");
        wait_for_port(port);
        Broker { proc }
    }

    /// Runs `script` with `sh` in a new mount namespace; the script starts the broker.
    fn start_in_namespace(script: &str, port: u16) -> Broker {
        let mut proc = Proc::spawn_with("unshare", &["-m", "sh", "-c", script], &[LOG], true);
        proc.name = "unshare".into();
        proc.wait_for("midge 0.1.0 running");
        wait_for_port(port);
        Broker { proc }
    }

    fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// SIGTERM; returns the exit code and how long the process took to exit.
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        self.proc.signal("-TERM");
        let code = self.proc.wait_exit();
        (code, started.elapsed())
    }

    /// The first line containing `needle`, among those read so far or the next ones.
    fn line(&mut self, needle: &str) -> String {
        match self.proc.seen.iter().find(|l| l.contains(needle)) {
            Some(l) => l.clone(),
            None => self.proc.wait_for(needle),
        }
    }

    /// How many lines so far contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.proc.seen.iter().filter(|l| l.contains(needle)).count()
    }
}

/// SIGKILLs a process that is no child of the test on drop.
struct KillOnDrop(Option<String>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = &self.0 {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// Asserts that a SIGTERM'd broker took at most `shutdown_timeout` (and some slack).
fn assert_in_time(what: &str, took: Duration) {
    eprintln!("{what}: exited {took:?} after SIGTERM");
    assert!(
        took <= SHUTDOWN_TIMEOUT + SLACK,
        "{what}: took {took:?} to exit after SIGTERM"
    );
}

/// A blocking MQTT 5 client, enough for these tests.
struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

/// What came back for a QoS 1 PUBLISH.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// PUBACK with a success code: the message is stored.
    Stored,
    /// PUBACK with an error code, a DISCONNECT, or the connection closed.
    Refused(String),
}

impl Client {
    /// Connects with `expiry` seconds of session expiry (0: a session that ends with
    /// the connection, which the store does not keep).
    fn connect(port: u16, id: &str, expiry: u32) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("tcp");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut c = Client {
            stream,
            buf: BytesMut::new(),
        };
        let mut connect = Connect {
            protocol: V5,
            clean_start: expiry == 0,
            keep_alive: 60,
            client_id: ByteStr::from(id),
            will: None,
            username: None,
            password: None,
            properties: Default::default(),
        };
        connect.properties.session_expiry_interval = Some(expiry);
        c.send(&Packet::Connect(Box::new(connect)));
        match c.recv() {
            Some(Packet::ConnAck(a)) => assert_eq!(a.reason_code.0, 0, "CONNACK"),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        c
    }

    fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode(p, V5, &mut out);
        // A closed connection shows on the next read.
        let _ = self.stream.write_all(&out);
    }

    /// The next packet; `None` once the broker closed the connection. Fails the test
    /// after [`WAIT`] without one.
    fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = decode(&mut self.buf, V5, 1 << 20).expect("valid packet") {
                return Some(p);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("no packet within {WAIT:?}: {e}"),
            }
        }
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) {
        let mut s = Subscribe {
            packet_id: 1,
            filters: vec![(ByteStr::from(filter), Default::default())],
            properties: Default::default(),
        };
        s.filters[0].1.qos = qos;
        self.send(&Packet::Subscribe(s));
        loop {
            match self.recv() {
                Some(Packet::SubAck(_)) => return,
                Some(_) => {}
                None => panic!("closed before SUBACK"),
            }
        }
    }

    /// Publishes at QoS 1 and says what came back.
    fn publish(&mut self, topic: &str, payload: Vec<u8>, packet_id: u16) -> Answer {
        self.send(&Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: ByteStr::from(topic),
            packet_id,
            payload: payload.into(),
            ..Default::default()
        }));
        loop {
            match self.recv() {
                Some(Packet::PubAck(a)) if a.packet_id == packet_id => {
                    return if a.reason_code.0 < 0x80 {
                        Answer::Stored
                    } else {
                        Answer::Refused(format!("PUBACK {:?}", a.reason_code))
                    };
                }
                Some(Packet::Disconnect(d)) => {
                    return Answer::Refused(format!("DISCONNECT {:?}", d.reason_code))
                }
                Some(_) => {}
                None => return Answer::Refused("connection closed".into()),
            }
        }
    }

    /// The next PUBLISH on `topic` (acknowledged if QoS 1).
    fn recv_publish(&mut self, topic: &str) -> Publish {
        loop {
            match self.recv() {
                Some(Packet::Publish(p)) if &*p.topic == topic => {
                    if p.qos == QoS::AtLeastOnce {
                        self.send(&Packet::PubAck(midge_proto::PubResp::new(p.packet_id)));
                    }
                    return p;
                }
                Some(_) => {}
                None => panic!("closed while waiting for a message on {topic}"),
            }
        }
    }

    /// Waits for the store alarm to read something other than `ok`; returns it.
    fn wait_for_alarm(&mut self) -> String {
        loop {
            let p = self.recv_publish(ALARM_TOPIC);
            let value = String::from_utf8_lossy(&p.payload).into_owned();
            if value != "ok" {
                return value;
            }
        }
    }
}

/// `len` bytes starting with `n` as six digits, the rest noise that does not compress
/// (the store's journal compresses, and must really fill the disk).
fn incompressible(n: u32, len: usize) -> Vec<u8> {
    let mut payload = format!("{n:06}").into_bytes();
    let mut x = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while payload.len() < len {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        payload.extend_from_slice(&x.to_le_bytes());
    }
    payload.truncate(len);
    payload
}

/// A monitor: a session the store does not keep, watching the alarm and a plain topic.
fn monitor(port: u16) -> Client {
    let mut m = Client::connect(port, "monitor", 0);
    m.subscribe(ALARM_TOPIC, QoS::AtMostOnce);
    let first = m.recv_publish(ALARM_TOPIC);
    assert_eq!(&first.payload[..], b"ok", "the store starts healthy");
    m.subscribe("plain/#", QoS::AtLeastOnce);
    m
}

/// A persistent session subscribed to `queued/#`, then gone: QoS 1 messages to it must
/// be stored before they are acknowledged.
fn offline_subscriber(port: u16) {
    let mut s = Client::connect(port, "keeper", 3600);
    s.subscribe("queued/#", QoS::AtLeastOnce);
    drop(s);
}

/// The monitor's session needs no store: a QoS 1 round trip through it still works.
fn assert_clients_without_store_work(m: &mut Client) {
    assert_eq!(
        m.publish("plain/x", b"still here".to_vec(), 9),
        Answer::Stored
    );
    assert_eq!(&m.recv_publish("plain/x").payload[..], b"still here");
}

/// After the fault, a QoS 1 message for the persistent session is not acknowledged.
fn assert_publish_refused(port: u16) {
    let mut p = Client::connect(port, "publisher", 0);
    let answer = p.publish("queued/x", b"after the fault".to_vec(), 1);
    assert!(
        matches!(answer, Answer::Refused(_)),
        "acknowledged after the store failed: {answer:?}"
    );
}

#[test]
fn a_removed_data_directory_raises_the_alarm_and_sigterm_ends_the_broker_in_time() {
    let dir = TestDir::new("removed");
    let port = free_port();
    let config = write_config(&dir.0, &dir.data(), port);
    let mut broker = Broker::start(&config, port);
    let mut m = monitor(port);
    offline_subscriber(port);

    std::fs::remove_dir_all(dir.data()).expect("rm -rf");
    let line = broker.proc.wait_for("was removed or replaced");
    assert!(line.contains("ERROR"), "{line}");
    let alarm = m.wait_for_alarm();
    assert!(alarm.contains("was removed or replaced"), "{alarm}");
    assert_publish_refused(port);
    assert_clients_without_store_work(&mut m);

    let (code, took) = broker.terminate();
    assert_in_time("removed", took);
    assert_eq!(code, Some(1), "a store that stopped saving is a failed run");
    let logged = broker
        .proc
        .seen
        .iter()
        .filter(|l| l.contains("midge_store") && l.contains("was removed or replaced"))
        .count();
    assert_eq!(logged, 1, "logged once");
}

#[test]
fn a_second_broker_refuses_a_store_in_use_even_after_the_directory_was_replaced() {
    let dir = TestDir::new("replaced");
    let port = free_port();
    let config = write_config(&dir.0, &dir.data(), port);
    let mut first = Broker::start(&config, port);
    let mut m = monitor(port);
    let refusal = format!(
        "the store in {} is in use by another process (pid {})",
        dir.data().display(),
        first.pid()
    );
    let second = || {
        let mut cmd = Command::new(MIDGE);
        cmd.arg("-c").arg(&config).env(LOG.0, LOG.1);
        let out = output_within(cmd, None, WAIT);
        (out.status.code(), support::text(&out.stderr))
    };

    // The same directory.
    let (code, stderr) = second();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&refusal), "{stderr}");

    // The directory replaced (the first broker's lock file went with it).
    std::fs::remove_dir_all(dir.data()).expect("rm -rf");
    std::fs::create_dir(dir.data()).expect("mkdir");
    let (code, stderr) = second();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&refusal), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    for action in ["check", "repair"] {
        let out = support::run(
            MIDGE,
            &["store", action, dir.data().to_str().expect("utf-8")],
        );
        let text = support::text(&out.stdout) + &support::text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{action}: {text}");
        assert!(
            text.contains(&format!("pid {}", first.pid())),
            "{action}: {text}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.data()).expect("dir").count(),
        0,
        "nothing wrote into the new directory"
    );

    // The first broker notices, says so and stops in time.
    first.line("was removed or replaced");
    let alarm = m.wait_for_alarm();
    assert!(alarm.contains("was removed or replaced"), "{alarm}");
    let (code, took) = first.terminate();
    assert_in_time("replaced", took);
    assert_eq!(code, Some(1));
    // Once it is gone, the directory is free.
    let mut third = Broker::start(&config, port);
    let (code, took) = third.terminate();
    assert_in_time("restart on the new directory", took);
    assert_eq!(code, Some(0));
}

#[test]
fn a_read_only_data_directory_refuses_acknowledgements_and_sigterm_ends_the_broker_in_time() {
    let dir = TestDir::new("read-only");
    let port = free_port();
    let config = write_config(&dir.0, &dir.data(), port);
    let mut broker = Broker::start(&config, port);
    let mut m = monitor(port);
    offline_subscriber(port);
    let mut p = Client::connect(port, "publisher-before", 0);
    assert_eq!(p.publish("queued/x", b"before".to_vec(), 1), Answer::Stored);

    // Root ignores permissions: immutable files refuse even writes through descriptors
    // opened before.
    let frozen = Command::new("chattr")
        .arg("-R")
        .arg("+i")
        .arg(dir.data())
        .status()
        .expect("chattr runs");
    assert!(frozen.success(), "chattr +i");
    assert_publish_refused(port);
    let line = broker.line("store write failed");
    assert!(line.contains("ERROR"), "{line}");
    let alarm = m.wait_for_alarm();
    assert!(alarm.contains("Operation not permitted"), "{alarm}");
    assert_clients_without_store_work(&mut m);
    // Every publisher after the first is refused at once, and the fault is logged once.
    assert_publish_refused(port);
    assert_eq!(broker.count("the store refuses every write from now on"), 1);

    let (code, took) = broker.terminate();
    assert_in_time("read-only", took);
    assert_eq!(code, Some(1));
}

/// A broker on a 2 MB tmpfs mounted in its own mount namespace, with `filler` 64 KB
/// blocks of it taken by a file; once the first broker exits, the filler is removed and a
/// second broker starts on the same store (the shell becomes it). Returns the shell, the
/// first broker's pid (killed on drop) and the port.
fn small_disk(dir: &TestDir, filler: u32) -> (Broker, KillOnDrop, u16) {
    let mount = dir.0.join("small");
    std::fs::create_dir(&mount).expect("mount point");
    let data = mount.join("data");
    let port = free_port();
    let config = write_config(&dir.0, &data, port);
    let midge = MIDGE;
    let script = format!(
        "set -e; mount -t tmpfs -o size=2m tmpfs '{mount}'; \
         dd if=/dev/zero of='{mount}/filler' bs=64k count={filler} 2>/dev/null; \
         set +e; '{midge}' -c '{config}' & pid=$!; echo \"first broker pid $pid\" >&2; \
         wait $pid; echo \"first broker exit $?\" >&2; \
         rm '{mount}/filler'; exec '{midge}' -c '{config}'",
        mount = mount.display(),
        config = config.display(),
    );
    let mut broker = Broker::start_in_namespace(&script, port);
    let pid_line = broker.line("first broker pid ");
    let pid = pid_line.rsplit(' ').next().expect("pid").to_owned();
    (broker, KillOnDrop(Some(pid)), port)
}

/// SIGTERMs the first broker of [`small_disk`]; its exit line and how long it took.
fn terminate_first(broker: &mut Broker, first: &mut KillOnDrop) -> (String, Duration) {
    let pid = first.0.clone().expect("running");
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = broker.proc.wait_for("first broker exit ");
    first.0 = None;
    (exit, started.elapsed())
}

/// The persistent session's queued messages, by number, until `want` of them came.
fn drain_keeper(port: u16, want: usize) -> Vec<u32> {
    let mut keeper = Client::connect(port, "keeper", 3600);
    let mut delivered = Vec::new();
    while delivered.len() < want {
        let msg = keeper.recv_publish("queued/x");
        let n: u32 = std::str::from_utf8(&msg.payload[..6])
            .expect("text")
            .parse()
            .expect("number");
        delivered.push(n);
    }
    delivered
}

#[test]
fn a_store_that_cannot_flush_at_shutdown_still_exits_in_time_and_keeps_its_journal() {
    let dir = TestDir::new("flush-full");
    // Room for the journal, not for the table files the close writes after it.
    let (mut broker, mut first, port) = small_disk(&dir, 8);
    offline_subscriber(port);
    let mut p = Client::connect(port, "publisher", 0);
    let sent: Vec<u32> = (0..40).collect();
    for &n in &sent {
        let id = u16::try_from(n + 1).expect("id");
        assert_eq!(
            p.publish("queued/x", incompressible(n, 20_000), id),
            Answer::Stored
        );
    }
    drop(p);
    let (exit, took) = terminate_first(&mut broker, &mut first);
    assert_in_time("flush on a full disk", took);
    assert!(exit.ends_with("exit 1"), "{exit}");
    // The store's close hung (fjall waits for a flush that failed) and was left behind.
    assert_eq!(
        broker.count("the store did not close within the shutdown timeout"),
        1
    );
    broker.proc.wait_for("midge 0.1.0 running");
    wait_for_port(port);
    assert_eq!(drain_keeper(port, sent.len()), sent);
    let (code, took) = broker.terminate();
    assert_in_time("flush on a full disk, second run", took);
    assert_eq!(code, Some(0));
}

#[test]
fn a_full_disk_refuses_acknowledgements_keeps_other_clients_working_and_loses_nothing_acknowledged()
{
    let dir = TestDir::new("disk-full");
    let (mut broker, mut first, port) = small_disk(&dir, 8);
    let mut m = monitor(port);
    offline_subscriber(port);

    // Publish until the store refuses; each acknowledged message is remembered.
    let mut acknowledged = Vec::new();
    let mut refused = None;
    let mut p = Client::connect(port, "publisher", 0);
    for n in 0..1000u32 {
        let payload = incompressible(n, 20_000);
        match p.publish(
            "queued/x",
            payload,
            u16::try_from(n % 60_000 + 1).expect("id"),
        ) {
            Answer::Stored => acknowledged.push(n),
            Answer::Refused(why) => {
                refused = Some(why);
                break;
            }
        }
    }
    let refused = refused.expect("the 2 MB disk filled up");
    eprintln!(
        "disk full: {} messages acknowledged, then {refused}",
        acknowledged.len()
    );
    assert!(!acknowledged.is_empty());
    broker.line("store write failed");
    let alarm = m.wait_for_alarm();
    assert!(alarm.contains("No space left on device"), "{alarm}");
    assert_publish_refused(port);
    assert_clients_without_store_work(&mut m);
    assert_eq!(broker.count("the store refuses every write from now on"), 1);
    drop(m);

    // SIGTERM the first broker (the shell's child).
    let (exit, took) = terminate_first(&mut broker, &mut first);
    assert_in_time("disk full", took);
    assert!(exit.ends_with("exit 1"), "{exit}");

    // The second run, with room again, delivers every acknowledged message.
    broker.proc.wait_for("midge 0.1.0 running");
    wait_for_port(port);
    let delivered = drain_keeper(port, acknowledged.len());
    assert_eq!(delivered, acknowledged, "an acknowledged message was lost");
    let (code, took) = broker.terminate();
    assert_in_time("disk full, second run", took);
    assert_eq!(code, Some(0));
}
