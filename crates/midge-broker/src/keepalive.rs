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

use crate::session::{Control, SessionCell};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// How often due entries are looked at: a silent client is closed between 1.5 times its
/// keep-alive and that plus one tick.
pub const TICK: Duration = Duration::from_millis(500);

/// One connection waiting for its keep-alive deadline.
struct Entry {
    cell: Weak<SessionCell>,
    conn_id: u64,
}

/// Connections by the tick their keep-alive runs out at.
pub struct KeepAliveWheel {
    start: Instant,
    slots: Mutex<BTreeMap<u64, Vec<Entry>>>,
}

impl Default for KeepAliveWheel {
    fn default() -> Self {
        KeepAliveWheel {
            start: Instant::now(),
            slots: Mutex::new(BTreeMap::new()),
        }
    }
}

impl KeepAliveWheel {
    /// The tick at or after `at`.
    fn tick_of(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.start).as_millis();
        let tick = TICK.as_millis().max(1);
        u64::try_from(ms.div_ceil(tick)).unwrap_or(u64::MAX)
    }

    /// Files connection `conn_id` of `cell` to be looked at when `deadline` has passed.
    pub fn file(&self, cell: &Arc<SessionCell>, conn_id: u64, deadline: Instant) {
        let tick = self.tick_of(deadline);
        self.slots.lock().entry(tick).or_default().push(Entry {
            cell: Arc::downgrade(cell),
            conn_id,
        });
    }

    /// Looks at every entry due by `now`: closes the connections whose client sent nothing
    /// for their keep-alive, files the others again. Returns how many were asked to close.
    pub fn expire(&self, now: Instant) -> usize {
        let due: Vec<Entry> = {
            let mut slots = self.slots.lock();
            let later = slots.split_off(&(self.tick_of(now) + 1));
            let due = std::mem::replace(&mut *slots, later);
            due.into_values().flatten().collect()
        };
        let mut closed = 0;
        for e in due {
            let Some(cell) = e.cell.upgrade() else {
                continue;
            };
            let mut st = cell.state.lock();
            let Some(link) = st.conn.as_ref().filter(|l| l.conn_id == e.conn_id) else {
                // That connection is gone; a new one files itself.
                continue;
            };
            if link.keep_alive_ms == 0 {
                continue;
            }
            let deadline = link.last_read + link.keep_alive();
            if deadline <= now {
                cell.request(&mut st, Control::KeepAliveTimeout);
                closed += 1;
            } else {
                drop(st);
                self.file(&cell, e.conn_id, deadline);
            }
        }
        closed
    }

    /// Entries filed (for tests).
    pub fn len(&self) -> usize {
        self.slots.lock().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{ConnLink, QueueLimits};
    use crate::sys::Stats;

    fn connected(conn_id: u64, keep_alive: Duration) -> Arc<SessionCell> {
        let limits = QueueLimits {
            max_messages: 0,
            max_bytes: 0,
            queue_qos0_offline: false,
        };
        let cell = Arc::new(SessionCell::new(
            1,
            "c".into(),
            limits,
            Arc::new(Stats::default()),
            None,
            false,
        ));
        cell.state.lock().conn = Some(ConnLink {
            conn_id,
            request: None,
            keep_alive_ms: u32::try_from(keep_alive.as_millis()).unwrap_or(u32::MAX),
            last_read: Instant::now(),
        });
        cell
    }

    fn requested(cell: &SessionCell) -> bool {
        cell.state
            .lock()
            .conn
            .as_ref()
            .is_some_and(|l| matches!(l.request, Some(Control::KeepAliveTimeout)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_closed_and_an_active_one_is_filed_again() {
        let wheel = KeepAliveWheel::default();
        let limit = Duration::from_millis(1500);
        let silent = connected(1, limit);
        let active = connected(2, limit);
        wheel.file(&silent, 1, Instant::now() + limit);
        wheel.file(&active, 2, Instant::now() + limit);

        tokio::time::advance(Duration::from_millis(1000)).await;
        assert_eq!(wheel.expire(Instant::now()), 0, "nothing due yet");
        assert_eq!(wheel.len(), 2);

        // The active client sends something at 1.2 s.
        tokio::time::advance(Duration::from_millis(200)).await;
        if let Some(l) = active.state.lock().conn.as_mut() {
            l.last_read = Instant::now();
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
        wheel.file(&cell, 1, Instant::now() + Duration::from_secs(1));
        // A new connection (id 2) attached since: the old entry is stale.
        if let Some(l) = cell.state.lock().conn.as_mut() {
            l.conn_id = 2;
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(wheel.expire(Instant::now()), 0);
        assert!(wheel.is_empty());
        assert!(!requested(&cell));
    }
}
