//! UNSUBSCRIBE and UNSUBACK.

use crate::connection::{Close, Conn};
use midge_proto::{Packet, ReasonCode, UnsubAck, Unsubscribe};

impl Conn {
    pub(crate) fn handle_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Close> {
        let Some(cell) = self.session.clone() else {
            return Err(Close::PeerGone);
        };
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in &u.filters {
            let (existed, persistent) = {
                let mut st = cell.state.lock();
                (st.subscriptions.remove(filter).is_some(), st.persistent)
            };
            if existed && persistent {
                self.broker
                    .commit_detached(vec![midge_store::Op::DeleteSubscription {
                        client: cell.client_id.clone(),
                        filter: filter.clone(),
                    }]);
            }
            if existed {
                self.broker.unroute(cell.id, filter);
                codes.push(ReasonCode::SUCCESS);
            } else {
                codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED);
            }
        }
        // UNSUBACK even when nothing was removed [MQTT-3.10.4-5].
        self.send(&Packet::UnsubAck(UnsubAck {
            packet_id: u.packet_id,
            reason_codes: codes,
            properties: Default::default(),
        }));
        Ok(())
    }
}
