//! CONNECT and CONNACK: validation, authentication, session attach and takeover.

use crate::auth::{AuthResult, ClientInfo};
use crate::connection::{Close, Conn};
use crate::protocol::auth::EnhancedAuth;
use crate::session::{ConnLink, Control, ReadAccess, SessionCell};
use midge_proto::{
    ByteStr, ConnAck, Connect, DecodeError, Packet, Properties, ProtocolVersion, Publish,
    ReasonCode,
};
use rand::distr::{Alphanumeric, SampleString};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a takeover waits for the old connection to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

impl Conn {
    /// Answers a CONNECT that failed to decode with the CONNACK the spec asks for.
    pub(crate) fn refuse_connect_error(&mut self, e: &DecodeError) {
        // Unsupported protocol level: CONNACK 0x01 / 0x84, then close [MQTT-3.1.2-2].
        // Other malformed CONNECTs are simply closed [MQTT-4.8.0-1].
        if let DecodeError::UnsupportedProtocol { level } = e {
            self.version = if *level == 5 {
                ProtocolVersion::V5
            } else {
                ProtocolVersion::V311
            };
            self.write_connack(
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                false,
                Properties::default(),
            );
        }
    }

    fn write_connack(&mut self, code: ReasonCode, session_present: bool, properties: Properties) {
        self.send(&Packet::ConnAck(ConnAck {
            session_present,
            reason_code: code,
            properties,
        }));
    }

    pub(crate) fn refuse(&mut self, code: ReasonCode, why: &str) -> Close {
        tracing::info!(peer = %self.peer, client = %self.client_id, "connection refused: {why} ({code})");
        self.write_connack(code, false, Properties::default());
        Close::Refused
    }

    /// Handles CONNECT: on success the CONNACK, resent in-flight messages and the session
    /// are in place; on failure the refusing CONNACK is in the write buffer.
    pub(crate) async fn handle_connect(&mut self, c: Box<Connect>) -> Result<(), Close> {
        let c = *c;
        self.version = c.protocol;
        let v5 = c.protocol.is_v5();
        let config = self.broker.config.clone();
        let mut ack_props = Properties::default();

        // Client identifier [MQTT-3.1.3-6..9]; MQTT 3.1 allows 1 to 23 characters.
        self.client_id = c.client_id.clone();
        if self.client_id.len() > config.max_client_id_length {
            return Err(self.refuse(
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                "client id longer than max_client_id_length",
            ));
        }
        if c.protocol == ProtocolVersion::V31 && self.client_id.chars().count() > 23 {
            return Err(self.refuse(
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                "MQTT 3.1 client id longer than 23 characters",
            ));
        }
        if self.client_id.is_empty() {
            if c.protocol == ProtocolVersion::V31 {
                return Err(self.refuse(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "MQTT 3.1 requires a client id",
                ));
            }
            if c.protocol == ProtocolVersion::V311 && !c.clean_start {
                return Err(self.refuse(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "empty client id with clean session 0 [MQTT-3.1.3-8]",
                ));
            }
            if !config.allow_zero_length_clientid {
                return Err(self.refuse(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "empty client id not allowed",
                ));
            }
            let id = format!(
                "{}{}",
                config.auto_id_prefix,
                Alphanumeric.sample_string(&mut rand::rng(), 16)
            );
            self.client_id = ByteStr::from(id);
            if v5 {
                ack_props.assigned_client_identifier = Some(self.client_id.clone());
            }
        }

        // Authentication: an enhanced authentication exchange (protocol/auth.rs) already
        // ran before this when the CONNECT named a method; otherwise the password file.
        if matches!(self.enhanced, EnhancedAuth::Unused) {
            self.authenticate(&c).await?;
        }

        // Keep-alive, bounded by max_keepalive.
        let mut keep_alive = c.keep_alive;
        if config.max_keepalive > 0
            && config.max_keepalive < u16::MAX
            && (keep_alive > config.max_keepalive || keep_alive == 0)
        {
            if v5 {
                keep_alive = config.max_keepalive;
                ack_props.server_keep_alive = Some(keep_alive);
            } else if keep_alive > config.max_keepalive {
                // No way to tell a 3.x client: refuse as Mosquitto does.
                return Err(self.refuse(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "keep-alive above max_keepalive",
                ));
            }
        }
        self.keep_alive = Duration::from_secs(u64::from(keep_alive));

        // Session expiry.
        let cap = config.persistent_client_expiration;
        let expiry = if v5 {
            let secs = c.properties.session_expiry_interval.unwrap_or(0);
            self.connect_expiry_zero = secs == 0;
            match secs {
                0 => Some(Duration::ZERO),
                u32::MAX => cap,
                s => Some(cap.map_or(Duration::from_secs(u64::from(s)), |cap| {
                    cap.min(Duration::from_secs(u64::from(s)))
                })),
            }
        } else if c.clean_start {
            Some(Duration::ZERO)
        } else {
            cap
        };

        // The client's own limits (5.0).
        if let Some(rm) = c.properties.receive_maximum {
            self.client_receive_max = rm;
        }
        if let Some(mp) = c.properties.maximum_packet_size {
            self.client_max_packet = mp as usize;
        }
        self.client_alias_max = c.properties.topic_alias_maximum.unwrap_or(0);

        // Will.
        if let Some(w) = &c.will {
            if w.qos.as_u8() > config.max_qos {
                return Err(
                    self.refuse(ReasonCode::QOS_NOT_SUPPORTED, "will QoS above the maximum")
                );
            }
            if w.properties
                .response_topic
                .as_ref()
                .is_some_and(|t| midge_proto::topic::valid_topic_name(t).is_err())
            {
                return Err(self.refuse(
                    ReasonCode::PROTOCOL_ERROR,
                    "invalid will response topic [MQTT-3.3.2-14]",
                ));
            }
            if !self.broker.topic_within_limits(&w.topic) {
                return Err(self.refuse(
                    ReasonCode::TOPIC_NAME_INVALID,
                    "will topic over the topic limits",
                ));
            }
            if w.retain && !config.retain_available {
                return Err(self.refuse(
                    ReasonCode::RETAIN_NOT_SUPPORTED,
                    "retained will but retain is not available",
                ));
            }
        }

        if let (Some(w), Some(acl)) = (&c.will, self.security().authorizer()) {
            if !acl.can_publish(&self.client_info(), &w.topic) {
                return Err(
                    self.refuse(ReasonCode::NOT_AUTHORIZED, "the ACL denies the will topic")
                );
            }
        }

        let will = c.will.map(|w| {
            let delay = w.properties.will_delay_interval.unwrap_or(0);
            let mut props = w.properties;
            props.will_delay_interval = None;
            let publish = Publish {
                dup: false,
                qos: w.qos,
                retain: w.retain,
                topic: w.topic.clone(),
                packet_id: 0,
                properties: props,
                payload: w.payload,
            };
            (Box::new(publish), delay)
        });
        let will_record = will
            .as_ref()
            .and_then(|(publish, delay)| self.broker.connected_will_record(publish, *delay));
        let (cell, session_present) = self
            .attach_session(c.clean_start, expiry, will_record)
            .await?;
        if let Some((publish, delay)) = will {
            self.will = Some(publish);
            self.will_delay = delay;
        }

        // CONNACK properties the client needs to know [MQTT-3.2.2-*].
        if v5 {
            let rm = config.max_inflight_messages;
            if rm != 0 && rm != u16::MAX {
                ack_props.receive_maximum = Some(rm);
            }
            if config.max_qos < 2 {
                ack_props.maximum_qos = Some(config.max_qos);
            }
            if !config.retain_available {
                ack_props.retain_available = Some(0);
            }
            if config.max_packet_size > 0 {
                ack_props.maximum_packet_size = Some(config.max_packet_size);
            }
            if config.max_topic_alias > 0 {
                ack_props.topic_alias_maximum = Some(config.max_topic_alias);
            }
            let asked = c.properties.session_expiry_interval.unwrap_or(0);
            let granted = match expiry {
                None => u32::MAX,
                Some(d) => u32::try_from(d.as_secs()).unwrap_or(u32::MAX),
            };
            if granted != asked {
                ack_props.session_expiry_interval = Some(granted);
            }
            if c.properties.request_response_information == Some(1) {
                ack_props.response_information =
                    Some(ByteStr::from(format!("response/{}", self.client_id)));
            }
        }
        self.connack_auth_properties(&mut ack_props);
        self.write_connack(ReasonCode::SUCCESS, session_present, ack_props);
        self.broker.stats.client_connected();
        tracing::info!(
            client = %self.client_id, peer = %self.peer, version = ?self.version,
            keep_alive, clean_start = c.clean_start, session_present, "client connected"
        );
        self.resend_inflight(&cell);
        Ok(())
    }

    /// Finds, takes over or creates the session for this client and attaches to it.
    async fn attach_session(
        &mut self,
        clean_start: bool,
        expiry: Option<Duration>,
        mut will_record: Option<midge_store::WillRecord>,
    ) -> Result<(Arc<SessionCell>, bool), Close> {
        // The keep-alive is set when the main loop starts (`connection::serve`).
        let mut link = Some(ConnLink::new(self.conn_id));
        // Each failed attempt means another connection attached in between, which the next
        // attempt takes over in turn: a crowd of connections with one client ID gets through
        // one by one. Only a storm that lasts longer than this is answered Server busy.
        let give_up = tokio::time::Instant::now() + TAKEOVER_WAIT * 2;
        while tokio::time::Instant::now() < give_up {
            // Take over a connected session: the old connection closes (5.0: DISCONNECT
            // 0x8E) and detaches before we go on [MQTT-3.1.4-3].
            if let Some(old) = self.broker.sessions.get(&self.client_id) {
                let (ack_tx, ack_rx) = oneshot::channel();
                if old.request(&mut old.state.lock(), Control::TakeOver(vec![ack_tx])) {
                    // Answered when the old connection has closed; or the request is
                    // dropped unanswered when it detached without seeing it (it was
                    // already closing) or another takeover replaced it: either way, look
                    // again below.
                    let _ = tokio::time::timeout(TAKEOVER_WAIT, ack_rx).await;
                }
            }
            let existing = self.broker.sessions.get(&self.client_id);
            if existing.as_ref().is_some_and(|c| c.state.lock().discarded) {
                // Ending (expiry, or a Clean Start of another connection): it leaves the
                // registry once its deletion is committed; a session made before that
                // would have its records wiped by it.
                tokio::task::yield_now().await;
                continue;
            }
            let had_session = existing.is_some();
            let (cell, present) = match existing {
                Some(cell) if !clean_start => (cell, true),
                other => {
                    let Some(cell) = self.broker.sessions.create_replacing(
                        self.client_id.clone(),
                        other.as_ref(),
                        self.security().authorizer(),
                    ) else {
                        // Another connection created or replaced the session meanwhile.
                        tokio::task::yield_now().await;
                        continue;
                    };
                    if let Some(old) = other {
                        self.broker.discard_session(&old);
                        // Numbered above everything the old one gave out (it gives out
                        // nothing more): a late commit of its messages is told apart.
                        let old_next = old.state.lock().next_seq;
                        let mut st = cell.state.lock();
                        st.first_seq = st.first_seq.max(old_next);
                        st.next_seq = st.next_seq.max(old_next);
                    }
                    (cell, false)
                }
            };
            {
                let mut st = cell.state.lock();
                if st.conn.is_some() {
                    // Another connection won the race for this session; take it over again.
                    continue;
                }
                st.conn = link.take();
                st.username = self.username.clone();
                // This listener's ACL decides what the session receives from now on.
                st.read_access = ReadAccess(self.security().authorizer());
                st.generation += 1;
                st.set_expiry(expiry);
                // Reconnecting in time cancels a delayed will [MQTT-3.1.3-9].
                let had_will = st.take_pending_will().is_some();
                st.persistent = expiry != Some(Duration::ZERO);
                let mut ops = Vec::new();
                if st.persistent {
                    ops.push(midge_store::Op::PutSession {
                        client: cell.client_id.clone(),
                        session: self.broker.session_record(&st, self.version.level(), false),
                    });
                }
                if had_will {
                    ops.push(midge_store::Op::DeleteWill {
                        client: cell.client_id.clone(),
                    });
                }
                // This connection's will, kept until the connection ends; or none, in
                // place of one an earlier connection of this client ID may have left
                // (its detach leaves the record alone once this one is attached).
                match will_record.take() {
                    Some(will) => ops.push(midge_store::Op::PutWill {
                        client: cell.client_id.clone(),
                        will,
                    }),
                    None if had_session && !had_will => ops.push(midge_store::Op::DeleteWill {
                        client: cell.client_id.clone(),
                    }),
                    None => {}
                }
                // Under the session lock, as a detaching connection writes its record:
                // the store gets the two in the order the lock gave them.
                if !ops.is_empty() {
                    self.broker.commit_detached(ops);
                }
                drop(st);
            }
            self.session = Some(cell.clone());
            return Ok((cell, present));
        }
        Err(self.refuse(ReasonCode::SERVER_BUSY, "could not take over the session"))
    }

    /// After a reconnect, unacknowledged messages are sent again, PUBLISH with DUP set and
    /// PUBREL as PUBREL, in their original order [MQTT-4.4.0-1]. They are only marked here;
    /// `drain_queue` sends them within the client's (possibly smaller) Receive Maximum
    /// [MQTT-3.3.4-9].
    fn resend_inflight(&mut self, cell: &Arc<SessionCell>) {
        let mut st = cell.state.lock();
        for m in st.inflight.iter_mut() {
            m.unsent = true;
        }
        st.unsent_resends = u16::try_from(st.inflight.len()).unwrap_or(u16::MAX);
    }

    /// Checks the username and password against the password file (off the async
    /// threads: hashing is slow by design) and `allow_anonymous`. Wrong credentials get
    /// 0x86 (5.0) or "not authorised" (3.1.1, as Mosquitto answers).
    async fn authenticate(&mut self, c: &Connect) -> Result<(), Close> {
        // use_identity_as_username: the certificate names the client; no password check.
        if let Some(identity) = self.identity.take() {
            self.username = *identity;
            return match (&self.username, self.allow_anonymous) {
                (Some(_), _) | (None, true) => Ok(()),
                (None, false) => Err(self.refuse(
                    ReasonCode::NOT_AUTHORIZED,
                    "no client certificate to take the username from",
                )),
            };
        }
        self.username = c.username.clone();
        let result = match self.security().authenticator() {
            Some(auth) => {
                let username = c.username.clone();
                let password = c.password.clone();
                let client_id = self.client_id.clone();
                tokio::task::spawn_blocking(move || {
                    auth.authenticate(username.as_deref(), password.as_deref(), &client_id)
                })
                .await
                .unwrap_or(AuthResult::NotAuthorized)
            }
            // Without a password file a username proves nothing: allow_anonymous decides
            // for every client, as in Mosquitto 2.
            None => AuthResult::Anonymous,
        };
        let resolved = result.with_anonymous(self.allow_anonymous);
        match resolved {
            AuthResult::Allowed | AuthResult::Anonymous => Ok(()),
            AuthResult::BadCredentials | AuthResult::NotAuthorized => {
                let delay = self.broker.auth_failure_delay(self.peer.ip());
                if !delay.is_zero() {
                    tracing::info!(peer = %self.peer, "repeated login failures: answering in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                Err(self.refuse_login(resolved, c.username.is_none()))
            }
        }
    }

    fn refuse_login(&mut self, result: AuthResult, anonymous: bool) -> Close {
        match result {
            AuthResult::BadCredentials => {
                let code = if self.version.is_v5() {
                    ReasonCode::BAD_USER_NAME_OR_PASSWORD
                } else {
                    ReasonCode::NOT_AUTHORIZED
                };
                self.refuse(code, "bad username or password")
            }
            _ => self.refuse(
                ReasonCode::NOT_AUTHORIZED,
                if anonymous {
                    "anonymous access is not allowed"
                } else {
                    "not authorised"
                },
            ),
        }
    }

    /// Who this client is, for ACL checks.
    pub(crate) fn client_info(&self) -> ClientInfo<'_> {
        ClientInfo {
            client_id: &self.client_id,
            username: self.username.as_deref(),
        }
    }
}
