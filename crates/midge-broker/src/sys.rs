//! Counters and the `$SYS/broker/...` publisher, with Mosquitto's topic names.

use crate::broker::BrokerInner;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Broker-wide counters. Relaxed atomics: they are statistics, not synchronisation.
#[derive(Debug, Default)]
pub struct Stats {
    pub clients_connected: AtomicU64,
    pub clients_maximum: AtomicU64,
    pub connections_total: AtomicU64,
    /// Every packet received / sent.
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    pub publish_received: AtomicU64,
    pub publish_sent: AtomicU64,
    /// Messages dropped because a queue was full, expired, or too large for the client.
    pub messages_dropped: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Connections closed at once: connection limit or per-address rate reached.
    pub connections_refused: AtomicU64,
    /// Subscriptions refused by a limit (count, topic length or levels).
    pub subscriptions_refused: AtomicU64,
    /// Times a client was slowed down for publishing faster than allowed.
    pub publish_throttled: AtomicU64,
    /// Times a publisher was paced because a subscriber's queue was past its soft limit
    /// (acknowledgement held, or a QoS 0 publisher not read).
    pub publish_paced: AtomicU64,
    /// CONNECTs refused for bad credentials or lack of authorisation.
    pub auth_failures: AtomicU64,
    /// Subscribers disconnected for not keeping up (`slow_consumer_timeout`).
    pub slow_disconnected: AtomicU64,
}

impl Stats {
    pub fn client_connected(&self) {
        let now = self.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.clients_maximum.fetch_max(now, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn client_disconnected(&self) {
        self.clients_connected.fetch_sub(1, Ordering::Relaxed);
    }
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The `$SYS` values at one instant, as (topic, value) pairs.
pub fn snapshot(broker: &BrokerInner) -> Vec<(&'static str, String)> {
    let s = &broker.stats;
    let connected = get(&s.clients_connected);
    let total_sessions = broker.sessions.len() as u64;
    let uptime = broker.started.elapsed().as_secs();
    let mut values = vec![
        ("$SYS/broker/uptime", format!("{uptime} seconds")),
        ("$SYS/broker/clients/connected", connected.to_string()),
        ("$SYS/broker/clients/active", connected.to_string()),
        (
            "$SYS/broker/clients/total",
            total_sessions.max(connected).to_string(),
        ),
        (
            "$SYS/broker/clients/disconnected",
            total_sessions.saturating_sub(connected).to_string(),
        ),
        (
            "$SYS/broker/clients/inactive",
            total_sessions.saturating_sub(connected).to_string(),
        ),
        (
            "$SYS/broker/clients/maximum",
            get(&s.clients_maximum).to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            get(&s.messages_received).to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            get(&s.messages_sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/received",
            get(&s.publish_received).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/sent",
            get(&s.publish_sent).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/dropped",
            get(&s.messages_dropped).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/throttled",
            get(&s.publish_throttled).to_string(),
        ),
        (
            "$SYS/broker/publish/messages/paced",
            get(&s.publish_paced).to_string(),
        ),
        (
            "$SYS/broker/connections/refused",
            get(&s.connections_refused).to_string(),
        ),
        (
            "$SYS/broker/subscriptions/refused",
            get(&s.subscriptions_refused).to_string(),
        ),
        (
            "$SYS/broker/clients/auth_failures",
            get(&s.auth_failures).to_string(),
        ),
        (
            "$SYS/broker/clients/slow_disconnected",
            get(&s.slow_disconnected).to_string(),
        ),
        (
            "$SYS/broker/bytes/received",
            get(&s.bytes_received).to_string(),
        ),
        ("$SYS/broker/bytes/sent", get(&s.bytes_sent).to_string()),
        (
            "$SYS/broker/subscriptions/count",
            broker.router.len().to_string(),
        ),
        (
            "$SYS/broker/retained messages/count",
            broker.retained_count().to_string(),
        ),
    ];
    values.extend(store_values(broker));
    values
}

/// The store's alarm: `$SYS/broker/store/status` is `ok` or the fault that stopped it
/// saving state (the store keeps it, see `SessionStore::health`), and
/// `$SYS/broker/store/failures` counts the commits that failed. None without a store.
fn store_values(broker: &BrokerInner) -> Vec<(&'static str, String)> {
    let Some(store) = &broker.store else {
        return Vec::new();
    };
    let health = store.health();
    vec![
        (
            "$SYS/broker/store/status",
            health.fault.unwrap_or_else(|| "ok".to_owned()),
        ),
        ("$SYS/broker/store/failures", health.failures.to_string()),
    ]
}

/// Publishes `$SYS` values every `sys_interval`, as retained messages, only those that
/// changed since the last round (as Mosquitto does). Ends when the broker is dropped.
pub async fn run(broker: Weak<BrokerInner>, interval: std::time::Duration) {
    let mut last: HashMap<&'static str, String> = HashMap::new();
    if let Some(b) = broker.upgrade() {
        b.publish_internal(
            "$SYS/broker/version",
            format!("midge version {}", env!("CARGO_PKG_VERSION")),
            true,
        );
    }
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        let Some(b) = broker.upgrade() else { return };
        publish_changed(&b, &mut last);
    }
}

fn publish_changed(broker: &Arc<BrokerInner>, last: &mut HashMap<&'static str, String>) {
    for (topic, value) in snapshot(broker) {
        if last.get(topic) == Some(&value) {
            continue;
        }
        broker.publish_internal(topic, value.clone(), true);
        last.insert(topic, value);
    }
}
