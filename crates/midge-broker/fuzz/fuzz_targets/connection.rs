//! Fuzz target: one client connection with a valid CONNECT followed by arbitrary bytes.
//!
//! Input layout: byte 0 chooses the CONNECT (bits 0-1: protocol 3.1 / 3.1.1 / 5.0; bit 2:
//! clean start; bit 3: 5.0 session expiry "never" instead of 0), the rest is written after
//! the CONNECT as is, then the client half-closes. Each input gets a fresh broker (no
//! listeners, no `$SYS`) on a multi-threaded runtime that is shared by up to
//! [`INPUTS_PER_RUNTIME`] inputs, so inputs do not leak state into each other and a crash
//! replays alone.
//!
//! Fails (aborts) when:
//! - anything panics, in the broker's tasks included (the panic hook aborts: tokio would
//!   otherwise swallow a task panic);
//! - the broker sends bytes that do not decode as packets of the connection's version;
//! - the broker does not close the connection within [`DEADLINE`] of the client's EOF;
//! - afterwards a fresh client (same client ID, resuming the session) cannot CONNECT and get
//!   PINGRESP to PINGREQ within [`DEADLINE`].
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use midge_broker::{Broker, Config};
use midge_proto::{
    decode, encode, ByteStr, Connect, Packet, Properties, ProtocolVersion, ReasonCode,
};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Once;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::runtime::Runtime;

/// How long the broker gets to close after EOF, and the health check to complete. Far above
/// anything a healthy broker needs (microseconds), so a hit means a hang, not load.
const DEADLINE: Duration = Duration::from_secs(10);

/// Bytes each direction of the in-memory pipe buffers.
const PIPE_BUFFER: usize = 64 * 1024;

const CLIENT_ID: &str = "fuzz";

/// Inputs served by one runtime before it is replaced.
///
/// Tasks the broker leaves behind outlive it: a 5.0 session whose DISCONNECT set an expiry
/// keeps a timer task (and the session) until the timer fires, up to 136 years. Dropping the
/// runtime cancels them, so memory stays flat over millions of inputs; run 1 did not recycle
/// and grew to ~1 GB.
const INPUTS_PER_RUNTIME: u32 = 1000;

fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            std::process::abort();
        }));
    });
}

thread_local! {
    static RUNTIME: RefCell<Option<(Runtime, u32)>> = const { RefCell::new(None) };
}

/// Runs `f` on the current multi-threaded runtime, making a new one every
/// [`INPUTS_PER_RUNTIME`] inputs.
fn with_runtime(f: impl FnOnce(&Runtime)) {
    install_panic_hook();
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot
            .as_ref()
            .is_some_and(|(_, used)| *used >= INPUTS_PER_RUNTIME)
        {
            *slot = None;
        }
        let (runtime, used) = slot.get_or_insert_with(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
            (runtime, 0)
        });
        *used += 1;
        f(runtime);
    });
}

/// The CONNECT the input's first byte asks for.
struct Setup {
    version: ProtocolVersion,
    clean_start: bool,
    session_never_expires: bool,
}

impl Setup {
    fn from_byte(b: u8) -> Setup {
        let version = match b & 0b11 {
            0 => ProtocolVersion::V31,
            1 => ProtocolVersion::V311,
            _ => ProtocolVersion::V5,
        };
        Setup {
            version,
            clean_start: b & 0b100 != 0,
            session_never_expires: b & 0b1000 != 0,
        }
    }

    fn connect(&self, clean_start: bool) -> Packet {
        let mut properties = Properties::default();
        if self.version.is_v5() && self.session_never_expires {
            // "Never" rather than a finite interval: no expiry timer outlives the broker.
            properties.session_expiry_interval = Some(u32::MAX);
        }
        Packet::Connect(Box::new(Connect {
            protocol: self.version,
            clean_start,
            keep_alive: 60,
            client_id: ByteStr::from_static(CLIENT_ID),
            will: None,
            username: None,
            password: None,
            properties,
        }))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let setup = Setup::from_byte(first);
    with_runtime(|runtime| {
        runtime.block_on(async {
            let config = Config {
                listeners: vec![],
                sys_interval: Duration::ZERO,
                ..Default::default()
            };
            let broker = Broker::start(config)
                .await
                .unwrap_or_else(|e| panic!("broker start: {e}"));
            fuzz_connection(&broker, &setup, rest).await;
            health_check(&broker, &setup).await;
            broker.shutdown(Duration::ZERO).await;
        })
    });
});

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// Writes CONNECT + the input, half-closes, reads until the broker closes.
async fn fuzz_connection(broker: &Broker, setup: &Setup, input: &[u8]) {
    let (client, server) = tokio::io::duplex(PIPE_BUFFER);
    let mut bytes = BytesMut::new();
    encode(&setup.connect(setup.clean_start), setup.version, &mut bytes);
    bytes.extend_from_slice(input);
    let (mut rd, mut wr) = tokio::io::split(client);
    let writer = async move {
        // The broker may close before reading everything: a failed write is fine.
        let _ = wr.write_all(&bytes).await;
        let _ = wr.shutdown().await;
        wr
    };
    let reader = async move {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let session = async {
        let (_, _wr, out) = tokio::join!(broker.serve_stream(server, peer(), true), writer, reader);
        out
    };
    let out = tokio::time::timeout(DEADLINE, session)
        .await
        .unwrap_or_else(|_| panic!("connection still open {DEADLINE:?} after client EOF"));
    check_output(&out, setup.version);
}

/// Everything the broker sends must decode as packets of the connection's version.
fn check_output(out: &[u8], version: ProtocolVersion) {
    let mut buf = BytesMut::from(out);
    loop {
        match decode(&mut buf, version, usize::MAX) {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("broker sent an undecodable packet ({e:?}): {out:02x?}"),
        }
    }
}

/// A fresh client resumes the fuzzed session, then PINGREQ must get PINGRESP.
async fn health_check(broker: &Broker, setup: &Setup) {
    let (client, server) = tokio::io::duplex(PIPE_BUFFER);
    let check = async {
        tokio::join!(
            broker.serve_stream(server, peer(), true),
            ping_client(client, setup)
        )
    };
    if tokio::time::timeout(DEADLINE, check).await.is_err() {
        panic!("health check: no CONNACK/PINGRESP within {DEADLINE:?}");
    }
}

async fn ping_client(mut stream: DuplexStream, setup: &Setup) {
    let version = setup.version;
    let mut bytes = BytesMut::new();
    encode(&setup.connect(false), version, &mut bytes);
    write(&mut stream, &bytes).await;
    let mut buf = BytesMut::new();
    match read_packet(&mut stream, &mut buf, version).await {
        Packet::ConnAck(ack) if ack.reason_code == ReasonCode::SUCCESS => {}
        other => panic!("health check: expected CONNACK success, got {other:?}"),
    }
    bytes.clear();
    encode(&Packet::PingReq, version, &mut bytes);
    write(&mut stream, &bytes).await;
    // Messages queued in the resumed session may come first.
    while read_packet(&mut stream, &mut buf, version).await != Packet::PingResp {}
    let _ = stream.shutdown().await;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
}

async fn write(stream: &mut DuplexStream, bytes: &[u8]) {
    if let Err(e) = stream.write_all(bytes).await {
        panic!("health check: write failed: {e}");
    }
}

async fn read_packet(stream: &mut DuplexStream, buf: &mut BytesMut, v: ProtocolVersion) -> Packet {
    loop {
        match decode(buf, v, usize::MAX) {
            Ok(Some(p)) => return p,
            Ok(None) => {}
            Err(e) => panic!("health check: undecodable packet from broker: {e:?}"),
        }
        match stream.read_buf(buf).await {
            Ok(0) => panic!("health check: broker closed the connection"),
            Ok(_) => {}
            Err(e) => panic!("health check: read failed: {e}"),
        }
    }
}
