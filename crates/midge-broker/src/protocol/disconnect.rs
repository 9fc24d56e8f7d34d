//! DISCONNECT from the client.

use crate::connection::{Close, Conn};
use midge_proto::{Disconnect, ReasonCode};
use std::time::Duration;

impl Conn {
    /// A normal DISCONNECT discards the will [MQTT-3.14.4-3]; other 5.0 reason codes keep it.
    /// A 5.0 DISCONNECT may change the session expiry, but not from zero [MQTT-3.14.2-2].
    pub(crate) fn handle_disconnect(&mut self, d: Disconnect) -> Result<(), Close> {
        if self.version.is_v5() {
            if let Some(secs) = d.properties.session_expiry_interval {
                if self.connect_expiry_zero && secs != 0 {
                    return Err(Close::Violation(
                        ReasonCode::PROTOCOL_ERROR,
                        "DISCONNECT sets a session expiry after CONNECT set zero [MQTT-3.14.2-2]"
                            .into(),
                    ));
                }
                if let Some(cell) = &self.session {
                    let cap = self.broker.config.persistent_client_expiration;
                    let expiry = match secs {
                        u32::MAX => cap,
                        s => {
                            let d = Duration::from_secs(u64::from(s));
                            Some(cap.map_or(d, |c| c.min(d)))
                        }
                    };
                    cell.state.lock().set_expiry(expiry);
                }
            }
            // Only Normal disconnection (0x00) discards the will [MQTT-3.14.4-3]; 0x04 and
            // the error codes keep it.
            if d.reason_code != ReasonCode::NORMAL_DISCONNECTION {
                return Err(Close::PeerGone);
            }
        }
        // The will is not sent (`finish` sends none for this close) and its stored
        // record is deleted there.
        Err(Close::ClientDisconnect)
    }
}
