//! Between the broker's live state and `midge-store`: record conversions, the operations
//! each event writes, and recovery at start-up.
//!
//! What is written (see `docs/design/persistence.md`): sessions that outlive their
//! connection, their subscriptions, QoS 1/2 messages queued for them (the body once, an
//! entry per session), in-flight markers, inbound QoS 2 packet identifiers, retained
//! messages and delayed wills. A QoS 1/2 PUBLISH is acknowledged only once its commit is
//! durable; the other writes are not waited for, because losing them in a crash only
//! causes a resend that the protocol absorbs (QoS 1 duplicate, QoS 2 resend with the same
//! packet identifier).

use crate::message::{Message, SessionId};
use midge_proto::{ByteStr, QoS};
use midge_store::{MessageProperties, MessageRecord, UnixMillis};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

/// Wall-clock milliseconds now.
pub fn now_millis() -> UnixMillis {
    midge_store::unix_millis(SystemTime::now())
}

/// Converts a monotonic deadline to wall-clock milliseconds (for records).
fn to_millis(at: Instant, now: Instant, now_ms: UnixMillis) -> UnixMillis {
    if at >= now {
        now_ms.saturating_add(u64::try_from(at.duration_since(now).as_millis()).unwrap_or(u64::MAX))
    } else {
        now_ms.saturating_sub(u64::try_from(now.duration_since(at).as_millis()).unwrap_or(u64::MAX))
    }
}

/// Converts wall-clock milliseconds back to a monotonic deadline.
fn to_instant(ms: UnixMillis, now: Instant, now_ms: UnixMillis) -> Instant {
    if ms >= now_ms {
        now + std::time::Duration::from_millis(ms - now_ms)
    } else {
        now.checked_sub(std::time::Duration::from_millis(now_ms - ms))
            .unwrap_or(now)
    }
}

/// The stored form of a message.
pub fn message_record(msg: &Message) -> Arc<MessageRecord> {
    let now = Instant::now();
    let now_ms = now_millis();
    Arc::new(MessageRecord {
        topic: msg.topic.to_string(),
        payload: msg.payload.clone(),
        qos: msg.qos.as_u8(),
        retain: msg.retain,
        properties: msg.properties.as_deref().map_or_else(
            MessageProperties::default,
            MessageProperties::from_properties,
        ),
        expires_at: msg.expires_at.map(|at| to_millis(at, now, now_ms)),
    })
}

/// The stored form of a PUBLISH not yet published (a connected client's will): its
/// expiry, which counts from publication, is not set.
pub fn publish_record(p: &midge_proto::Publish) -> MessageRecord {
    MessageRecord {
        topic: p.topic.to_string(),
        payload: p.payload.clone(),
        qos: p.qos.as_u8(),
        retain: p.retain,
        properties: MessageProperties::from_properties(&p.properties),
        expires_at: None,
    }
}

/// The live form of a stored message.
pub fn message_from_record(rec: &MessageRecord, origin: SessionId) -> Arc<Message> {
    let now = Instant::now();
    let now_ms = now_millis();
    Arc::new(Message {
        topic: ByteStr::from(rec.topic.as_str()),
        payload: rec.payload.clone(),
        qos: QoS::from_u8(rec.qos).unwrap_or(QoS::AtMostOnce),
        retain: rec.retain,
        properties: Some(Box::new(rec.properties.to_properties())).filter(|p| !p.is_empty()),
        expires_at: rec.expires_at.map(|ms| to_instant(ms, now, now_ms)),
        origin,
        gate: None,
    })
}

/// The stored form of a session's stage.
pub fn stage_record(stage: crate::session::Stage) -> midge_store::Stage {
    match stage {
        crate::session::Stage::AwaitPubAck => midge_store::Stage::AwaitPubAck,
        crate::session::Stage::AwaitPubRec => midge_store::Stage::AwaitPubRec,
        crate::session::Stage::AwaitPubComp => midge_store::Stage::AwaitPubComp,
    }
}

/// In-flight markers of the session's QoS 1 deliveries still awaiting PUBACK, written when
/// its client detaches (they are not written as each is sent, see `drain_queue`): after a
/// restart they are resent first, with DUP [MQTT-3.3.1-1]. Rewriting a marker that is
/// stored already (an earlier detach, or a restart) is harmless.
pub fn qos1_markers(client: &ByteStr, st: &crate::session::SessionState) -> Vec<midge_store::Op> {
    st.inflight
        .iter()
        .filter(|m| m.msg.seq != 0 && m.stage == crate::session::Stage::AwaitPubAck)
        .map(|m| midge_store::Op::SetInflight {
            client: client.clone(),
            seq: m.msg.seq,
            inflight: midge_store::InflightRecord {
                packet_id: m.packet_id,
                stage: midge_store::Stage::AwaitPubAck,
            },
        })
        .collect()
}

pub fn stage_from_record(stage: midge_store::Stage) -> crate::session::Stage {
    match stage {
        midge_store::Stage::AwaitPubAck => crate::session::Stage::AwaitPubAck,
        midge_store::Stage::AwaitPubRec => crate::session::Stage::AwaitPubRec,
        midge_store::Stage::AwaitPubComp => crate::session::Stage::AwaitPubComp,
    }
}

/// Rebuilds the broker's state from the store at start-up: sessions (offline, with their
/// subscriptions routed, in-flight messages, inbound QoS 2 identifiers and the size of
/// their queues), retained messages and pending wills; then starts each session's expiry
/// and will timers.
///
/// Queued messages stay in the store: each session only counts them (its `Backlog`), and
/// its next connection pages them in ([`page_in`]). In-flight messages are loaded: they
/// are resent at once on reconnect, and the Receive Maximum bounds them.
pub fn recover(
    broker: &Arc<crate::broker::BrokerInner>,
    _store: &dyn midge_store::SessionStore,
    recovered: midge_store::Recovered,
) -> Result<RecoveryStats, midge_store::StoreError> {
    use crate::router::{SubKey, Subscriber};
    use crate::session::{Backlog, Inflight, Queued, StoredSubscription};
    let mut stats = RecoveryStats::default();
    {
        let mut tree = broker.retained.write();
        for (topic, rec) in &recovered.retained {
            tree.insert(topic, message_from_record(rec, 0));
            stats.retained += 1;
        }
    }
    let now_ms = now_millis();
    // A will stored while its client was connected: the broker stopped without the
    // connection ending cleanly, so it goes, its delay counted from now [MQTT-3.1.2-8].
    let mut wills: std::collections::HashMap<String, midge_store::WillRecord> = recovered
        .wills
        .into_iter()
        .map(|(client, will)| (client, will.due_from(now_ms)))
        .collect();
    // One value for every restored session (an Arc clone each, not a new rule set).
    let read_access = broker.recovered_read_access();
    // Timers start once every session is back: a will due at once must find the
    // subscriptions of sessions restored after its own.
    let mut timers = Vec::with_capacity(recovered.sessions.len());
    for rs in recovered.sessions {
        let client = ByteStr::from(rs.client_id.as_str());
        let (cell, _) =
            broker
                .sessions
                .restore(client.clone(), read_access.clone(), rs.session.first_seq);
        let expiry = rs
            .session
            .expiry_interval
            .map(|secs| std::time::Duration::from_secs(u64::from(secs)));
        // Time already spent away while the broker was down counts.
        let left = match (expiry, rs.session.disconnected_at) {
            (Some(e), Some(at)) => {
                Some(e.saturating_sub(std::time::Duration::from_millis(now_ms.saturating_sub(at))))
            }
            (e, _) => e,
        };
        let generation = {
            let mut st = cell.state.lock();
            st.persistent = true;
            st.set_expiry(expiry);
            st.next_seq = rs.next_seq.max(rs.session.first_seq).max(1);
            crate::session::first_seq_above(st.next_seq);
            st.inbound_qos2 = rs.inbound_qos2.iter().copied().collect();
            for (filter, sub) in &rs.subscriptions {
                let options = sub.subscription_options();
                st.subscriptions.insert(
                    ByteStr::from(filter.as_str()),
                    StoredSubscription {
                        options,
                        id: sub.id,
                    },
                );
            }
            for m in &rs.inflight {
                let msg = match &m.message {
                    Some(q) => queued_from_record(q),
                    // At AwaitPubComp only the packet identifier matters.
                    None => Queued {
                        seq: m.seq,
                        msg: Arc::new(Message {
                            topic: ByteStr::new(),
                            payload: bytes::Bytes::new(),
                            qos: QoS::ExactlyOnce,
                            retain: false,
                            properties: Default::default(),
                            expires_at: None,
                            origin: 0,
                            gate: None,
                        }),
                        qos: QoS::ExactlyOnce,
                        retain: false,
                        sub_ids: Default::default(),
                    },
                };
                st.inflight.push_back(Inflight {
                    packet_id: m.inflight.packet_id,
                    msg,
                    stage: stage_from_record(m.inflight.stage),
                    unsent: false,
                });
                stats.inflight += 1;
            }
            st.backlog = Backlog {
                count: usize::try_from(rs.queued).unwrap_or(usize::MAX),
                read_from: rs.first_queued_seq,
                contiguous_from: st.next_seq,
            };
            st.queued_bytes = usize::try_from(rs.queued_bytes).unwrap_or(usize::MAX);
            stats.queued += st.backlog.count;
            st.generation += 1;
            st.generation
        };
        for (filter, sub) in &rs.subscriptions {
            let options = sub.subscription_options();
            let stored = ByteStr::from(filter.as_str());
            let subscriber = Subscriber {
                target: cell.clone(),
                options,
                id: sub.id,
            };
            match midge_proto::topic::parse_shared(filter) {
                Ok(Some((_, inner))) => {
                    broker.router.subscribe(
                        inner,
                        SubKey {
                            session: cell.id,
                            shared: Some(stored),
                        },
                        subscriber,
                    );
                }
                _ => {
                    broker.router.subscribe(
                        filter,
                        SubKey {
                            session: cell.id,
                            shared: None,
                        },
                        subscriber,
                    );
                }
            }
            stats.subscriptions += 1;
        }
        let mut will_delay = None;
        if let Some(w) = wills.remove(&rs.client_id) {
            cell.state
                .lock()
                .set_pending_will(message_from_record(&w.message, cell.id));
            will_delay = Some(std::time::Duration::from_millis(
                w.publish_at.saturating_sub(now_ms),
            ));
        }
        timers.push((cell, generation, left, will_delay));
        stats.sessions += 1;
    }
    for (cell, generation, left, will_delay) in timers {
        broker.schedule_session_end(&cell, generation, left, will_delay);
    }
    // Wills of sessions that ended while the broker was down are due now.
    for (client, w) in wills {
        let msg = message_from_record(&w.message, 0);
        let mut scratch = crate::router::RouteScratch::default();
        drop(broker.publish_durable(&msg, &mut scratch, None));
        broker.commit_detached(vec![midge_store::Op::DeleteWill {
            client: ByteStr::from(client.as_str()),
        }]);
        stats.wills += 1;
    }
    Ok(stats)
}

/// After this many barriers (each a round trip through the store's writer, a millisecond
/// or more) a sequence number still missing from the store is taken as lost and passed
/// over. It cannot happen while the store works: every number given out is committed
/// right after routing, with no await in between.
const MAX_BARRIERS: u32 = 10_000;

/// Reads up to `want` messages of `cell`'s backlog from sequence number `from` on a
/// blocking thread and moves them into its queue, then wakes its connection. Runs as a
/// task, one at a time per session (`SessionState::paging`).
///
/// A publisher gives a message its sequence number while routing and commits it just
/// after; the store shows it only once that commit is applied. When the first message to
/// read is not there yet, this awaits an empty commit, a barrier that resolves once every
/// commit called before it is applied, and reads again: nothing is skipped, and order is
/// kept because nothing after a missing message is taken.
pub(crate) async fn page_in(
    cell: Arc<crate::session::SessionCell>,
    store: Arc<dyn midge_store::SessionStore>,
    generation: u64,
    from: u64,
    want: usize,
) {
    use crate::session::PageOutcome;
    let mut barriers = 0u32;
    loop {
        let s = store.clone();
        let client = cell.client_id.clone();
        let read = tokio::task::spawn_blocking(move || s.read_queue(&client, from, want)).await;
        let entries = match read {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => return page_failed(&cell, &e.to_string()),
            Err(e) => return page_failed(&cell, &e.to_string()),
        };
        let skip = barriers >= MAX_BARRIERS;
        let outcome = {
            let mut st = cell.state.lock();
            let outcome = cell.accept_page(&mut st, generation, from, entries, skip);
            if matches!(outcome, PageOutcome::Accepted(_) | PageOutcome::Stale) {
                cell.wake(&mut st);
            }
            outcome
        };
        match outcome {
            PageOutcome::Accepted(_) | PageOutcome::Stale => {
                if skip {
                    tracing::error!(client = %cell.client_id, from, "queued messages missing from the store were passed over");
                }
                return;
            }
            PageOutcome::Missing => {
                if let Err(e) = store.commit(Vec::new()).await {
                    return page_failed(&cell, &e.to_string());
                }
                barriers += 1;
            }
        }
    }
}

/// The store could not be read: the queue stays on disk, and the client is disconnected
/// (0x80) so that it does not wait for messages that cannot come.
fn page_failed(cell: &crate::session::SessionCell, error: &str) {
    tracing::error!(client = %cell.client_id, "reading the queue from the store failed: {error}");
    let mut st = cell.state.lock();
    st.paging = false;
    cell.request(
        &mut st,
        crate::session::Control::Close(midge_proto::ReasonCode::UNSPECIFIED_ERROR),
    );
}

pub(crate) fn queued_from_record(q: &midge_store::QueuedMessage) -> crate::session::Queued {
    crate::session::Queued {
        seq: q.seq,
        msg: message_from_record(&q.message, 0),
        qos: QoS::from_u8(q.entry.qos).unwrap_or(QoS::AtLeastOnce),
        retain: q.entry.retain,
        sub_ids: q.entry.subscription_ids.iter().copied().collect(),
    }
}

/// What recovery rebuilt, for the start-up log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecoveryStats {
    pub sessions: usize,
    pub subscriptions: usize,
    pub queued: usize,
    pub inflight: usize,
    pub retained: usize,
    pub wills: usize,
}
