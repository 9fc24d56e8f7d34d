//! Keep-alive without a timer per connection [MQTT-3.1.2-24].
//!
//! Each connection with a keep-alive is filed in a wheel under the tick at which it would
//! expire if its client sent nothing more. Reads do not touch the wheel: a connection only
//! records when it last read (`ConnLink::last_read`, under the session lock it takes anyway).
//! Every `TICK` the broker takes the entries that are due; one whose client read since is
//! filed again under its new deadline, one whose client did not is asked to close
//! (`Control::KeepAliveTimeout`). So each connection is looked at about once per keep-alive
//! period, as a per-connection timer would be, for ~24 bytes instead of a `Sleep` (112 B)
//! in its task. See docs/design/idle-memory.md.
//!
//! The same wheel asks connections idle for `park_idle_after` to park (parking.rs). An
//! entry whose connection left stays until its tick unless swept: once the entries known
//! to be stale are at least 4,096 and half of all, the sweep drops them (so connection
//! churn with long keep-alives does not pile them up).

use crate::session::{ConnLink, Control, SessionCell, SessionState};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often due entries are looked at: a silent client is closed between 1.5 times its
/// keep-alive and that plus one tick.
pub const TICK: Duration = Duration::from_millis(500);

/// One connection waiting for its next deadline.
struct Entry {
    cell: Weak<SessionCell>,
    conn_id: u64,
}

/// Connections by the tick of their next deadline: keep-alive expiry, or the moment they
/// will have been idle long enough to be parked (parking.rs).
///
/// A connection has one live entry: the one under the tick its link names
/// (`ConnLink::wheel_tick`). Filing it under an earlier tick leaves the older entry
/// stale; a stale entry is dropped when it comes due.
pub struct KeepAliveWheel {
    start: Instant,
    /// Idle time after which a connection is asked to park; zero: never.
    park_after: Duration,
    slots: Mutex<BTreeMap<u32, Vec<Entry>>>,
    /// Entries filed and not yet taken (due or compacted away).
    entries: AtomicUsize,
    /// Entries known to be stale: their connection left, or was filed again earlier. A
    /// stale entry would otherwise stay until its tick, up to 1.5 x 65,535 s away: under
    /// connection churn they are swept out once they are half of all entries.
    stale: AtomicUsize,
    /// Fewest stale entries worth a sweep.
    compact_at: usize,
}

/// Stale entries below this are left to come due on their own.
const COMPACT_AT: usize = 4096;

impl Default for KeepAliveWheel {
    fn default() -> Self {
        KeepAliveWheel::new(Duration::ZERO)
    }
}

impl KeepAliveWheel {
    pub fn new(park_after: Duration) -> Self {
        KeepAliveWheel {
            start: Instant::now(),
            park_after,
            slots: Mutex::new(BTreeMap::new()),
            entries: AtomicUsize::new(0),
            stale: AtomicUsize::new(0),
            compact_at: COMPACT_AT,
        }
    }

    /// The tick at or after `at` (1 or more: 0 means "not filed" in a link).
    fn tick_of(&self, at: Instant) -> u32 {
        let ms = at.saturating_duration_since(self.start).as_millis();
        let tick = TICK.as_millis().max(1);
        u32::try_from(ms.div_ceil(tick)).unwrap_or(u32::MAX).max(1)
    }

    /// Files `link`'s connection under its next deadline: its keep-alive expiry and,
    /// unless it is parked, `park_after` past `idle_since`. Nothing when neither applies
    /// or its entry already comes due by then. Called under the session lock.
    pub fn schedule(&self, cell: &Arc<SessionCell>, link: &mut ConnLink, idle_since: Instant) {
        let keep_alive = (link.keep_alive_ms > 0).then(|| link.last_read() + link.keep_alive());
        let park =
            (!self.park_after.is_zero() && !link.parked).then(|| idle_since + self.park_after);
        let next = match (keep_alive, park) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(at) => at,
                None => return,
            },
        };
        let tick = self.tick_of(next);
        if link.wheel_tick != 0 {
            if link.wheel_tick <= tick {
                return;
            }
            // The entry under the later tick is stale from here.
            self.stale.fetch_add(1, Ordering::Relaxed);
        }
        link.wheel_tick = tick;
        self.slots.lock().entry(tick).or_default().push(Entry {
            cell: Arc::downgrade(cell),
            conn_id: link.conn_id,
        });
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    /// The connection of `link` is leaving its session: its entry, if any, is stale.
    pub fn forget(&self, link: &ConnLink) {
        if link.wheel_tick != 0 {
            self.stale.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Removes the stale entries once they are at least `compact_at` and half of all.
    /// Called by the sweep only (never concurrently with `expire`), under no session lock:
    /// it takes each entry's session lock to tell whether the entry is still the live one.
    fn compact_if_worth_it(&self) {
        let stale = self.stale.load(Ordering::Relaxed);
        if stale < self.compact_at || stale * 2 < self.entries.load(Ordering::Relaxed) {
            return;
        }
        // Out of the lock while sessions are looked at; entries filed meanwhile go into
        // the emptied map and the two are merged.
        let taken = std::mem::take(&mut *self.slots.lock());
        let mut kept: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
        let mut removed = 0;
        for (tick, entries) in taken {
            let before = entries.len();
            let live: Vec<Entry> = entries
                .into_iter()
                .filter(|e| Self::is_live(e, tick))
                .collect();
            removed += before - live.len();
            if !live.is_empty() {
                kept.insert(tick, live);
            }
        }
        let mut slots = self.slots.lock();
        for (tick, mut entries) in kept {
            slots.entry(tick).or_default().append(&mut entries);
        }
        drop(slots);
        self.stale.store(0, Ordering::Relaxed);
        self.entries.fetch_sub(removed, Ordering::Relaxed);
    }

    /// Whether `e`, filed under `tick`, is its connection's live entry.
    fn is_live(e: &Entry, tick: u32) -> bool {
        let Some(cell) = e.cell.upgrade() else {
            return false;
        };
        let st = cell.state.lock();
        st.conn
            .as_ref()
            .is_some_and(|l| l.conn_id == e.conn_id && l.wheel_tick == tick)
    }

    /// Looks at every entry due by `now`: closes the connections whose client sent nothing
    /// for their keep-alive, asks those idle for `park_after` to park, and files the
    /// others again. Returns how many were asked to close.
    pub fn expire(&self, now: Instant) -> usize {
        self.compact_if_worth_it();
        let due: Vec<(u32, Entry)> = {
            let mut slots = self.slots.lock();
            let later = slots.split_off(&self.tick_of(now).saturating_add(1));
            let due = std::mem::replace(&mut *slots, later);
            due.into_iter()
                .flat_map(|(tick, entries)| entries.into_iter().map(move |e| (tick, e)))
                .collect()
        };
        self.entries.fetch_sub(due.len(), Ordering::Relaxed);
        let mut closed = 0;
        for (tick, e) in due {
            let Some(cell) = e.cell.upgrade() else {
                self.stale_gone();
                continue;
            };
            let mut st = cell.state.lock();
            match self.look_at(&cell, &mut st, e.conn_id, tick, now) {
                Looked::Expired => {
                    cell.request(&mut st, Control::KeepAliveTimeout);
                    closed += 1;
                }
                Looked::Stale => self.stale_gone(),
                Looked::Other => {}
            }
        }
        closed
    }

    /// One due entry, under its session's lock.
    fn look_at(
        &self,
        cell: &Arc<SessionCell>,
        st: &mut SessionState,
        conn_id: u64,
        tick: u32,
        now: Instant,
    ) -> Looked {
        let Some(link) = st.conn.as_mut().filter(|l| l.conn_id == conn_id) else {
            // That connection is gone; a new one files itself.
            return Looked::Stale;
        };
        if link.wheel_tick != tick {
            // Filed again under an earlier tick since: that entry is the live one.
            return Looked::Stale;
        }
        link.wheel_tick = 0;
        if link.keep_alive_ms > 0 && link.last_read() + link.keep_alive() <= now {
            return Looked::Expired;
        }
        let mut idle_since = link.last_read();
        if !self.park_after.is_zero() && !link.parked && idle_since + self.park_after <= now {
            // Idle long enough: ask it to park. It parks only if it still has nothing to
            // do; a busy connection is asked again `park_after` later.
            if link.request.is_none() {
                link.request = Some(Control::Park);
                cell.notify.notify_one();
            }
            idle_since = now;
        }
        self.schedule(cell, link, idle_since);
        Looked::Other
    }

    /// A stale entry came due (or its session was gone): one fewer to sweep.
    fn stale_gone(&self) {
        let _ = self
            .stale
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Entries filed (for tests).
    pub fn len(&self) -> usize {
        self.slots.lock().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a due entry came to.
enum Looked {
    /// The keep-alive ran out: close the connection.
    Expired,
    /// Not its connection's live entry (counted in `stale`, or its session is gone).
    Stale,
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{QueueLimits, SessionEnv};
    use crate::sys::Stats;

    fn connected(conn_id: u64, keep_alive: Duration) -> Arc<SessionCell> {
        let limits = QueueLimits {
            max_messages: 0,
            max_bytes: 0,
            queue_qos0_offline: false,
            backpressure_ms: 0,
        };
        let env = SessionEnv::new(limits, Arc::new(Stats::default()), false);
        let cell = Arc::new(SessionCell::new(1, "c".into(), Arc::new(env), None));
        let mut link = ConnLink::new(conn_id);
        link.keep_alive_ms = u32::try_from(keep_alive.as_millis()).unwrap_or(u32::MAX);
        cell.state.lock().conn = Some(link);
        cell
    }

    fn file(wheel: &KeepAliveWheel, cell: &Arc<SessionCell>) {
        let mut st = cell.state.lock();
        if let Some(link) = st.conn.as_mut() {
            let since = link.last_read();
            wheel.schedule(cell, link, since);
        }
    }

    /// Whether the connection was asked something `is` recognises.
    fn asked(cell: &SessionCell, is: impl Fn(&Control) -> bool) -> bool {
        cell.state
            .lock()
            .conn
            .as_ref()
            .is_some_and(|l| l.request.as_ref().is_some_and(&is))
    }

    fn requested(cell: &SessionCell) -> bool {
        asked(cell, |c| matches!(c, Control::KeepAliveTimeout))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_and_an_active_one_is_filed_again() {
        let wheel = KeepAliveWheel::default();
        let limit = Duration::from_millis(1500);
        let silent = connected(1, limit);
        let active = connected(2, limit);
        file(&wheel, &silent);
        file(&wheel, &active);

        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(wheel.expire(Instant::now()), 0, "nothing due yet");
        assert_eq!(wheel.len(), 2);

        // The active client sends something at 1.2 s.
        tokio::time::advance(Duration::from_millis(200)).await;
        if let Some(l) = active.state.lock().conn.as_mut() {
            l.set_last_read(Instant::now());
        }
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(wheel.expire(Instant::now()), 1, "the silent one, at 1.6 s");
        assert!(requested(&silent) && !requested(&active));
        assert_eq!(wheel.len(), 1, "the active one is filed under 2.7 s");

        tokio::time::advance(Duration::from_millis(1200)).await;
        assert_eq!(wheel.expire(Instant::now()), 1);
        assert!(requested(&active));
        assert!(wheel.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_of_gone_connections_are_dropped() {
        let wheel = KeepAliveWheel::default();
        let cell = connected(1, Duration::from_secs(1));
        file(&wheel, &cell);
        // A new connection (id 2) attached since: the old entry is stale.
        if let Some(l) = cell.state.lock().conn.as_mut() {
            l.conn_id = 2;
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(wheel.expire(Instant::now()), 0);
        assert!(wheel.is_empty());
        assert!(!requested(&cell));
    }

    fn park_requested(cell: &SessionCell) -> bool {
        asked(cell, |c| matches!(c, Control::Park))
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_asked_to_park_and_a_parked_one_only_for_its_keep_alive() {
        let wheel = KeepAliveWheel::new(Duration::from_secs(2));
        let cell = connected(1, Duration::from_secs(15));
        file(&wheel, &cell);
        tokio::time::advance(Duration::from_millis(1500)).await;
        wheel.expire(Instant::now());
        assert!(!park_requested(&cell), "not idle for 2 s yet");
        tokio::time::advance(Duration::from_millis(1000)).await;
        wheel.expire(Instant::now());
        assert!(park_requested(&cell), "idle for 2.5 s");
        assert_eq!(wheel.len(), 1, "filed again");

        // It parked: the next look is its keep-alive's, at 15 s, not a park request.
        if let Some(l) = cell.state.lock().conn.as_mut() {
            l.request = None;
            l.parked = true;
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        wheel.expire(Instant::now());
        assert!(!park_requested(&cell) && !requested(&cell));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            wheel.expire(Instant::now()),
            1,
            "keep-alive expired while parked"
        );
        assert!(requested(&cell));
    }

    #[tokio::test(start_paused = true)]
    async fn filing_earlier_leaves_the_later_entry_stale() {
        let wheel = KeepAliveWheel::new(Duration::from_secs(2));
        let cell = connected(1, Duration::from_secs(60));
        if let Some(l) = cell.state.lock().conn.as_mut() {
            l.parked = true;
        }
        file(&wheel, &cell); // under its keep-alive, 60 s
        if let Some(l) = cell.state.lock().conn.as_mut() {
            l.parked = false; // resumed: to be parked again in 2 s
            wheel.schedule(&cell, l, Instant::now());
        }
        assert_eq!(wheel.len(), 2);
        tokio::time::advance(Duration::from_millis(2500)).await;
        wheel.expire(Instant::now());
        assert!(park_requested(&cell));
        tokio::time::advance(Duration::from_secs(60)).await;
        // The 60 s entry is stale (dropped); the live one is a keep-alive expiry.
        assert_eq!(wheel.expire(Instant::now()), 1);
        assert!(wheel.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_of_connections_that_left_are_swept_under_churn() {
        // Long keep-alives: without the sweep these entries would stay ~25 hours.
        let mut wheel = KeepAliveWheel::new(Duration::ZERO);
        wheel.compact_at = 8;
        let cells: Vec<_> = (1..=20)
            .map(|id| connected(id, Duration::from_secs(90_000)))
            .collect();
        for cell in &cells {
            file(&wheel, cell);
        }
        assert_eq!(wheel.len(), 20);
        // 15 leave, as `Broker::detach` does it.
        for cell in &cells[..15] {
            let mut st = cell.state.lock();
            if let Some(link) = st.conn.take() {
                wheel.forget(&link);
            }
        }
        tokio::time::advance(TICK).await;
        assert_eq!(wheel.expire(Instant::now()), 0);
        assert_eq!(
            wheel.len(),
            5,
            "the 15 stale entries are gone, the 5 live ones kept"
        );
        // The live ones are still looked at when due.
        tokio::time::advance(Duration::from_secs(90_001)).await;
        assert_eq!(wheel.expire(Instant::now()), 5);
    }
}
