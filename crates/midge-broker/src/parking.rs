//! Parked connections: idle plain-TCP connections without a task.
//!
//! A tokio task and its socket's registration cost an idle connection about 1.3 KB before
//! any state of its own. A connection that has had nothing to do for `park_idle_after`
//! (the keep-alive wheel asks it, `Control::Park`) and is still idle hands its socket and
//! a compact copy of its state ([`ParkedConn`], ~100 B) to the broker's [`ParkTable`] and
//! ends its task. The socket moves from tokio's poll set to the table's own, watched by
//! one thread (`midge-park`); nothing else of the connection is kept.
//!
//! A parked connection is resumed (a new task, the socket registered with tokio again)
//! by whichever comes first:
//! - its socket: the client sent something or closed (the poll thread);
//! - its session: a message was queued for it, or a request (takeover, kick, shutdown,
//!   keep-alive expiry) was left for it ([`SessionCell::wake`]).
//!
//! Both take the record out of the table under the table's lock, so exactly one of them
//! resumes it. Parking itself is ordered against the session: the record is put in the
//! table first, then the session is looked at under its lock; if a message or request
//! arrived meanwhile the connection takes its record back (or finds it already taken by
//! the socket's wake-up) and goes on. A message queued after that sees `ConnLink::parked`
//! and resumes it. See docs/design/idle-memory.md, "Parking".

use crate::broker::BrokerInner;
use crate::connection::ParkedConn;
use crate::session::SessionCell;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use tokio::sync::watch;

/// The poll thread's own token (stop); connection identifiers start at 1.
const WAKE: Token = Token(usize::MAX);
/// Shards of the table: parking and resuming on different connections rarely meet.
const SHARDS: usize = 16;

/// What the poll thread did with what a parked socket had to read.
enum Ping {
    /// A lone PINGREQ, read and answered with PINGRESP; `more`: something came after it
    /// meanwhile (data, the end of the stream, an error), for the connection's task.
    Answered { more: bool },
    /// A lone PINGREQ, read; the PINGRESP could not be written: the resumed connection
    /// sends it.
    Owed,
    /// Something else, more, or nothing readable: for the connection's task.
    NotAlone,
}

/// PINGREQ: type 12, no flags, remaining length 0 (the same in MQTT 3.1, 3.1.1 and 5.0).
const PINGREQ: [u8; 2] = [0xC0, 0x00];
/// PINGRESP: type 13, remaining length 0.
const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// Answers the socket's PINGREQ if that is all it has to read (see [`Ping`]).
fn answer_ping(stream: &std::net::TcpStream) -> Ping {
    use std::io::{Read, Write};
    let mut peeked = [0u8; 3];
    match stream.peek(&mut peeked) {
        Ok(2) if peeked[..2] == PINGREQ => {}
        _ => return Ping::NotAlone,
    }
    let mut ping = [0u8; 2];
    let mut reader = stream;
    if !matches!(reader.read(&mut ping), Ok(2)) {
        return Ping::NotAlone;
    }
    let mut writer = stream;
    match writer.write(&PINGRESP) {
        Ok(2) => {
            let more = !matches!(
                stream.peek(&mut peeked),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            );
            Ping::Answered { more }
        }
        // A full send buffer (never for an idle connection) or a failing socket: the
        // connection's task answers or finds out.
        _ => Ping::Owed,
    }
}

/// Everything a parked connection is.
pub(crate) struct Parked {
    pub stream: std::net::TcpStream,
    pub session: Arc<SessionCell>,
    pub conn: ParkedConn,
}

/// Parked connections by connection identifier (boxed: a table's free slots then cost a
/// pointer, not a whole record).
type Shard = Mutex<HashMap<u64, Box<Parked>>>;

/// The broker's parked connections and the poll set their sockets wait in.
pub struct ParkTable {
    shards: Box<[Shard]>,
    registry: Registry,
    waker: Waker,
    stop: AtomicBool,
    /// The poll thread has ended: nothing is parked any more.
    dead: AtomicBool,
    runtime: tokio::runtime::Handle,
    broker: OnceLock<Weak<BrokerInner>>,
    /// How many are parked (a `watch`, so that tests can wait for a change).
    parked: watch::Sender<usize>,
    /// The broker's counters (PINGREQ and PINGRESP answered by the poll thread count).
    stats: Arc<crate::sys::Stats>,
}

impl ParkTable {
    /// A table and its poll thread, resuming connections on the current tokio runtime.
    pub fn start(stats: Arc<crate::sys::Stats>) -> std::io::Result<Arc<ParkTable>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let table = Arc::new(ParkTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            registry,
            waker,
            stop: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            runtime,
            broker: OnceLock::new(),
            parked: watch::Sender::new(0),
            stats,
        });
        let polled = table.clone();
        std::thread::Builder::new()
            .name("midge-park".into())
            .spawn(move || polled.run(poll))?;
        Ok(table)
    }

    /// The broker resumed connections belong to (set once it exists).
    pub(crate) fn set_broker(&self, broker: Weak<BrokerInner>) {
        let _ = self.broker.set(broker);
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        *self.parked.borrow()
    }

    /// The number of parked connections, to wait for a change of it.
    pub fn watch(&self) -> watch::Receiver<usize> {
        self.parked.subscribe()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, conn_id: u64) -> &Shard {
        // Bounded by the modulo: never out of range.
        &self.shards[(conn_id % SHARDS as u64) as usize]
    }

    /// Parks a connection that found itself idle. `Ok` when it is parked, or was resumed
    /// already by its socket (a new task has it); `Err` gives it back to the caller, which
    /// goes on serving it: its session had work for it after all, or the socket could not
    /// be watched.
    pub(crate) fn park(&self, conn_id: u64, parked: Box<Parked>) -> Result<(), Box<Parked>> {
        // The poll set names the connection by its identifier: one that does not fit a
        // token (past 4 billion connections on a 32-bit system) is not parked.
        let token = match usize::try_from(conn_id) {
            Ok(t) if Token(t) != WAKE => Token(t),
            _ => return Err(parked),
        };
        let fd = parked.stream.as_raw_fd();
        let session = parked.session.clone();
        {
            let mut shard = self.shard(conn_id).lock();
            if self.dead.load(Ordering::Acquire) {
                return Err(parked);
            }
            let registered = self
                .registry
                .register(&mut SourceFd(&fd), token, Interest::READABLE);
            if let Err(e) = registered {
                tracing::debug!(conn_id, "not parked: {e}");
                return Err(parked);
            }
            shard.insert(conn_id, parked);
            self.parked.send_modify(|n| *n += 1);
        }
        let mut st = session.state.lock();
        let idle = st.nothing_to_send();
        match st.conn.as_mut().filter(|l| l.conn_id == conn_id) {
            Some(link) if idle && link.request.is_none() => {
                // From here a wake-up of the session resumes the connection: unless its
                // socket resumed it already (then it is running, and must not be marked).
                if self.shard(conn_id).lock().contains_key(&conn_id) {
                    link.parked = true;
                }
                Ok(())
            }
            _ => {
                // Work arrived meanwhile: take the connection back, unless its socket's
                // wake-up took it first (then that task does the work).
                let back = self.take(conn_id);
                drop(st);
                back.map_or(Ok(()), Err)
            }
        }
    }

    /// Takes connection `conn_id` out of the table and the poll set, if it is there.
    fn take(&self, conn_id: u64) -> Option<Box<Parked>> {
        let parked = {
            let mut shard = self.shard(conn_id).lock();
            let parked = shard.remove(&conn_id)?;
            self.parked.send_modify(|n| *n = n.saturating_sub(1));
            parked
        };
        let fd = parked.stream.as_raw_fd();
        if let Err(e) = self.registry.deregister(&mut SourceFd(&fd)) {
            tracing::debug!(conn_id, "deregistering a parked socket: {e}");
        }
        Some(parked)
    }

    /// Resumes connection `conn_id` in a new task if it is parked; nothing if it is not
    /// (another wake-up resumed it first).
    pub(crate) fn unpark(&self, conn_id: u64) {
        let Some(parked) = self.take(conn_id) else {
            return;
        };
        match self.broker.get().and_then(Weak::upgrade) {
            Some(broker) => {
                // Registering the socket with tokio and spawning need the runtime's
                // context, which the poll thread does not have of its own.
                let _runtime = self.runtime.enter();
                crate::listener::resume_tcp(broker, conn_id, *parked);
            }
            // The broker is gone: dropping the record closes the socket.
            None => drop(parked),
        }
    }

    /// Connection `conn_id`'s socket became readable. A lone PINGREQ, what an idle client
    /// sends once per keep-alive, is answered here and the connection stays parked;
    /// anything else (or the end of the stream) resumes it.
    fn readable(&self, conn_id: u64, closed: bool) {
        if closed {
            // The client closed or the socket failed (reported with the same event as
            // whatever came before): the connection's task finds out and ends it.
            self.unpark(conn_id);
            return;
        }
        let answered = {
            let mut shard = self.shard(conn_id).lock();
            // Under the table's lock: the socket cannot be taken (and closed) meanwhile.
            let Some(parked) = shard.get_mut(&conn_id) else {
                return;
            };
            match answer_ping(&parked.stream) {
                Ping::Answered { more } => Some((parked.session.clone(), more)),
                Ping::Owed => {
                    parked.conn.owe_pingresp();
                    None
                }
                Ping::NotAlone => None,
            }
        };
        let Some((session, more)) = answered else {
            self.unpark(conn_id);
            return;
        };
        self.stats.messages_received.fetch_add(1, Ordering::Relaxed);
        self.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_received.fetch_add(2, Ordering::Relaxed);
        self.stats.bytes_sent.fetch_add(2, Ordering::Relaxed);
        let mut st = session.state.lock();
        if let Some(link) = st.conn.as_mut().filter(|l| l.conn_id == conn_id) {
            // The keep-alive counts from here [MQTT-3.1.2-24].
            link.set_last_read(tokio::time::Instant::now());
        }
        drop(st);
        if more {
            // Something came after the PINGREQ (or the stream ended): not for this thread.
            self.unpark(conn_id);
        }
    }

    /// The poll thread: resumes connections whose socket became readable (data, end of
    /// stream or error), until [`ParkTable::stop`].
    fn run(&self, mut poll: Poll) {
        let mut events = Events::with_capacity(1024);
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("parked connections: poll failed: {e}");
                break;
            }
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            for event in events.iter() {
                if event.token() != WAKE {
                    let closed = event.is_read_closed() || event.is_error();
                    self.readable(event.token().0 as u64, closed);
                }
            }
        }
        self.dead.store(true, Ordering::Release);
        if self.stop.load(Ordering::Acquire) {
            // The broker is gone: drop the parked connections (closing their sockets); they
            // hold their sessions, which hold this table.
            for shard in self.shards.iter() {
                let parked = std::mem::take(&mut *shard.lock());
                drop(parked);
            }
            self.parked.send_replace(0);
        } else {
            // The poll set failed: nothing watches the parked sockets any more. Give every
            // parked connection its task back; `park` refuses from now on.
            let ids: Vec<u64> = self
                .shards
                .iter()
                .flat_map(|shard| shard.lock().keys().copied().collect::<Vec<_>>())
                .collect();
            for conn_id in ids {
                self.unpark(conn_id);
            }
        }
    }

    /// Stops the poll thread; the connections still parked are closed.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::error!("stopping the parked-connection thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    /// What an idle parked connection costs besides its socket (docs/design/idle-memory.md):
    /// its session and its parked record. jemalloc rounds a session (with its `Arc`
    /// counts) up to the next of its size classes 320, 384, 448, 512: a byte over 368
    /// here costs 64 per connection.
    #[test]
    fn an_idle_connection_fits_its_size_classes() {
        let session = std::mem::size_of::<crate::session::SessionCell>();
        let parked = std::mem::size_of::<super::Parked>();
        eprintln!("SessionCell {session} B, Parked {parked} B");
        assert!(session <= 368, "SessionCell is {session} bytes, over 368");
        assert!(parked <= 48, "Parked is {parked} bytes, over 48");
    }
}
