//! Outgoing PUBLISH: moving queued messages into the write buffer within the in-flight
//! window, with per-delivery properties (expiry left, subscription identifiers, topic
//! alias) and the client's maximum packet size.

use crate::connection::{Conn, HeldAck, ACK_HOLD_MAX, WRITE_HIGH_WATER};
use crate::router::DeliveryTarget;
use crate::session::{Inflight, Queued, SessionCell, SessionState, Stage};
use midge_proto::{encoded_len, ByteStr, Packet, Properties, PubResp, Publish, QoS};
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
    /// in-flight window has room. Stops at the write high-water mark.
    pub(crate) fn drain_queue(&mut self, cell: &Arc<SessionCell>) {
        let window = self.inflight_window();
        let now = Instant::now();
        let mut st = cell.state.lock();
        if st.unsent_resends > 0 {
            self.resend_marked(&mut st, window);
        }
        while self.wbuf.len() < WRITE_HIGH_WATER {
            let Some(front) = st.queue.front() else { break };
            if front.msg.is_expired(now) {
                // Expired while queued: never sent [MQTT-3.3.2-5].
                st.pop_queued();
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
            if st.inflight.len() - st.unsent_resends >= window {
                break;
            }
            let Some(packet_id) = st.allocate_packet_id() else {
                break;
            };
            let Some(q) = st.pop_queued() else { break };
            if self.write_delivery(&q, packet_id, false) {
                let stage = if q.qos == QoS::AtLeastOnce {
                    Stage::AwaitPubAck
                } else {
                    Stage::AwaitPubRec
                };
                st.inflight.push_back(Inflight {
                    packet_id,
                    msg: q,
                    stage,
                    unsent: false,
                });
            }
        }
        cell.after_drain(&mut st);
    }

    /// Acknowledges an inbound QoS 1/2 PUBLISH (PUBACK or PUBREC). When the message was
    /// queued past a subscriber's soft limit, or an earlier acknowledgement is held, the
    /// acknowledgement waits (in order [MQTT-4.6.0-2, MQTT-4.6.0-3]) until the subscribers
    /// have room, at most `ACK_HOLD_MAX`: this paces the publisher by its own in-flight
    /// window.
    pub(crate) fn acknowledge(&mut self, packet: Packet) {
        if self.scratch.congested.is_empty() && self.held_acks.is_empty() {
            self.send(&packet);
            return;
        }
        let waiting = std::mem::take(&mut self.scratch.congested);
        self.held_acks.push_back(HeldAck {
            packet,
            waiting,
            deadline: Instant::now() + ACK_HOLD_MAX,
        });
    }

    /// Sends the held acknowledgements whose subscribers have room (or whose wait ran out),
    /// in order.
    pub(crate) fn release_held_acks(&mut self) {
        let now = Instant::now();
        while let Some(front) = self.held_acks.front_mut() {
            front.waiting.retain(|t| !t.has_room());
            if !front.waiting.is_empty() && front.deadline > now {
                break;
            }
            if let Some(held) = self.held_acks.pop_front() {
                self.send(&held.packet);
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
            if st.inflight.len() - st.unsent_resends >= window
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
            properties = msg.properties.clone();
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
