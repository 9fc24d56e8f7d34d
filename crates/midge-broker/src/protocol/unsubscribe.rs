//! UNSUBSCRIBE and UNSUBACK.

use crate::connection::{Close, Conn};
use midge_proto::{Packet, ReasonCode, UnsubAck, Unsubscribe};

impl Conn {
    pub(crate) fn handle_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Close> {
        let Some(cell) = self.session.clone() else {
            return Err(Close::PeerGone);
        };
        let mut codes = Vec::with_capacity(u.filters.len());
        let mut ops = Vec::new();
        for filter in &u.filters {
            let (existed, persistent) = {
                let mut st = cell.state.lock();
                (st.subscriptions.remove(filter).is_some(), st.persistent)
            };
            if existed && persistent {
                ops.push(midge_store::Op::DeleteSubscription {
                    client: cell.client_id.clone(),
                    filter: filter.clone(),
                });
            }
            if existed {
                self.broker.unroute(cell.id, filter);
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        // UNSUBACK even when nothing was removed [MQTT-3.10.4-5], once the removal is
        // durable: after UNSUBACK no new message may be added for the subscription
        // [MQTT-3.10.4-2], not even by a broker restarted after a crash.
        let ticket = if ops.is_empty() {
            None
        } else {
            self.broker.commit(ops)
        };
        self.send_after(
            Packet::UnsubAck(UnsubAck {
                packet_id: u.packet_id,
                reason_codes: codes,
                properties: Default::default(),
            }),
            ticket,
            None,
        );
        Ok(())
    }
}
