//! Inbound PUBLISH and the acknowledgement packets of both directions' QoS flows.

use crate::auth::Authorizer;
use crate::connection::{Close, Conn};
use crate::message::Message;
use crate::session::Stage;
use midge_proto::{ByteStr, Packet, PubResp, Publish, QoS, ReasonCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

impl Conn {
    fn violation(&self, rc: ReasonCode, why: &str) -> Close {
        Close::Violation(rc, why.to_string())
    }

    /// Resolves the topic of a 5.0 PUBLISH against the client's topic aliases.
    fn resolve_topic(&mut self, p: &mut Publish) -> Result<ByteStr, Close> {
        let Some(alias) = p.properties.topic_alias.take() else {
            if p.topic.is_empty() {
                return Err(self.violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "empty topic without a topic alias",
                ));
            }
            return Ok(p.topic.clone());
        };
        // Alias 0 or above our Topic Alias Maximum [MQTT-3.3.2-8, MQTT-3.3.2-9].
        if alias == 0 || alias > self.broker.config.max_topic_alias {
            return Err(self.violation(ReasonCode::TOPIC_ALIAS_INVALID, "topic alias out of range"));
        }
        if p.topic.is_empty() {
            match self.in_aliases.get(&alias) {
                Some(t) => Ok(t.clone()),
                None => Err(self.violation(ReasonCode::PROTOCOL_ERROR, "unknown topic alias")),
            }
        } else {
            self.in_aliases.insert(alias, p.topic.clone());
            Ok(p.topic.clone())
        }
    }

    pub(crate) fn handle_publish(&mut self, mut p: Publish, now: Instant) -> Result<(), Close> {
        let broker = self.broker.clone();
        let config = &broker.config;
        self.broker
            .stats
            .publish_received
            .fetch_add(1, Ordering::Relaxed);
        if p.qos.as_u8() > config.max_qos {
            return Err(self.violation(
                ReasonCode::QOS_NOT_SUPPORTED,
                "QoS above the maximum [MQTT-3.2.2-11]",
            ));
        }
        if p.retain && !config.retain_available {
            return Err(self.violation(
                ReasonCode::RETAIN_NOT_SUPPORTED,
                "retain is not available [MQTT-3.2.2-14]",
            ));
        }
        // Only the server puts subscription identifiers on a PUBLISH [MQTT-3.3.4-6].
        if !p.properties.subscription_identifiers.is_empty() {
            return Err(self.violation(
                ReasonCode::PROTOCOL_ERROR,
                "subscription identifier on a client's PUBLISH [MQTT-3.3.4-6]",
            ));
        }
        // A Response Topic is a topic name: no wildcards [MQTT-3.3.2-14].
        if p.properties
            .response_topic
            .as_ref()
            .is_some_and(|t| midge_proto::topic::valid_topic_name(t).is_err())
        {
            return Err(self.violation(
                ReasonCode::PROTOCOL_ERROR,
                "invalid response topic [MQTT-3.3.2-14]",
            ));
        }
        let topic = if self.version.is_v5() {
            self.resolve_topic(&mut p)?
        } else {
            p.topic.clone()
        };
        let packet_id = p.packet_id;
        let qos = p.qos;
        self.scratch.congested.clear();

        // Clients may not publish to $SYS (as in Mosquitto), nor where the ACL denies:
        // the message is dropped; 5.0 publishers are told 0x87.
        let denied = topic.starts_with("$SYS")
            || self
                .security()
                .acl
                .as_ref()
                .is_some_and(|acl| !acl.can_publish(&self.client_info(), &topic));
        if denied {
            tracing::debug!(client = %self.client_id, %topic, "publish denied");
            let rc = if self.version.is_v5() {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::SUCCESS
            };
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.acknowledge(Packet::PubAck(PubResp::with_reason(packet_id, rc)))
                }
                QoS::ExactlyOnce => {
                    self.acknowledge(Packet::PubRec(PubResp::with_reason(packet_id, rc)))
                }
            }
            return Ok(());
        }

        // Refused before routing: topics over the limits, oversize payloads and invalid
        // UTF-8 declared as UTF-8.
        let mut refusal = None;
        if !broker.topic_within_limits(&topic) {
            refusal = Some(ReasonCode::TOPIC_NAME_INVALID);
        } else if config.message_size_limit > 0 && p.payload.len() > config.message_size_limit {
            // 0x95 is not allowed on PUBACK/PUBREC; 0x97 names an imposed limit.
            refusal = Some(ReasonCode::QUOTA_EXCEEDED);
        } else if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            refusal = Some(ReasonCode::PAYLOAD_FORMAT_INVALID);
        }
        if let Some(rc) = refusal {
            tracing::debug!(client = %self.client_id, %topic, "publish refused: {rc}");
            self.broker
                .stats
                .messages_dropped
                .fetch_add(1, Ordering::Relaxed);
            let rc = if self.version.is_v5() {
                rc
            } else {
                ReasonCode::SUCCESS
            };
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.acknowledge(Packet::PubAck(PubResp::with_reason(packet_id, rc)))
                }
                QoS::ExactlyOnce => {
                    self.acknowledge(Packet::PubRec(PubResp::with_reason(packet_id, rc)))
                }
            }
            return Ok(());
        }

        let origin = self.session.as_ref().map_or(0, |s| s.id);
        match qos {
            QoS::AtMostOnce => {
                let msg = Message::from_publish(p, topic, origin, now);
                // Nothing to acknowledge, but a retained message (or its removal) is still
                // written to the store.
                drop(self.broker.publish_durable(&msg, &mut self.scratch, None));
                // No acknowledgement to hold: under publisher back-pressure, a QoS 0
                // publisher that outruns a subscriber is not read until the subscriber has
                // room or its hold budget is spent (TCP back-pressure). Not paced by its
                // own subscription, though: it drains that queue only by reading its own
                // acknowledgements.
                let own = self.session.as_ref().map(|c| Arc::as_ptr(c) as *const ());
                let mut targets = std::mem::take(&mut self.scratch.congested);
                targets.retain(|t| Some(Arc::as_ptr(t) as *const ()) != own);
                if !targets.is_empty() {
                    self.broker
                        .stats
                        .publish_paced
                        .fetch_add(1, Ordering::Relaxed);
                    let deadline = super::delivery::hold_deadline(&targets, now);
                    self.read_pause = Some(Box::new(crate::connection::ReadPause {
                        waiting: targets,
                        since: now,
                        deadline,
                    }));
                }
            }
            QoS::AtLeastOnce => {
                let msg = Message::from_publish(p, topic, origin, now);
                let (n, ticket) = self.broker.publish_durable(&msg, &mut self.scratch, None);
                let rc = if n == 0 && self.version.is_v5() {
                    ReasonCode::NO_MATCHING_SUBSCRIBERS
                } else {
                    ReasonCode::SUCCESS
                };
                self.acknowledge_after(Packet::PubAck(PubResp::with_reason(packet_id, rc)), ticket);
            }
            QoS::ExactlyOnce => {
                let Some(cell) = self.session.clone() else {
                    return Err(Close::PeerGone);
                };
                let receive_max = match config.max_inflight_messages {
                    0 => usize::from(u16::MAX),
                    n => usize::from(n),
                };
                let (fresh, persistent) = {
                    let mut st = cell.state.lock();
                    let persistent = st.persistent;
                    if st.inbound_qos2.contains(packet_id) {
                        (false, persistent)
                    } else if st.inbound_qos2.len() >= receive_max {
                        drop(st);
                        return Err(self.violation(
                            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                            "more unacknowledged QoS 2 messages than Receive Maximum [MQTT-3.3.4-7]",
                        ));
                    } else {
                        st.inbound_qos2.insert(packet_id);
                        (true, persistent)
                    }
                };
                // A resent PUBLISH with a packet id still held is not delivered again:
                // exactly once [MQTT-4.3.3-10].
                let mut rc = ReasonCode::SUCCESS;
                let mut ticket = None;
                if fresh {
                    // With the identifier kept in the store, subscribers wait for it to be
                    // durable: a resend after a crash is then recognised, never delivered
                    // twice (see `Gate`).
                    let msg = if persistent && self.broker.store.is_some() {
                        Message::from_publish_gated(p, topic, origin, now)
                    } else {
                        Message::from_publish(p, topic, origin, now)
                    };
                    // The packet identifier is kept with the message, in one commit.
                    let held = persistent.then(|| midge_store::Op::AddInboundQos2 {
                        client: cell.client_id.clone(),
                        packet_id,
                    });
                    let (n, t) = self.broker.publish_durable(&msg, &mut self.scratch, held);
                    ticket = t;
                    if n == 0 && self.version.is_v5() {
                        rc = ReasonCode::NO_MATCHING_SUBSCRIBERS;
                    }
                }
                self.acknowledge_after(Packet::PubRec(PubResp::with_reason(packet_id, rc)), ticket);
            }
        }
        Ok(())
    }

    /// PUBACK from the client ends a QoS 1 delivery.
    pub(crate) fn handle_puback(&mut self, a: PubResp) -> Result<(), Close> {
        self.complete_outgoing(a.packet_id, Stage::AwaitPubAck);
        Ok(())
    }

    /// Ends an outgoing delivery waiting at `stage` (PUBACK, PUBCOMP) and forgets it in
    /// the store.
    fn complete_outgoing(&mut self, packet_id: u16, stage: Stage) {
        let Some(cell) = self.session.clone() else {
            return;
        };
        let seq = {
            let mut st = cell.state.lock();
            let Some(pos) = st.inflight_position(packet_id) else {
                return;
            };
            if st.inflight.get(pos).is_none_or(|m| m.stage != stage) {
                return;
            }
            st.remove_inflight(pos).map_or(0, |m| m.msg.seq)
        };
        if seq != 0 {
            // Nothing waits for it: committed with this read's other writes.
            self.unsent_ops.push(midge_store::Op::Dequeue {
                client: cell.client_id.clone(),
                seq,
            });
        }
    }

    /// PUBREC from the client: answer PUBREL and wait for PUBCOMP [MQTT-4.3.3-4]; a 5.0
    /// error reason code ends the flow instead.
    pub(crate) fn handle_pubrec(&mut self, a: PubResp) -> Result<(), Close> {
        let Some(cell) = self.session.clone() else {
            return Ok(());
        };
        let mut stored = false;
        let reply = {
            let mut st = cell.state.lock();
            match st.inflight_position(a.packet_id) {
                Some(pos) if a.reason_code.is_error() => {
                    if let Some(m) = st.remove_inflight(pos) {
                        if m.msg.seq != 0 {
                            self.unsent_ops.push(midge_store::Op::Dequeue {
                                client: cell.client_id.clone(),
                                seq: m.msg.seq,
                            });
                        }
                    }
                    None
                }
                Some(pos) => {
                    if let Some(m) = st.inflight.get_mut(pos) {
                        m.stage = Stage::AwaitPubComp;
                        if m.msg.seq != 0 {
                            stored = true;
                            self.unsent_ops.push(midge_store::Op::SetInflight {
                                client: cell.client_id.clone(),
                                seq: m.msg.seq,
                                inflight: midge_store::InflightRecord {
                                    packet_id: a.packet_id,
                                    stage: midge_store::Stage::AwaitPubComp,
                                },
                            });
                        }
                    }
                    Some(PubResp::new(a.packet_id))
                }
                None => Some(PubResp::with_reason(
                    a.packet_id,
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                )),
            }
        };
        // Once PUBREL is sent the PUBLISH must never be sent again [MQTT-4.3.3-6]: for a
        // stored message the new stage is made durable before PUBREL goes out. It joins
        // the writes gathered so far (one of them may be an earlier stage of this very
        // entry, which must not land after the new one), committed at the end of the read.
        if let Some(rel) = reply {
            self.scratch.congested.clear();
            if stored {
                self.acknowledge_after_read_commit(Packet::PubRel(rel));
            } else {
                self.acknowledge_after(Packet::PubRel(rel), None);
            }
        }
        Ok(())
    }

    /// PUBREL from the client releases a QoS 2 packet identifier: PUBCOMP [MQTT-4.3.3-11].
    /// For a stored session the release is made durable first: a PUBCOMP followed by a
    /// crash must not leave the identifier held, or the client's next message with it
    /// would be taken for a duplicate.
    pub(crate) fn handle_pubrel(&mut self, a: PubResp) -> Result<(), Close> {
        let Some(cell) = self.session.clone() else {
            return Ok(());
        };
        let (found, persistent) = {
            let mut st = cell.state.lock();
            (st.inbound_qos2.remove(a.packet_id), st.persistent)
        };
        let rc = if found {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.scratch.congested.clear();
        let comp = Packet::PubComp(PubResp::with_reason(a.packet_id, rc));
        if found && persistent && self.broker.store.is_some() {
            self.unsent_ops.push(midge_store::Op::RemoveInboundQos2 {
                client: cell.client_id.clone(),
                packet_id: a.packet_id,
            });
            self.acknowledge_after_read_commit(comp);
        } else {
            self.acknowledge_after(comp, None);
        }
        Ok(())
    }

    /// PUBCOMP from the client ends a QoS 2 delivery.
    pub(crate) fn handle_pubcomp(&mut self, a: PubResp) -> Result<(), Close> {
        self.complete_outgoing(a.packet_id, Stage::AwaitPubComp);
        Ok(())
    }
}
