//! MQTT 5 enhanced authentication (section 4.12) with SCRAM-SHA-256, the built-in method.
//!
//! Before CONNACK (`connection::connect_phase` drives the I/O): CONNECT carries the
//! client-first message, the broker answers AUTH 0x18 with the server-first, the client
//! sends AUTH 0x18 with the client-final, and the CONNACK carries the server-final.
//! After CONNACK the client may re-authenticate: AUTH 0x19 with a new client-first, then
//! the same two steps, ending with AUTH 0x00. The exchange itself is `auth::scram`.

use crate::auth::scram::{ScramServer, ServerNonce, METHOD};
use crate::connection::{Close, Conn};
use bytes::Bytes;
use midge_proto::{Auth, ByteStr, Connect, Packet, Properties, ReasonCode};

/// An exchange waiting for the client's next AUTH.
#[derive(Debug)]
pub(crate) struct PendingAuth {
    server: ScramServer,
    /// Started by AUTH 0x19 after CONNACK (ends with AUTH 0x00, not CONNACK).
    reauth: bool,
}

/// How enhanced authentication stands on a connection.
#[derive(Debug, Default)]
pub(crate) enum EnhancedAuth {
    /// The CONNECT named no Authentication Method: AUTH packets are a Protocol Error
    /// [MQTT-4.12.0-7].
    #[default]
    Unused,
    /// An exchange is under way.
    Pending(Box<PendingAuth>),
    /// Authenticated; before CONNACK, `server_final` is the Authentication Data it carries
    /// (boxed, to keep this enum, which every connection holds, small).
    Done { server_final: Option<Box<Bytes>> },
}

impl Conn {
    /// The CONNECT named an Authentication Method: checks it is offered and answers the
    /// client-first with AUTH 0x18 [MQTT-4.12.0-2]. A method the broker does not offer
    /// gets CONNACK 0x8C [MQTT-4.12.0-1].
    pub(crate) fn start_connect_auth(&mut self, c: &Connect) -> Result<(), Close> {
        // Named in log lines from here on (handle_connect checks it afterwards).
        self.client_id = c.client_id.clone();
        let method = c.properties.authentication_method.as_deref().unwrap_or("");
        let scram = self.security().scram.clone();
        let Some(source) = scram.filter(|_| method == METHOD) else {
            return Err(self.refuse(
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                "authentication method not offered",
            ));
        };
        if self.identity.is_some() {
            // The listener takes the username from the client certificate.
            return Err(self.refuse(
                ReasonCode::BAD_AUTHENTICATION_METHOD,
                "enhanced authentication is not offered on a use_identity_as_username listener",
            ));
        }
        let data = c.properties.authentication_data.as_deref().unwrap_or(&[]);
        match ScramServer::start(source.as_ref(), data, ServerNonce::random()) {
            Ok((server, server_first)) => {
                self.send_auth(ReasonCode::CONTINUE_AUTHENTICATION, server_first.into());
                self.enhanced = EnhancedAuth::Pending(Box::new(PendingAuth {
                    server,
                    reauth: false,
                }));
                Ok(())
            }
            Err(e) => Err(self.refuse(e.reason_code(), &format!("SCRAM: {e}"))),
        }
    }

    /// An AUTH received before CONNACK. On success the client's username is the SCRAM
    /// identity and `handle_connect` goes on; a failure gets CONNACK 0x87 (after the delay
    /// for repeated failures) [MQTT-4.12.0-4].
    pub(crate) async fn continue_connect_auth(&mut self, a: Auth) -> Result<(), Close> {
        let pending = match std::mem::take(&mut self.enhanced) {
            EnhancedAuth::Pending(p) => p,
            _ => {
                return Err(self.refuse(ReasonCode::PROTOCOL_ERROR, "unexpected AUTH"));
            }
        };
        if let Err(why) = self.check_auth_packet(&a) {
            return Err(self.refuse(ReasonCode::PROTOCOL_ERROR, why));
        }
        let data = a.properties.authentication_data.as_deref().unwrap_or(&[]);
        match pending.server.finish(data) {
            Ok(success) => {
                self.username = Some(ByteStr::from(success.username));
                self.enhanced = EnhancedAuth::Done {
                    server_final: Some(Box::new(success.server_final.into())),
                };
                Ok(())
            }
            Err(e) => {
                let delay = self.broker.auth_failure_delay(self.peer.ip());
                if !delay.is_zero() {
                    tracing::info!(peer = %self.peer, "repeated login failures: answering in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                Err(self.refuse(e.reason_code(), &format!("SCRAM: {e}")))
            }
        }
    }

    /// An AUTH after CONNACK: re-authentication [MQTT-4.12.1-1]. A failed one closes the
    /// connection with DISCONNECT 0x87 [MQTT-4.12.1-2].
    pub(crate) fn handle_auth(&mut self, a: Auth) -> Result<(), Close> {
        if matches!(self.enhanced, EnhancedAuth::Unused) {
            return Err(Close::Violation(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without an authentication method [MQTT-4.12.0-7]".into(),
            ));
        }
        if let Err(why) = self.check_auth_packet(&a) {
            return Err(Close::Violation(ReasonCode::PROTOCOL_ERROR, why.into()));
        }
        let data = a.properties.authentication_data.as_deref().unwrap_or(&[]);
        match (std::mem::take(&mut self.enhanced), a.reason_code) {
            (EnhancedAuth::Done { .. }, ReasonCode::RE_AUTHENTICATE) => {
                let Some(source) = self.security().scram.clone() else {
                    return Err(Close::Violation(
                        ReasonCode::NOT_AUTHORIZED,
                        "SCRAM credentials are no longer configured".into(),
                    ));
                };
                let username = self.username.as_deref().unwrap_or("");
                match ScramServer::start_reauthentication(
                    source.as_ref(),
                    data,
                    ServerNonce::random(),
                    username,
                ) {
                    Ok((server, server_first)) => {
                        self.send_auth(ReasonCode::CONTINUE_AUTHENTICATION, server_first.into());
                        self.enhanced = EnhancedAuth::Pending(Box::new(PendingAuth {
                            server,
                            reauth: true,
                        }));
                        Ok(())
                    }
                    Err(e) => Err(self.reauth_failed(e)),
                }
            }
            (EnhancedAuth::Pending(p), ReasonCode::CONTINUE_AUTHENTICATION) if p.reauth => {
                match p.server.finish(data) {
                    Ok(success) => {
                        tracing::info!(client = %self.client_id, "re-authenticated");
                        self.send_auth(ReasonCode::SUCCESS, success.server_final.into());
                        self.enhanced = EnhancedAuth::Done { server_final: None };
                        Ok(())
                    }
                    Err(e) => Err(self.reauth_failed(e)),
                }
            }
            (_, rc) => Err(Close::Violation(
                ReasonCode::PROTOCOL_ERROR,
                format!("unexpected AUTH with reason code {rc}"),
            )),
        }
    }

    /// Every AUTH names the method of the CONNECT [MQTT-4.12.0-5] and a reason code a
    /// client may send [MQTT-3.15.2-1].
    fn check_auth_packet(&self, a: &Auth) -> Result<(), &'static str> {
        if a.properties.authentication_method.as_deref() != Some(METHOD) {
            return Err("AUTH with a different authentication method [MQTT-4.12.0-5]");
        }
        if a.reason_code != ReasonCode::CONTINUE_AUTHENTICATION
            && a.reason_code != ReasonCode::RE_AUTHENTICATE
        {
            return Err("AUTH with a reason code a client may not send");
        }
        Ok(())
    }

    fn reauth_failed(&mut self, e: crate::auth::scram::ScramError) -> Close {
        self.broker.auth_failure_delay(self.peer.ip());
        Close::Violation(
            e.reason_code(),
            format!("re-authentication failed: SCRAM: {e}"),
        )
    }

    fn send_auth(&mut self, reason_code: ReasonCode, data: Bytes) {
        self.send(&Packet::Auth(Auth {
            reason_code,
            properties: Properties {
                authentication_method: Some(ByteStr::from_static(METHOD)),
                authentication_data: Some(data),
                ..Properties::default()
            },
        }));
    }

    /// The Authentication Method and Data of a successful CONNACK [MQTT-4.12.0-5], if the
    /// client authenticated with one.
    pub(crate) fn connack_auth_properties(&mut self, props: &mut Properties) {
        if let EnhancedAuth::Done { server_final } = &mut self.enhanced {
            props.authentication_method = Some(ByteStr::from_static(METHOD));
            props.authentication_data = server_final.take().map(|data| *data);
        }
    }
}
