//! Start-up recovery: reads every table once, groups what belongs to each session, and
//! lists the deletions for what expired while the broker was down.
//!
//! Queued message bodies are not read (the broker reads queues lazily); only the bodies
//! of in-flight messages are, since they are resent at once on reconnect.

use crate::engine::Engine;
use crate::error::StoreError;
use crate::key::{self, Table};
use crate::op::Op;
use crate::record::{
    self, unix_millis, InflightRecord, MessageId, MessageRecord, QueueEntry, SessionRecord, Stage,
    SubscriptionRecord, WillRecord,
};
use crate::session_store::{Dropped, InflightMessage, QueuedMessage, Recovered, RecoveredSession};
use crate::store::damaged_key;
use midge_proto::ByteStr;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

/// Visits every pair of a table; an `Err` from `f` names what is wrong with that pair and
/// stops the load with [`StoreError::Damaged`] naming table and key.
fn scan_all<E: Engine>(
    engine: &E,
    path: &Path,
    table: Table,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), String>,
) -> Result<(), StoreError> {
    let mut bad = None;
    engine
        .scan(table, &[], &[], &mut |k, v| match f(k, v) {
            Ok(()) => true,
            Err(what) => {
                bad = Some(damaged_key(path, table, k, &what));
                false
            }
        })
        .map_err(|e| StoreError::engine(path, e))?;
    bad.map_or(Ok(()), Err)
}

/// Which sessions a client-keyed entry may belong to.
struct Clients {
    live: BTreeMap<String, RecoveredSession>,
    expired: BTreeSet<String>,
}

enum Owner<'a> {
    Live(&'a mut RecoveredSession),
    /// Its session expired: the session's deletion removes it.
    Expired,
    /// No session (left over from damage), or an earlier session of the client ID:
    /// removed.
    Stray,
}

impl Clients {
    fn owner(&mut self, client: &str) -> Owner<'_> {
        if let Some(s) = self.live.get_mut(client) {
            Owner::Live(s)
        } else if self.expired.contains(client) {
            Owner::Expired
        } else {
            Owner::Stray
        }
    }

    /// As [`Clients::owner`] for the queue entry or in-flight marker `seq` of `client`:
    /// below its session's first sequence number it is an earlier session's (a commit
    /// that landed after that session's deletion), so a stray.
    fn owner_at(&mut self, client: &str, seq: u64) -> Owner<'_> {
        match self.owner(client) {
            Owner::Live(s) if seq < s.session.first_seq => Owner::Stray,
            other => other,
        }
    }
}

/// Reads the whole state as of `now`. Returns it with the ops that delete what expired
/// and what belongs to no session.
pub(crate) fn load<E: Engine>(
    engine: &E,
    path: &Path,
    now: SystemTime,
    read_message: impl Fn(MessageId) -> Result<Option<MessageRecord>, StoreError>,
) -> Result<(Recovered, Vec<Op>), StoreError> {
    let now = unix_millis(now);
    let mut cleanup = Vec::new();
    let mut dropped = Dropped::default();
    let mut clients = load_sessions(engine, path, now, &mut cleanup, &mut dropped)?;

    scan_all(engine, path, Table::Subscriptions, |k, v| {
        let (client, filter) = key::split_client(k)?;
        let filter = key::utf8(filter)?;
        let sub: SubscriptionRecord = record::decode(v)?;
        match clients.owner(client) {
            Owner::Live(s) => s.subscriptions.push((filter.to_owned(), sub)),
            Owner::Expired => {}
            Owner::Stray => {
                dropped.strays += 1;
                cleanup.push(Op::DeleteSubscription {
                    client: client.into(),
                    filter: filter.into(),
                });
            }
        }
        Ok(())
    })?;

    let mut inflight: BTreeMap<(String, u64), InflightRecord> = BTreeMap::new();
    scan_all(engine, path, Table::Inflight, |k, v| {
        let (client, seq) = key::split_client_seq(k)?;
        let rec: InflightRecord = record::decode(v)?;
        match clients.owner_at(client, seq) {
            Owner::Live(_) => {
                inflight.insert((client.to_owned(), seq), rec);
            }
            Owner::Expired => {}
            Owner::Stray => {
                dropped.strays += 1;
                cleanup.push(Op::Dequeue {
                    client: client.into(),
                    seq,
                });
            }
        }
        Ok(())
    })?;

    let mut inflight_entries: BTreeMap<(String, u64), QueueEntry> = BTreeMap::new();
    // Entries written before queue entries kept the payload length: their bodies are read
    // for it (once, after the scan).
    let mut legacy: Vec<(String, MessageId)> = Vec::new();
    scan_all(engine, path, Table::Queue, |k, v| {
        let (client, seq) = key::split_client_seq(k)?;
        let entry = QueueEntry::decode(v)?;
        let in_flight = inflight.contains_key(&(client.to_owned(), seq));
        match clients.owner_at(client, seq) {
            Owner::Live(s) => {
                s.next_seq = s.next_seq.max(seq.saturating_add(1));
                if in_flight {
                    inflight_entries.insert((client.to_owned(), seq), entry);
                } else if entry.expires_at.is_some_and(|at| at <= now) {
                    dropped.queued_messages += 1;
                    cleanup.push(Op::Dequeue {
                        client: client.into(),
                        seq,
                    });
                } else {
                    if s.queued == 0 {
                        s.first_queued_seq = seq;
                    }
                    s.queued += 1;
                    match entry.payload_len {
                        Some(n) => s.queued_bytes += u64::from(n),
                        None => legacy.push((client.to_owned(), entry.message_id)),
                    }
                }
            }
            Owner::Expired => {}
            Owner::Stray => {
                dropped.strays += 1;
                cleanup.push(Op::Dequeue {
                    client: client.into(),
                    seq,
                });
            }
        }
        Ok(())
    })?;

    for (client, id) in legacy {
        let len = read_message(id)?.map_or(0, |m| m.payload.len());
        if let Some(s) = clients.live.get_mut(&client) {
            s.queued_bytes += u64::try_from(len).unwrap_or(u64::MAX);
        }
    }

    for ((client, seq), rec) in inflight {
        let Some(session) = clients.live.get_mut(&client) else {
            continue;
        };
        session.next_seq = session.next_seq.max(seq.saturating_add(1));
        let message = match inflight_entries.remove(&(client.clone(), seq)) {
            Some(entry) => {
                let body = read_message(entry.message_id)?.ok_or_else(|| {
                    damaged_key(
                        path,
                        Table::Queue,
                        &key::client_seq(&client, seq),
                        &format!("refers to message {} which is missing", entry.message_id),
                    )
                })?;
                Some(QueuedMessage {
                    seq,
                    entry,
                    message: Arc::new(body),
                })
            }
            None if rec.stage == Stage::AwaitPubComp => None,
            None => {
                tracing::warn!(
                    store = %path.display(),
                    client = %client,
                    seq,
                    "in-flight marker without its queue entry; dropped"
                );
                dropped.strays += 1;
                cleanup.push(Op::Dequeue {
                    client: ByteStr::from(client.as_str()),
                    seq,
                });
                continue;
            }
        };
        session.inflight.push(InflightMessage {
            seq,
            inflight: rec,
            message,
        });
    }

    scan_all(engine, path, Table::InboundQos2, |k, _| {
        let (client, packet_id) = key::split_client_packet_id(k)?;
        match clients.owner(client) {
            Owner::Live(s) => s.inbound_qos2.push(packet_id),
            Owner::Expired => {}
            Owner::Stray => {
                dropped.strays += 1;
                cleanup.push(Op::RemoveInboundQos2 {
                    client: client.into(),
                    packet_id,
                });
            }
        }
        Ok(())
    })?;

    let mut wills = Vec::new();
    scan_all(engine, path, Table::Wills, |k, v| {
        let will = WillRecord::decode(v)?;
        wills.push((key::utf8(k)?.to_owned(), will));
        Ok(())
    })?;

    let mut retained = Vec::new();
    scan_all(engine, path, Table::Retained, |k, v| {
        let topic = key::utf8(k)?;
        let msg: MessageRecord = record::decode(v)?;
        if msg.is_expired(now) {
            dropped.retained_messages += 1;
            cleanup.push(Op::DeleteRetained {
                topic: topic.into(),
            });
        } else {
            retained.push((topic.to_owned(), msg));
        }
        Ok(())
    })?;

    let sessions = clients.live.into_values().collect();
    if dropped.strays > 0 {
        tracing::warn!(
            store = %path.display(),
            entries = dropped.strays,
            "removed entries that belonged to no session"
        );
    }
    Ok((
        Recovered {
            sessions,
            retained,
            wills,
            dropped,
        },
        cleanup,
    ))
}

/// Reads the sessions; expired ones are listed for deletion.
fn load_sessions<E: Engine>(
    engine: &E,
    path: &Path,
    now: u64,
    cleanup: &mut Vec<Op>,
    dropped: &mut Dropped,
) -> Result<Clients, StoreError> {
    let mut clients = Clients {
        live: BTreeMap::new(),
        expired: BTreeSet::new(),
    };
    scan_all(engine, path, Table::Sessions, |k, v| {
        let client = key::utf8(k)?;
        let session = SessionRecord::decode(v)?;
        if session.is_expired(now) {
            dropped.sessions += 1;
            clients.expired.insert(client.to_owned());
            cleanup.push(Op::DeleteSession {
                client: client.into(),
            });
        } else {
            clients.live.insert(
                client.to_owned(),
                RecoveredSession {
                    client_id: client.to_owned(),
                    subscriptions: Vec::new(),
                    inflight: Vec::new(),
                    inbound_qos2: Vec::new(),
                    queued: 0,
                    queued_bytes: 0,
                    first_queued_seq: 0,
                    next_seq: session.first_seq,
                    session,
                },
            );
        }
        Ok(())
    })?;
    Ok(clients)
}
