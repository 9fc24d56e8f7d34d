//! Slow consumers: a connected subscriber that does not keep up is disconnected after
//! `slow_consumer_timeout`, so that it does not hold a full queue (and the messages it
//! loses) for ever.
//!
//! Nobody waits for a slow subscriber: its queue is bounded and what does not fit is
//! dropped for it alone (`SessionCell::enqueue`). This module only decides when it has
//! been slow long enough. A subscriber is slow while either
//! - its queue is at its limit and has not drained to half of it since (a queue that
//!   drains a little now and then, only to fill again, stays slow), or
//! - its write buffer is at the high-water mark and its socket accepts nothing.
//!
//! Each connection that is slow keeps a [`Stall`] (boxed: most never are) with one timer,
//! set for the earliest of the two plus the timeout and moved on lazily when it fires,
//! so a subscriber that goes in and out of congestion costs no timer per change.

use crate::connection::{Close, Conn};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// Since when a connection has been slow, and the timer that ends it.
pub(crate) struct Stall {
    /// The queue reached its limit then and has not drained to half since.
    full_since: Option<Instant>,
    /// The write buffer reached its high-water mark then and nothing was written since.
    unwritten_since: Option<Instant>,
    /// Never later than the earliest of the two plus the timeout.
    timer: Pin<Box<Sleep>>,
}

impl Stall {
    /// Polls the timer (the connection's main loop waits on it beside the socket).
    pub(crate) fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.timer.as_mut().poll(cx)
    }

    fn earliest(&self) -> Option<Instant> {
        match (self.full_since, self.unwritten_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Conn {
    /// What `drain_queue` saw of the session's queue at `now`: whether it is `full`
    /// (messages were dropped since it last had room) and whether it is `caught_up` (at
    /// most half full).
    pub(crate) fn note_queue(&mut self, full: bool, caught_up: bool, now: Instant) {
        if full {
            if let Some(stall) = self.stall_mut(now) {
                stall.full_since.get_or_insert(now);
            }
        } else if caught_up {
            if let Some(stall) = self.stall.as_deref_mut() {
                stall.full_since = None;
            }
        }
    }

    /// The write buffer is at its high-water mark: the socket has not taken what there
    /// is to send. Starts the clock if it is not running.
    pub(crate) fn note_unwritten(&mut self) {
        if self
            .stall
            .as_ref()
            .is_some_and(|s| s.unwritten_since.is_some())
        {
            return;
        }
        let now = Instant::now();
        if let Some(stall) = self.stall_mut(now) {
            stall.unwritten_since = Some(now);
        }
    }

    /// The socket took some bytes.
    pub(crate) fn note_written(&mut self) {
        if let Some(stall) = self.stall.as_deref_mut() {
            stall.unwritten_since = None;
        }
    }

    /// The connection's stall, made when it has none (with the timer at `now` plus the
    /// timeout); `None` when slow consumers are never disconnected.
    fn stall_mut(&mut self, now: Instant) -> Option<&mut Stall> {
        let timeout = self.broker.config.slow_consumer_timeout;
        if timeout.is_zero() || self.session.is_none() {
            return None;
        }
        Some(self.stall.get_or_insert_with(|| {
            Box::new(Stall {
                full_since: None,
                unwritten_since: None,
                timer: Box::pin(tokio::time::sleep_until(now + timeout)),
            })
        }))
    }

    /// The stall timer fired: the close for a subscriber that has been slow for the whole
    /// timeout; otherwise the timer is moved to when it would be (or the stall forgotten
    /// if the connection is no longer slow).
    pub(crate) fn stall_fired(&mut self) -> Option<Close> {
        let timeout = self.broker.config.slow_consumer_timeout;
        let stall = self.stall.as_deref_mut()?;
        let Some(since) = stall.earliest() else {
            self.stall = None;
            return None;
        };
        let due = since + timeout;
        if Instant::now() < due {
            stall.timer.as_mut().reset(due);
            return None;
        }
        let why = if stall.full_since == Some(since) {
            "its queue stayed at its limit"
        } else {
            "its socket accepted nothing"
        };
        let dropped = self
            .session
            .as_ref()
            .map_or(0, |cell| cell.state.lock().dropped());
        tracing::warn!(
            client = %self.client_id,
            peer = %self.peer,
            "slow consumer: {why} for {}s ({dropped} messages dropped for it); disconnecting",
            timeout.as_secs()
        );
        self.broker
            .stats
            .slow_disconnected
            .fetch_add(1, Ordering::Relaxed);
        Some(Close::SlowConsumer)
    }
}
