//! `midge pub`, `midge sub` and `midge rr` against Mosquitto's own tools, on the Midge
//! broker (this package's binary) and on a real Mosquitto broker started by each test:
//! messages cross in both directions, and errors read and exit the same way.
//!
//! No sleeps for synchronisation: a subscriber is ready when its `-d` output says
//! "Subscribed", a broker when its port accepts a connection.

mod support;

use midge_client::{Client, ConnectOptions, Message, ProtocolVersion, QoS};
use std::io::Write;
use std::process::{Command, Output};
use std::sync::mpsc;
use support::{
    free_port, mosquitto_sub, output_within, text, wait_for_port, write_tls_files, Proc, MIDGE,
    WAIT,
};

/// Which broker a test runs against.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Midge,
    Mosquitto,
}

struct Broker {
    port: u16,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// Starts a broker listening on 127.0.0.1 with a mosquitto.conf (which Midge reads too).
fn broker(kind: Kind, allow_anonymous: bool) -> Broker {
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("broker.conf");
    let mut file = std::fs::File::create(&conf).expect("conf");
    writeln!(file, "listener {port} 127.0.0.1").expect("write");
    writeln!(file, "allow_anonymous {allow_anonymous}").expect("write");
    drop(file);
    start_broker(kind, port, dir)
}

/// Starts `kind` with `dir`'s `broker.conf`, which listens on `port`, once the port
/// accepts connections.
fn start_broker(kind: Kind, port: u16, dir: tempfile::TempDir) -> Broker {
    let conf = dir.path().join("broker.conf");
    let conf = conf.to_str().expect("utf-8 path").to_string();
    let proc = match kind {
        Kind::Midge => Proc::spawn(MIDGE, &["-c", &conf]),
        Kind::Mosquitto => Proc::spawn("/usr/sbin/mosquitto", &["-c", &conf]),
    };
    wait_for_port(port);
    Broker {
        port,
        _proc: proc,
        _dir: dir,
    }
}

fn midge(tool: &str, args: &[&str]) -> Output {
    let mut all = vec![tool];
    all.extend_from_slice(args);
    run(MIDGE, &all, None)
}

/// Runs `program` to completion with `stdin`; some runs wait up to 10 s (`-W 10`) by
/// design, so the deadline is longer than that.
fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    output_within(cmd, stdin, 3 * WAIT)
}

fn midge_sub_receives_from_mosquitto_pub(kind: Kind) {
    let b = broker(kind, true);
    let port = b.port.to_string();
    for version in ["31", "311", "5"] {
        let topic = format!("interop/{version}");
        let mut sub = Proc::spawn(
            MIDGE,
            &[
                "sub",
                "-p",
                &port,
                "-t",
                "interop/#",
                "-q",
                "1",
                "-v",
                "-d",
                "-V",
                version,
                "-C",
                "1",
            ],
        );
        sub.wait_for("Subscribed (mid: 1): 1");
        let out = run(
            "mosquitto_pub",
            &[
                "-p",
                &port,
                "-t",
                &topic,
                "-m",
                "hello from mosquitto",
                "-q",
                "1",
                "-V",
                version,
            ],
            None,
        );
        assert!(out.status.success(), "mosquitto_pub: {}", text(&out.stderr));
        let line = sub.wait_for("hello from mosquitto");
        assert_eq!(line, format!("{topic} hello from mosquitto"));
    }
}

fn midge_pub_reaches_mosquitto_sub(kind: Kind) {
    let b = broker(kind, true);
    let port = b.port.to_string();
    // Each QoS with another protocol version of midge pub.
    for (qos, version) in [("0", "31"), ("1", "311"), ("2", "5")] {
        let mut sub = mosquitto_sub(&[
            "-p",
            &port,
            "-t",
            "to/mosquitto",
            "-q",
            qos,
            "-d",
            "-C",
            "1",
            "-F",
            "%t %q %p",
        ]);
        sub.wait_for("Subscribed (mid: 1)");
        let out = midge(
            "pub",
            &[
                "-p",
                &port,
                "-t",
                "to/mosquitto",
                "-m",
                "hi there",
                "-q",
                qos,
                "-V",
                version,
            ],
        );
        assert!(out.status.success(), "midge pub: {}", text(&out.stderr));
        assert_eq!(
            sub.wait_for("hi there"),
            format!("to/mosquitto {qos} hi there")
        );
    }
}

#[test]
fn midge_sub_receives_from_mosquitto_pub_on_midge() {
    midge_sub_receives_from_mosquitto_pub(Kind::Midge);
}

#[test]
fn midge_sub_receives_from_mosquitto_pub_on_mosquitto() {
    midge_sub_receives_from_mosquitto_pub(Kind::Mosquitto);
}

#[test]
fn midge_pub_reaches_mosquitto_sub_on_midge() {
    midge_pub_reaches_mosquitto_sub(Kind::Midge);
}

#[test]
fn midge_pub_reaches_mosquitto_sub_on_mosquitto() {
    midge_pub_reaches_mosquitto_sub(Kind::Mosquitto);
}

/// `-D` properties from midge pub, read back by mosquitto_sub's `%P` and `%C`.
#[test]
fn v5_properties_from_midge_pub_reach_mosquitto_sub() {
    for kind in [Kind::Midge, Kind::Mosquitto] {
        let b = broker(kind, true);
        let port = b.port.to_string();
        let mut sub = mosquitto_sub(&[
            "-p", &port, "-t", "props", "-V", "5", "-d", "-C", "1", "-F", "%C|%P|%p",
        ]);
        sub.wait_for("Subscribed (mid: 1)");
        let out = midge(
            "pub",
            &[
                "-p",
                &port,
                "-t",
                "props",
                "-m",
                "body",
                "-q",
                "1",
                "-D",
                "publish",
                "user-property",
                "unit",
                "celsius",
                "-D",
                "publish",
                "content-type",
                "text/plain",
            ],
        );
        assert!(out.status.success(), "{kind:?}: {}", text(&out.stderr));
        assert_eq!(
            sub.wait_for("body"),
            "text/plain|unit:celsius|body",
            "{kind:?}"
        );
    }
}

/// `-l`: one message per line, empty lines included, to mosquitto_sub.
#[test]
fn midge_pub_lines_from_stdin() {
    let b = broker(Kind::Mosquitto, true);
    let port = b.port.to_string();
    let mut sub = mosquitto_sub(&["-p", &port, "-t", "lines", "-d", "-C", "3", "-v", "-q", "1"]);
    sub.wait_for("Subscribed (mid: 1)");
    let out = run(
        MIDGE,
        &["pub", "-p", &port, "-t", "lines", "-l", "-q", "1"],
        Some(b"one\n\nthree\n"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sub.wait_for("lines "), "lines one");
    assert_eq!(sub.wait_for("lines "), "lines (null)");
    assert_eq!(sub.wait_for("lines "), "lines three");
    assert_eq!(sub.wait_exit(), Some(0));
}

/// Retained messages: -C 1 picks the retained one up; --retained-only and -R behave.
#[test]
fn retained_message_flags() {
    for kind in [Kind::Midge, Kind::Mosquitto] {
        let b = broker(kind, true);
        let port = b.port.to_string();
        let out = midge(
            "pub",
            &["-p", &port, "-t", "keep", "-m", "kept", "-r", "-q", "1"],
        );
        assert!(out.status.success());
        let got = midge(
            "sub",
            &["-p", &port, "-t", "keep", "-C", "1", "-F", "%t %r %p"],
        );
        assert_eq!(text(&got.stdout), "keep 1 kept\n", "{kind:?}");
        // -R: the retained message is not printed; -W ends the wait with Mosquitto's code.
        let got = midge("sub", &["-p", &port, "-t", "keep", "-R", "-W", "1"]);
        assert_eq!(
            (got.status.code(), text(&got.stdout)),
            (Some(27), String::new())
        );
        assert_eq!(text(&got.stderr), "Timed out\n");
        // --remove-retained clears it.
        let got = midge(
            "sub",
            &["-p", &port, "-t", "keep", "-C", "1", "--remove-retained"],
        );
        assert_eq!(text(&got.stdout), "kept\n");
        let got = midge(
            "sub",
            &["-p", &port, "-t", "keep", "--retained-only", "-W", "1"],
        );
        assert_eq!(
            (got.status.code(), text(&got.stdout)),
            (Some(27), String::new()),
            "{kind:?}"
        );
    }
}

/// `--json` prints one object per message with its properties.
#[test]
fn midge_sub_json_output() {
    let b = broker(Kind::Midge, true);
    let port = b.port.to_string();
    let mut sub = Proc::spawn(
        MIDGE,
        &[
            "sub", "-p", &port, "-t", "j/#", "-V", "5", "-d", "--json", "-C", "1",
        ],
    );
    sub.wait_for("Subscribed");
    let out = run(
        "mosquitto_pub",
        &[
            "-p",
            &port,
            "-t",
            "j/1",
            "-m",
            "{\"t\":1}",
            "-V",
            "5",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
        ],
        None,
    );
    assert!(out.status.success());
    assert_eq!(
        sub.wait_for("\"topic\""),
        "{\"topic\":\"j/1\",\"qos\":0,\"retain\":false,\"properties\":{\"user-properties\":[[\"k\",\"v\"]]},\"payload\":\"{\\\"t\\\":1}\",\"encoding\":\"utf-8\"}"
    );
}

/// A responder written with midge-client answers on the request's Response Topic.
fn spawn_responder(port: u16) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let options = ConnectOptions::new("127.0.0.1", port).protocol(ProtocolVersion::V5);
            let (client, mut messages) =
                Client::connect(options).await.expect("responder connects");
            client
                .subscribe("service/echo", QoS::AtLeastOnce)
                .await
                .expect("suback");
            ready_tx.send(()).expect("ready");
            let request = messages.recv().await.expect("a request");
            let reply_to = request
                .properties
                .response_topic
                .clone()
                .expect("response topic");
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&request.payload);
            client
                .publish_message(Message::new(reply_to, reply).qos(QoS::AtLeastOnce))
                .await
                .expect("reply acknowledged");
            client.disconnect().await.expect("disconnect");
        });
    });
    ready_rx.recv_timeout(WAIT).expect("responder ready");
    handle
}

#[test]
fn midge_rr_gets_the_response() {
    for kind in [Kind::Midge, Kind::Mosquitto] {
        let b = broker(kind, true);
        let responder = spawn_responder(b.port);
        let port = b.port.to_string();
        let out = midge(
            "rr",
            &[
                "-p",
                &port,
                "-t",
                "service/echo",
                "-e",
                "replies/me",
                "-m",
                "ping",
                "-W",
                "5",
            ],
        );
        assert!(out.status.success(), "{kind:?}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), "echo: ping\n", "{kind:?}");
        responder.join().expect("responder");
    }
}

/// Refused connections print and exit as Mosquitto's tools do: compared line for line
/// with mosquitto_pub and mosquitto_sub against the same broker.
#[test]
fn refused_connection_reads_like_mosquitto() {
    for kind in [Kind::Midge, Kind::Mosquitto] {
        let b = broker(kind, false);
        let port = b.port.to_string();
        for version in ["311", "5"] {
            for (ours, theirs) in [("pub", "mosquitto_pub"), ("sub", "mosquitto_sub")] {
                let args = ["-p", &port, "-t", "t", "-m", "x", "-V", version];
                let args: &[&str] = if ours == "sub" {
                    &[args[0], args[1], args[2], args[3], args[6], args[7]]
                } else {
                    &args
                };
                let mine = midge(ours, args);
                let reference = run(theirs, args, None);
                assert_eq!(
                    (mine.status.code(), text(&mine.stderr)),
                    (reference.status.code(), text(&reference.stderr)),
                    "{kind:?} {ours} -V {version}"
                );
            }
        }
        let expected = "Connection error: Connection Refused: not authorised.\nError: The connection was refused.\n";
        let mine = midge("pub", &["-p", &port, "-t", "t", "-m", "x"]);
        assert_eq!(
            (mine.status.code(), text(&mine.stderr).as_str()),
            (Some(5), expected)
        );
    }
}

#[test]
fn closed_port_reads_like_mosquitto() {
    let port = free_port().to_string();
    for (ours, theirs) in [("pub", "mosquitto_pub"), ("sub", "mosquitto_sub")] {
        let mine = midge(
            ours,
            &["-p", &port, "-t", "t", "-m", "x"][..if ours == "sub" { 4 } else { 6 }],
        );
        assert_eq!(text(&mine.stderr), "Error: Connection refused\n");
        assert_eq!(mine.status.code(), Some(1));
        let reference = run(
            theirs,
            &["-p", &port, "-t", "t", "-m", "x"][..if ours == "sub" { 4 } else { 6 }],
            None,
        );
        assert_eq!(text(&reference.stderr), text(&mine.stderr));
    }
}

#[test]
fn usage_errors_read_like_mosquitto() {
    for args in [
        &["pub", "-t", "a"][..],
        &["pub", "-q", "3", "-t", "a", "-m", "b"],
        &["pub", "-t", "a/#", "-m", "b"],
        &["sub", "-t", "a/#/b"],
        &["pub", "-Z"],
        &["sub"],
        &["pub", "-t", "a", "-m", "x", "-c"],
        &["rr", "-t", "a", "-e", "b"],
    ] {
        let mine = midge(args[0], &args[1..]);
        let reference = run(&format!("mosquitto_{}", args[0]), &args[1..], None);
        let normalise = |s: String| s.replace("mosquitto_", "midge ");
        assert_eq!(mine.status.code(), reference.status.code(), "{args:?}");
        assert_eq!(
            text(&mine.stderr),
            normalise(text(&reference.stderr)),
            "{args:?}"
        );
    }
}

#[test]
fn help_lists_every_flag() {
    let out = midge("pub", &["--help"]);
    let help = text(&out.stdout);
    for flag in [
        "-A",
        "-c",
        "-d",
        "-D",
        "-f",
        "-h",
        "-i",
        "-I",
        "-k",
        "-L",
        "-l",
        "-m",
        "-M",
        "-n",
        "-p",
        "-P",
        "-q",
        "-r",
        "-s",
        "-t",
        "-u",
        "-V",
        "-x",
        "--help",
        "--nodelay",
        "--quiet",
        "--repeat",
        "--repeat-delay",
        "--will-payload",
        "--will-qos",
        "--will-retain",
        "--will-topic",
    ] {
        assert!(
            help.contains(&format!(" {flag} ")),
            "midge pub --help lacks {flag}"
        );
    }
    let out = midge("sub", &["--help"]);
    let help = text(&out.stdout);
    for flag in [
        "-A",
        "-c",
        "-C",
        "-d",
        "-D",
        "-E",
        "-F",
        "-h",
        "-i",
        "-I",
        "-k",
        "-L",
        "-N",
        "-p",
        "-P",
        "-q",
        "-R",
        "-t",
        "-T",
        "-u",
        "-U",
        "-v",
        "-V",
        "-W",
        "-x",
        "--help",
        "--json",
        "--nodelay",
        "--pretty",
        "--quiet",
        "--random-filter",
        "--retained-only",
        "--remove-retained",
        "--will-payload",
        "--will-qos",
        "--will-retain",
        "--will-topic",
    ] {
        assert!(
            help.contains(&format!(" {flag} ")),
            "midge sub --help lacks {flag}"
        );
    }
}

/// A broker with one TLS listener (Mosquitto's certfile/keyfile, read by Midge too).
fn tls_broker(kind: Kind) -> (Broker, String) {
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let cafile = write_tls_files(dir.path());
    let conf = dir.path().join("broker.conf");
    let d = dir.path().display();
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n"
        ),
    )
    .expect("conf");
    (start_broker(kind, port, dir), cafile)
}

#[test]
fn tls_both_ways_with_mosquitto_tools() {
    for kind in [Kind::Midge, Kind::Mosquitto] {
        let (b, cafile) = tls_broker(kind);
        let port = b.port.to_string();
        let tls = ["-h", "localhost", "-p", &port, "--cafile", &cafile];

        let mut args = tls.to_vec();
        args.extend(["-t", "tls/in", "-d", "-C", "1", "-q", "1"]);
        let mut sub = mosquitto_sub(&args);
        sub.wait_for("Subscribed (mid: 1)");
        let mut args = tls.to_vec();
        args.extend(["-t", "tls/in", "-m", "over tls", "-q", "1"]);
        let out = midge("pub", &args);
        assert!(out.status.success(), "{kind:?}: {}", text(&out.stderr));
        assert_eq!(sub.wait_for("over tls"), "over tls");

        let mut args = vec!["sub"];
        args.extend(tls);
        args.extend(["-t", "tls/out", "-d", "-C", "1", "-v"]);
        let mut sub = Proc::spawn(MIDGE, &args);
        sub.wait_for("Subscribed (mid: 1)");
        let mut args = tls.to_vec();
        args.extend(["-t", "tls/out", "-m", "back"]);
        let out = run("mosquitto_pub", &args, None);
        assert!(out.status.success(), "{kind:?}: {}", text(&out.stderr));
        assert_eq!(sub.wait_for("back"), "tls/out back");
    }
}

#[test]
fn tls_flag_errors() {
    let out = midge("pub", &["-t", "a", "-m", "b", "--cert", "c.pem"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr)
        .starts_with("Error: Both certfile and keyfile must be provided if one of them is set.\n"));
    let out = midge(
        "pub",
        &["-t", "a", "-m", "b", "--cafile", "/nonexistent/ca.pem"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "Error: Problem setting TLS options: File not found.\n"
    );
}
