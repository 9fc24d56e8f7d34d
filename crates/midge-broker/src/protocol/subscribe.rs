//! SUBSCRIBE and SUBACK, and the retained messages a new subscription receives.

use crate::auth::Authorizer;
use crate::connection::{Close, Conn, RetainedAfter};
use crate::router::{SubIds, SubKey, Subscriber};
use crate::session::StoredSubscription;
use midge_proto::{
    topic, ByteStr, Packet, QoS, ReasonCode, RetainHandling, SubAck, Subscribe, SubscriptionOptions,
};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

impl Conn {
    pub(crate) fn handle_subscribe(&mut self, s: Subscribe) -> Result<(), Close> {
        let Some(cell) = self.session.clone() else {
            return Err(Close::PeerGone);
        };
        let v5 = self.version.is_v5();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let max_qos = QoS::from_u8(self.broker.config.max_qos).unwrap_or(QoS::ExactlyOnce);
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained_for = Vec::new();
        let mut store_ops = Vec::new();
        for (filter, opts) in &s.filters {
            let shared = match topic::valid_topic_filter(filter)
                .and_then(|()| topic::parse_shared(filter))
            {
                Ok(shared) => shared,
                Err(e) => {
                    tracing::info!(client = %self.client_id, %filter, "subscription refused: {e}");
                    codes.push(if v5 {
                        ReasonCode::TOPIC_FILTER_INVALID
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    });
                    continue;
                }
            };
            let acl_filter = shared.map_or(filter.as_str(), |(_, inner)| inner);
            let limit = self.broker.config.max_subscriptions_per_client;
            let over_count = limit > 0 && {
                let st = cell.state.lock();
                !st.subscriptions.contains_key(filter.as_str()) && st.subscriptions.len() >= limit
            };
            if over_count || !self.broker.topic_within_limits(acl_filter) {
                tracing::info!(client = %self.client_id, %filter, "subscription refused by a limit");
                self.broker
                    .stats
                    .subscriptions_refused
                    .fetch_add(1, Ordering::Relaxed);
                codes.push(match (v5, over_count) {
                    (true, true) => ReasonCode::QUOTA_EXCEEDED,
                    (true, false) => ReasonCode::TOPIC_FILTER_INVALID,
                    (false, _) => ReasonCode::UNSPECIFIED_ERROR,
                });
                continue;
            }
            if let Some(acl) = &self.security().acl {
                if !acl.can_subscribe(&self.client_info(), acl_filter) {
                    tracing::info!(client = %self.client_id, %filter, "subscription denied by the ACL");
                    codes.push(if v5 {
                        ReasonCode::NOT_AUTHORIZED
                    } else {
                        ReasonCode::UNSPECIFIED_ERROR
                    });
                    continue;
                }
            }
            // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
            if shared.is_some() && opts.no_local {
                return Err(Close::Violation(
                    ReasonCode::PROTOCOL_ERROR,
                    "no-local on a shared subscription [MQTT-3.8.3-4]".into(),
                ));
            }
            let granted = opts.qos.min(max_qos);
            let options = SubscriptionOptions {
                qos: granted,
                ..*opts
            };
            let (existed, persistent) = {
                let mut st = cell.state.lock();
                let existed = st
                    .subscriptions
                    .insert(
                        filter.clone(),
                        StoredSubscription {
                            options,
                            id: sub_id,
                        },
                    )
                    .is_some();
                (existed, st.persistent)
            };
            if persistent {
                store_ops.push(midge_store::Op::PutSubscription {
                    client: cell.client_id.clone(),
                    filter: filter.clone(),
                    subscription: midge_store::SubscriptionRecord::new(options, sub_id),
                });
            }
            let (route_filter, key) = match shared {
                Some((_group, inner)) => (
                    inner,
                    SubKey {
                        session: cell.id,
                        shared: Some(filter.clone()),
                    },
                ),
                None => (
                    filter.as_str(),
                    SubKey {
                        session: cell.id,
                        shared: None,
                    },
                ),
            };
            self.broker.router.subscribe(
                route_filter,
                key,
                Subscriber {
                    target: cell.clone(),
                    options,
                    id: sub_id,
                },
            );
            codes.push(ReasonCode(granted.as_u8()));
            // Retained messages go to new non-shared subscriptions as retain handling says
            // [MQTT-3.3.1-9, MQTT-3.3.1-10, MQTT-3.3.1-11]; never to shared ones.
            let send_retained = shared.is_none()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => !existed,
                    RetainHandling::DoNotSend => false,
                };
            if send_retained {
                retained_for.push((filter.clone(), granted));
            }
        }
        // A persistent session's subscriptions are durable before SUBACK: a client that got
        // SUBACK does not subscribe again after a reconnect, so a subscription lost in a
        // crash would lose its messages silently. The retained messages follow SUBACK.
        let ticket = if store_ops.is_empty() {
            None
        } else {
            self.broker.commit(store_ops)
        };
        let then = (!retained_for.is_empty()).then(|| {
            Box::new(RetainedAfter {
                filters: retained_for,
                sub_id,
            })
        });
        self.send_after(
            Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                reason_codes: codes,
                properties: Default::default(),
            }),
            ticket,
            then,
        );
        Ok(())
    }

    /// Queues the retained messages a SUBSCRIBE brings (after its SUBACK).
    pub(crate) fn queue_retained_for(&mut self, r: RetainedAfter) {
        let mut ops = Vec::new();
        for (filter, granted) in &r.filters {
            self.queue_retained(filter, *granted, r.sub_id, &mut ops);
        }
        if !ops.is_empty() {
            // Copies of retained messages (themselves stored): not waited for.
            self.broker.commit_detached(ops);
        }
    }

    /// Queues every retained message matching `filter`, RETAIN set [MQTT-3.3.1-8]; a
    /// persistent session's copies go into `ops`.
    fn queue_retained(
        &mut self,
        filter: &ByteStr,
        granted: QoS,
        sub_id: Option<u32>,
        ops: &mut Vec<midge_store::Op>,
    ) {
        let Some(cell) = self.session.clone() else {
            return;
        };
        let now = Instant::now();
        let mut found = Vec::new();
        self.broker
            .retained
            .read()
            .for_each_match(filter, |_topic, msg| {
                if !msg.is_expired(now) {
                    found.push(Arc::clone(msg));
                }
            });
        let mut durable = Vec::new();
        for msg in found {
            let ids: SubIds = sub_id.into_iter().collect();
            cell.enqueue(&msg, msg.qos.min(granted), true, ids, &mut durable);
            // A persistent session keeps its copy of the retained message too.
            if !durable.is_empty() {
                if let Some(store) = &self.broker.store {
                    ops.push(midge_store::Op::Enqueue {
                        message_id: store.next_message_id(),
                        message: crate::persist::message_record(&msg),
                        deliveries: std::mem::take(&mut durable),
                    });
                }
            }
        }
    }
}
