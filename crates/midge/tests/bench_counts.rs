//! `midge bench` reports the right counts against a real Midge broker (the `midge` binary
//! on a free loopback port). Each run is bounded by its own `--count`/`--duration` and the
//! stall timeout, so a broken broker fails the test instead of hanging it.

mod support;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, kill, wait_for_port, write_tls_files, MIDGE};

/// A `midge` broker process, killed on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        let port = free_port();
        Broker::spawn(port, &["-p", &port.to_string(), "--no-persistence"])
    }

    /// Runs `midge ARGS`, which listens on `port`, and waits until it accepts.
    fn spawn<S: AsRef<std::ffi::OsStr>>(port: u16, args: &[S]) -> Broker {
        let child = Command::new(MIDGE)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("midge starts");
        let broker = Broker { child, port };
        wait_for_port(port);
        broker
    }

    /// A broker whose only listener is TLS (a certificate for localhost and 127.0.0.1 in
    /// `dir`); returns it and the CA file.
    fn start_tls(dir: &std::path::Path) -> (Broker, String) {
        let port = free_port();
        let cafile = write_tls_files(dir);
        let d = dir.display();
        let conf = dir.join("broker.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n\
                 certfile {d}/server.pem\nkeyfile {d}/server.key\npersistence false\n"
            ),
        )
        .expect("conf");
        let broker = Broker::spawn(port, &[std::ffi::OsStr::new("-c"), conf.as_os_str()]);
        (broker, cafile)
    }

    fn bench(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(MIDGE);
        cmd.arg("bench")
            .arg(args[0])
            .args(["-p", &self.port.to_string(), "--no-progress"])
            .args(&args[1..]);
        cmd
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn run_json(mut cmd: Command) -> Value {
    let out = cmd.arg("--json").output().expect("midge bench runs");
    let v = json_of(&out);
    assert!(out.status.success(), "midge bench failed: {v}");
    v
}

#[test]
fn two_publishers_of_100_qos1_messages_reach_a_wildcard_subscriber_200_times() {
    let broker = Broker::start();
    let mut sub = broker
        .bench(&[
            "sub",
            "-t",
            "bench/#",
            "-q",
            "1",
            "--count",
            "200",
            "--duration",
            "30",
        ])
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sub starts");
    // The subscriber says when it is subscribed; publish only then.
    let mut stderr = BufReader::new(sub.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("1/1 subscribed") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("read") > 0,
            "sub ended early"
        );
    }

    let p = run_json(broker.bench(&["pub", "-c", "2", "-q", "1", "--count", "100"]));
    assert_eq!(p["sent"], 200);
    assert_eq!(p["completed"], 200);
    assert_eq!(p["connected"], 2);

    let out = sub.wait_with_output().expect("sub ends");
    let s = json_of(&out);
    assert!(out.status.success(), "sub failed: {s}");
    assert_eq!(s["received"], 200);
    assert_eq!(s["duplicates"], 0);
    assert_eq!(s["gaps"], 0);
    assert_eq!(s["latency_us"]["count"], 200);
}

#[test]
fn conn_opens_50_connections_and_reads_the_broker_rss() {
    let broker = Broker::start();
    let pid = broker.child.id().to_string();
    let v = run_json(broker.bench(&["conn", "-c", "50", "--hold", "0", "--broker-pid", &pid]));
    assert_eq!(v["connected"], 50);
    assert_eq!(v["connect_failed"], 0);
    assert_eq!(v["closed_early"], 0);
    assert!(
        v["broker_rss_after_kb"].as_u64().is_some_and(|kb| kb > 0),
        "{v}"
    );
}

#[test]
fn conn_and_pubsub_run_over_tls_and_time_each_handshake() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (broker, cafile) = Broker::start_tls(dir.path());
    let v = run_json(broker.bench(&["conn", "-c", "20", "--hold", "0", "--cafile", &cafile]));
    assert_eq!(v["connected"], 20, "{v}");
    assert_eq!(v["connect_failed"], 0, "{v}");
    // One handshake time per connection, TLS included, so above zero.
    assert_eq!(v["handshake_us"]["count"], 20, "{v}");
    assert!(
        v["handshake_us"]["p50"].as_f64().is_some_and(|us| us > 0.0),
        "{v}"
    );
    // The data path over TLS: QoS 1 counts exact, in order.
    let v = run_json(broker.bench(&[
        "pubsub",
        "--pubs",
        "2",
        "--subs",
        "2",
        "--pub-topic",
        "tls/%i",
        "--sub-topic",
        "tls/#",
        "-q",
        "1",
        "-s",
        "64",
        "--count",
        "500",
        "--cafile",
        &cafile,
    ]));
    assert_eq!(v["sent"], 1000, "{v}");
    assert_eq!(v["completed"], 1000, "{v}");
    assert_eq!(v["received"], 2000, "{v}");
    assert_eq!(
        (&v["duplicates"], &v["gaps"]),
        (&Value::from(0), &Value::from(0)),
        "{v}"
    );
    // A server certificate from another CA: the handshake fails, counted, not connected.
    let other = tempfile::tempdir().expect("temp dir");
    let other_ca = write_tls_files(other.path());
    let v = json_of(
        &broker
            .bench(&["conn", "-c", "1", "--hold", "0", "--cafile", &other_ca])
            .arg("--json")
            .output()
            .expect("midge bench runs"),
    );
    assert_eq!(
        (&v["connected"], &v["connect_failed"]),
        (&Value::from(0), &Value::from(1)),
        "{v}"
    );
}

#[test]
fn conn_spreads_connections_over_source_addresses() {
    let broker = Broker::start();
    let v = run_json(broker.bench(&["conn", "-c", "30", "--hold", "0", "--ifaddr", "127.0.0.1-3"]));
    assert_eq!(v["connected"], 30, "{v}");
    assert_eq!(v["connect_failed"], 0, "{v}");
}

/// `--processes 3`: three load processes, each with its own share and index range (no
/// two with one client identifier: the broker would close one of them, counted as
/// `closed_early`), summed into one summary.
#[test]
fn conn_over_several_processes_opens_every_connection_once() {
    let broker = Broker::start();
    let pid = broker.child.id().to_string();
    let v = run_json(broker.bench(&[
        "conn",
        "-c",
        "60",
        "--processes",
        "3",
        "--hold",
        "0",
        "--broker-pid",
        &pid,
    ]));
    assert_eq!(v["processes"], 3, "{v}");
    assert_eq!(v["connected"], 60, "{v}");
    assert_eq!(v["connect_failed"], 0, "{v}");
    assert_eq!(v["closed_early"], 0, "{v}");
    assert!(v["bench_rss_kb"].as_u64().is_some_and(|kb| kb > 0), "{v}");
    assert!(
        v["broker_rss_after_kb"].as_u64().is_some_and(|kb| kb > 0),
        "{v}"
    );
}

/// With an open-files limit too low for `-c` in one process, `conn` spreads the load over
/// as many processes as it needs, by itself.
#[test]
fn conn_splits_itself_when_one_process_may_not_open_enough_files() {
    use std::os::unix::process::CommandExt;
    let broker = Broker::start();
    let mut cmd = broker.bench(&["conn", "-c", "400", "--hold", "0"]);
    // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| rlimit::setrlimit(rlimit::Resource::NOFILE, 200, 200));
    }
    let v = run_json(cmd);
    // 200 files less 64 kept aside: 136 connections a process, so 3 processes.
    assert_eq!(v["processes"], 3, "{v}");
    assert_eq!(v["connected"], 400, "{v}");
    assert_eq!(v["connect_failed"], 0, "{v}");
    assert_eq!(v["closed_early"], 0, "{v}");
}

#[test]
fn pubsub_counts_are_exact_at_every_qos_and_version() {
    let broker = Broker::start();
    for version in ["3", "4", "5"] {
        for qos in ["0", "1", "2"] {
            let v = run_json(broker.bench(&[
                "pubsub", "-V", version, "-q", qos, "--pubs", "3", "--subs", "2", "--count", "50",
                "--size", "64",
            ]));
            let what = format!("MQTT {version} QoS {qos}: {v}");
            assert_eq!(v["sent"], 150, "{what}");
            assert_eq!(v["expected"], 300, "{what}");
            assert_eq!(v["received"], 300, "{what}");
            assert_eq!(v["lost"], 0, "{what}");
            assert_eq!(v["duplicates"], 0, "{what}");
            if qos != "0" {
                assert_eq!(v["completed"], 150, "{what}");
            }
        }
    }
}

#[test]
fn pubsub_pairs_stop_after_the_duration_and_print_a_text_summary() {
    let broker = Broker::start();
    let started = Instant::now();
    let out = broker
        .bench(&[
            "pubsub",
            "--pubs",
            "20",
            "--subs",
            "20",
            "--sub-topic",
            "bench/%i",
            "-q",
            "1",
            "--rate",
            "200",
            "--duration",
            "1",
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        text.contains("20 of 40 expected") || text.contains("received"),
        "{text}"
    );
    // 20 pairs at 200 msg/s for 1 s: about 4,000, each pair exactly once.
    let received: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("received"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .expect("received line");
    assert!((2_000..=6_000).contains(&received), "{text}");
    assert!(text.contains(", 0 lost"), "{text}");
}

#[test]
fn session_expiry_gives_subscribers_a_persistent_session_that_queues_while_they_are_away() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let data = dir.path().join("data");
    let broker = Broker::spawn(
        port,
        &[
            std::ffi::OsStr::new("-p"),
            std::ffi::OsStr::new(&port.to_string()),
            std::ffi::OsStr::new("--data-dir"),
            data.as_os_str(),
        ],
    );
    let v = run_json(broker.bench(&[
        "pubsub",
        "--pubs",
        "2",
        "--subs",
        "1",
        "-q",
        "1",
        "--count",
        "50",
        "--session-expiry",
        "600",
        "--id-prefix",
        "keep-",
    ]));
    assert_eq!(v["received"], 100, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    // The subscriber `keep-s0` (3.1.1, clean session 0) has left; its session stays and
    // queues what is published meanwhile [MQTT-3.1.2-4, MQTT-3.1.2-5].
    let publish = Command::new(MIDGE)
        .args([
            "pub",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            "bench/away",
            "-m",
            "queued",
        ])
        .status()
        .expect("midge pub runs");
    assert!(publish.success());
    let out = Command::new(MIDGE)
        .args([
            "sub",
            "-p",
            &port.to_string(),
            "-c",
            "-i",
            "keep-s0",
            "-q",
            "1",
        ])
        .args(["-t", "bench/#", "-C", "1", "-W", "10"])
        .output()
        .expect("midge sub runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "queued");
}
