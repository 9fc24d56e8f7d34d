//! Outgoing PUBLISH: moving queued messages into the write buffer within the in-flight
//! window, with per-delivery properties (expiry left, subscription identifiers, topic
//! alias) and the client's maximum packet size.

use crate::connection::{end_wait, Conn, HeldAck, RetainedAfter, ACK_HOLD_MAX, WRITE_HIGH_WATER};
use crate::router::DeliveryTarget;
use crate::session::{Control, Inflight, Queued, SessionCell, SessionState, Stage, PAGE};
use midge_proto::{encoded_len, ByteStr, Packet, Properties, PubResp, Publish, QoS};
use midge_store::CommitTicket;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::time::Instant;

impl Conn {
    /// The in-flight window towards this client: the smaller of `max_inflight_messages`
    /// and the client's Receive Maximum [MQTT-3.3.4-9].
    fn inflight_window(&self) -> usize {
        let ours = match self.broker.config.max_inflight_messages {
            0 => usize::from(u16::MAX),
            n => usize::from(n),
        };
        ours.min(usize::from(self.client_receive_max))
    }

    /// Moves queued messages into the write buffer: QoS 0 at once, QoS 1/2 while the
    /// in-flight window has room. Stops at the write high-water mark. A request to this
    /// connection (takeover, kick) comes first: it is returned and nothing is moved. A
    /// request to park is not in a hurry: the queue is drained, and `Control::Park` is
    /// returned only if nothing is left to send (a queue waiting for the client or the
    /// store keeps the connection; parked, it would be taken back at once).
    pub(crate) fn drain_queue(&mut self, cell: &Arc<SessionCell>) -> Option<Control> {
        let window = self.inflight_window();
        let now = Instant::now();
        // What the packets just handled left for the store goes first, in one commit with
        // what this drain adds.
        let mut ops = std::mem::take(&mut self.unsent_ops);
        let mut st = cell.state.lock();
        let mut park = false;
        if let Some(link) = st.conn.as_mut().filter(|l| l.conn_id == self.conn_id) {
            // Recorded first: a connection that parks must not take an older read with it
            // (its keep-alive would run out early).
            if self.read_since_drain {
                link.set_last_read(now);
                self.read_since_drain = false;
            }
            match link.request.take() {
                Some(Control::Park) => park = true,
                Some(request) => {
                    // The connection ends: `finish` commits them.
                    self.unsent_ops = ops;
                    return Some(request);
                }
                None => {}
            }
        }
        // Messages were dropped for this client since its queue last had room.
        let was_full = st.congested;
        if st.unsent_resends > 0 {
            self.resend_marked(&mut st, window);
        }
        while self.wbuf.len() < WRITE_HIGH_WATER {
            let Some(front) = st.queue.front() else { break };
            if front.msg.gate.as_ref().is_some_and(|g| !g.pass(cell)) {
                // Not before its publisher's commit is durable; the gate wakes us.
                break;
            }
            if front.msg.is_expired(now) {
                // Expired while queued: never sent [MQTT-3.3.2-5].
                if let Some(q) = st.pop_queued() {
                    dequeue_op(&mut ops, cell, q.seq);
                }
                self.broker
                    .stats
                    .messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if front.qos == QoS::AtMostOnce {
                if let Some(q) = st.pop_queued() {
                    self.write_delivery(&q, 0, false);
                }
                continue;
            }
            if st.inflight.len() - usize::from(st.unsent_resends) >= window {
                break;
            }
            let seq = front.seq;
            let Some(packet_id) = packet_id_for(&mut st, seq) else {
                break;
            };
            let Some(q) = st.pop_queued() else { break };
            if self.write_delivery(&q, packet_id, false) {
                let stage = if q.qos == QoS::AtLeastOnce {
                    Stage::AwaitPubAck
                } else {
                    Stage::AwaitPubRec
                };
                // A QoS 1 delivery's marker is written when the client detaches with it
                // still in flight (`BrokerInner::detach`), not now: most are acknowledged
                // long before, and a marker lost in a crash costs only the DUP flag of the
                // resend (its packet identifier comes from `seq`). QoS 2 needs it now: see
                // `packet_id_for`.
                if q.seq != 0 && stage == Stage::AwaitPubRec {
                    ops.push(midge_store::Op::SetInflight {
                        client: cell.client_id.clone(),
                        seq: q.seq,
                        inflight: midge_store::InflightRecord {
                            packet_id,
                            stage: crate::persist::stage_record(stage),
                        },
                    });
                }
                st.inflight.push_back(Inflight {
                    packet_id,
                    msg: q,
                    stage,
                    unsent: false,
                });
            } else {
                dequeue_op(&mut ops, cell, q.seq);
            }
        }
        cell.after_drain(&mut st);
        let full = was_full || st.congested;
        let caught_up = cell.at_most_half_full(&st);
        self.request_page(cell, &mut st);
        let park = park && st.nothing_to_send();
        drop(st);
        self.note_queue(full, caught_up, now);
        if let Some(at) = self.read_commit_at.take() {
            // Acknowledgements wait for these writes (an empty commit still waits for the
            // earlier ones): the first of them holds the ones after it.
            let ticket = self.broker.commit(ops);
            if let Some(held) = usize::try_from(at)
                .ok()
                .and_then(|i| self.held_acks.get_mut(i))
            {
                held.ticket = ticket;
            }
        } else if !ops.is_empty() {
            self.broker.commit_detached(ops);
        }
        park.then_some(Control::Park)
    }

    /// Starts reading the next page of the session's backlog from the store when fewer
    /// than half a page is left in memory. The read runs on a blocking thread
    /// (`persist::page_in`), so a slow disk never stalls this connection's task or its
    /// worker thread; when the page is in, the session's `notify` wakes the connection.
    fn request_page(&self, cell: &Arc<SessionCell>, st: &mut SessionState) {
        let b = st.backlog;
        if b.count == 0 || st.paging || st.queue.len() >= PAGE / 2 {
            return;
        }
        let Some(store) = self.broker.store.clone() else {
            return;
        };
        st.paging = true;
        let want = (PAGE - st.queue.len()).min(b.count);
        tokio::spawn(crate::persist::page_in(
            cell.clone(),
            store,
            st.generation,
            b.read_from,
            want,
        ));
    }

    /// Acknowledges an inbound QoS 1/2 PUBLISH (PUBACK or PUBREC). When the message was
    /// queued past a subscriber's soft limit, or an earlier acknowledgement is held, the
    /// acknowledgement waits (in order [MQTT-4.6.0-2, MQTT-4.6.0-3]) until the subscribers
    /// have room, at most `ACK_HOLD_MAX`: this paces the publisher by its own in-flight
    /// window.
    pub(crate) fn acknowledge(&mut self, packet: Packet) {
        self.acknowledge_after(packet, None);
    }

    /// Sends `packet` (SUBACK, UNSUBACK) once `ticket` is durable, in order with the
    /// acknowledgements already held; at once when there is neither. Then queues the
    /// retained messages in `then` (a SUBSCRIBE's), so that they follow the SUBACK.
    pub(crate) fn send_after(
        &mut self,
        packet: Packet,
        ticket: Option<CommitTicket>,
        then: Option<Box<RetainedAfter>>,
    ) {
        if self.held_acks.is_empty() && ticket.is_none() {
            self.send(&packet);
            if let Some(r) = then {
                self.queue_retained_for(*r);
            }
            return;
        }
        let now = Instant::now();
        self.held_acks.push_back(HeldAck {
            packet,
            waiting: Vec::new(),
            since: now,
            deadline: now + ACK_HOLD_MAX,
            ticket,
            then,
        });
    }

    /// As [`Conn::acknowledge`], and not before `ticket` (the message's store commit) is
    /// durable: a QoS 1/2 PUBLISH is acknowledged only once nothing can lose it.
    pub(crate) fn acknowledge_after(&mut self, packet: Packet, ticket: Option<CommitTicket>) {
        if self.scratch.congested.is_empty() && self.held_acks.is_empty() && ticket.is_none() {
            self.send(&packet);
            return;
        }
        let waiting = std::mem::take(&mut self.scratch.congested);
        let now = Instant::now();
        let mut deadline = now + ACK_HOLD_MAX;
        if !waiting.is_empty() {
            self.broker
                .stats
                .publish_paced
                .fetch_add(1, Ordering::Relaxed);
            deadline = hold_deadline(&waiting, now);
        }
        self.held_acks.push_back(HeldAck {
            packet,
            waiting,
            since: now,
            deadline,
            ticket,
            then: None,
        });
    }

    /// Sends `packet` (PUBREL, PUBCOMP) once the writes gathered in `unsent_ops` (the
    /// one it follows among them) are durable: they are committed together at the end of
    /// the read (`drain_queue`), in order with the acknowledgements already held.
    pub(crate) fn acknowledge_after_read_commit(&mut self, packet: Packet) {
        let now = Instant::now();
        if self.read_commit_at.is_none() {
            self.read_commit_at = Some(u32::try_from(self.held_acks.len()).unwrap_or(u32::MAX));
        }
        self.held_acks.push_back(HeldAck {
            packet,
            waiting: Vec::new(),
            since: now,
            deadline: now + ACK_HOLD_MAX,
            ticket: None,
            then: None,
        });
    }

    /// Sends the held acknowledgements whose commits are durable and whose subscribers
    /// have room (or whose wait for room ran out), in order.
    pub(crate) fn release_held_acks(&mut self) {
        let now = Instant::now();
        while let Some(front) = self.held_acks.front_mut() {
            if let Some(ticket) = front.ticket.as_mut() {
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(ticket).poll(&mut cx) {
                    Poll::Pending => break,
                    Poll::Ready(result) => {
                        front.ticket = None;
                        if let Err(e) = result {
                            tracing::error!(client = %self.client_id, "store write failed: {e}");
                            self.store_failed = true;
                            return;
                        }
                    }
                }
            }
            if !front.waiting.is_empty()
                && !end_wait(&mut front.waiting, front.since, front.deadline, now)
            {
                break;
            }
            if let Some(held) = self.held_acks.pop_front() {
                self.send(&held.packet);
                if let Some(r) = held.then {
                    self.queue_retained_for(*r);
                }
            }
        }
    }

    /// What the connection waits on while an acknowledgement is held.
    pub(crate) fn held_ack_wait(&self) -> Option<(Arc<dyn DeliveryTarget>, Instant)> {
        let front = self.held_acks.front()?;
        let target = front.waiting.first()?.clone();
        Some((target, front.deadline))
    }

    /// Resends in-flight entries marked after a reconnect, oldest first, while the window
    /// has room (a QoS 2 flow waiting for PUBCOMP holds its slot too).
    fn resend_marked(&mut self, st: &mut SessionState, window: usize) {
        let mut drop_ids = Vec::new();
        for i in 0..st.inflight.len() {
            if st.inflight.len() - usize::from(st.unsent_resends) >= window
                || self.wbuf.len() >= WRITE_HIGH_WATER
            {
                break;
            }
            let Some(m) = st.inflight.get(i) else { break };
            if !m.unsent {
                continue;
            }
            let packet = match m.stage {
                Stage::AwaitPubAck | Stage::AwaitPubRec => {
                    self.outgoing_publish(&m.msg, m.packet_id, true)
                }
                Stage::AwaitPubComp => Some(Packet::PubRel(PubResp::new(m.packet_id))),
            };
            if let Some(p) = packet {
                self.send(&p);
            } else {
                // Too large for the client now: discarded as if delivered [MQTT-3.1.2-25].
                drop_ids.push(m.packet_id);
            }
            if let Some(m) = st.inflight.get_mut(i) {
                m.unsent = false;
            }
            st.unsent_resends = st.unsent_resends.saturating_sub(1);
        }
        for id in drop_ids {
            if let Some(pos) = st.inflight_position(id) {
                st.remove_inflight(pos);
            }
        }
    }

    /// Encodes one delivery; false when it was dropped as too large for the client.
    fn write_delivery(&mut self, q: &Queued, packet_id: u16, dup: bool) -> bool {
        match self.outgoing_publish(q, packet_id, dup) {
            Some(p) => {
                self.send(&p);
                self.broker
                    .stats
                    .publish_sent
                    .fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Builds the PUBLISH for one delivery, or `None` when it exceeds the client's
    /// Maximum Packet Size: such a message is discarded as if it had been sent
    /// [MQTT-3.1.2-25].
    pub(crate) fn outgoing_publish(
        &mut self,
        q: &Queued,
        packet_id: u16,
        dup: bool,
    ) -> Option<Packet> {
        let msg = &q.msg;
        let mut topic = msg.topic.clone();
        let mut properties = Properties::default();
        let mut new_alias = None;
        if self.version.is_v5() {
            if let Some(p) = &msg.properties {
                properties = (**p).clone();
            }
            properties.message_expiry_interval = msg.remaining_expiry(Instant::now());
            properties
                .subscription_identifiers
                .extend(q.sub_ids.iter().copied());
            if self.client_alias_max > 0 && self.broker.config.outgoing_topic_aliases {
                if let Some(&alias) = self.out_aliases.get(&msg.topic) {
                    properties.topic_alias = Some(alias);
                    topic = ByteStr::new();
                } else if self.out_aliases.len() < usize::from(self.client_alias_max) {
                    let alias = self.out_aliases.len() as u16 + 1;
                    properties.topic_alias = Some(alias);
                    new_alias = Some(alias);
                }
            }
        }
        let packet = Packet::Publish(Publish {
            dup,
            qos: q.qos,
            retain: q.retain,
            topic,
            packet_id: if q.qos == QoS::AtMostOnce {
                0
            } else {
                packet_id
            },
            properties,
            payload: msg.payload.clone(),
        });
        if encoded_len(&packet, self.version) > self.client_max_packet {
            tracing::debug!(client = %self.client_id, topic = %msg.topic, "message larger than the client's maximum packet size; dropped");
            self.broker
                .stats
                .messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if let Some(alias) = new_alias {
            self.out_aliases.insert(msg.topic.clone(), alias);
        }
        Some(packet)
    }
}

/// Until when a publisher may be held for `waiting` (congested subscribers under
/// publisher back-pressure): the least hold budget any of them has left, and never more
/// than `ACK_HOLD_MAX`.
pub(crate) fn hold_deadline(waiting: &[Arc<dyn DeliveryTarget>], now: Instant) -> Instant {
    let allowance = waiting
        .iter()
        .map(|t| t.hold_allowance())
        .min()
        .unwrap_or_default()
        .min(ACK_HOLD_MAX);
    now + allowance
}

/// A stored message's packet identifier is derived from its queue sequence number, so
/// that after a crash it is resent with the identifier it may already have been sent
/// with (a QoS 2 receiver then recognises the duplicate [MQTT-4.3.3-9]) even if its
/// in-flight marker was not written yet. Falls back to the next free identifier.
fn packet_id_for(st: &mut SessionState, seq: u64) -> Option<u16> {
    if seq != 0 {
        let id = u16::try_from(seq % 65535).unwrap_or(0) + 1;
        if st.inflight_position(id).is_none() {
            return Some(id);
        }
    }
    st.allocate_packet_id()
}

fn dequeue_op(ops: &mut Vec<midge_store::Op>, cell: &SessionCell, seq: u64) {
    if seq != 0 {
        ops.push(midge_store::Op::Dequeue {
            client: cell.client_id.clone(),
            seq,
        });
    }
}
