//! The background task that owns the connection: reads and decodes packets, runs the QoS
//! state machines, writes batched packets, keeps the connection alive, and reconnects.
//!
//! The loop reads top to bottom: `run` (connections over time) -> `serve` (one connection:
//! a `select!` over socket reads, requests from `Client` handles, socket writes and the
//! keep-alive timer) -> `handle_packet` (one packet from the server).

use crate::auth::{auth_packet, check_server_auth, Authenticator};
use crate::client::{Command, Shared};
use crate::connection::{self, Link};
use crate::message::{ConnectionInfo, Message, PublishAck, SubscribeAck, UnsubscribeAck};
use crate::options::{ConnectOptions, Reconnect};
use crate::session::{respond, Outgoing, Responder, Session, Stage};
use crate::Error;
use bytes::Buf;
use midge_proto::{
    decode, Auth, ByteStr, ConnAck, Disconnect, Packet, PubResp, Publish, QoS, ReasonCode,
    Subscribe, Unsubscribe,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Requests taken off the channel in one go, so that their packets share a write.
const BATCH: usize = 64;
/// Stop taking requests while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 256 * 1024;

/// A received message waiting for room in the application's channel, and the ack owed
/// for it once delivered.
type Held = (Message, Option<Packet>);

/// Why a connection ended.
enum LinkEnd {
    /// The application disconnected (or dropped every `Client`): stop.
    Closed,
    /// The connection failed; reconnect if configured.
    Lost(Error),
}

/// A failure caused by the server: closes the connection, telling a 5.0 server why.
struct Fault {
    reason: Option<ReasonCode>,
    error: Error,
}

impl Fault {
    fn protocol(reason: ReasonCode, what: impl Into<String>) -> Self {
        Fault {
            reason: Some(reason),
            error: Error::Protocol(what.into()),
        }
    }
}

pub(crate) struct EventLoop {
    pub options: ConnectOptions,
    pub client_id: ByteStr,
    pub session: Session,
    pub commands: mpsc::Receiver<Command>,
    pub messages: mpsc::Sender<Message>,
    pub shared: Arc<Shared>,
    /// Requests taken from the channel, waiting for flow control (or the reconnection).
    pub pending: VecDeque<Command>,
    pub held: Option<Held>,
    /// The enhanced authentication method, for every (re)connection and re-authentication.
    pub authenticator: Option<Box<dyn Authenticator>>,
    /// The caller of a re-authentication in progress on this connection.
    pub reauthentication: Option<oneshot::Sender<Result<(), Error>>>,
}

impl EventLoop {
    pub(crate) async fn run(mut self, mut link: Link) {
        loop {
            let error = match self.serve(&mut link).await {
                LinkEnd::Closed => return self.finish(Error::Closed, None),
                LinkEnd::Lost(error) => error,
            };
            if let Some(waiter) = self.reauthentication.take() {
                let _ = waiter.send(Err(error.clone()));
            }
            tracing::info!(client_id = %self.client_id, "connection lost: {error}");
            let Some(policy) = self.options.reconnect.clone() else {
                return self.finish(error.clone(), Some(error));
            };
            match self.reconnect(&policy).await {
                Some(new_link) => link = new_link,
                None => return,
            }
        }
    }

    /// Serves one connection until it ends.
    async fn serve(&mut self, link: &mut Link) -> LinkEnd {
        // Packets may have arrived right behind CONNACK, in the same read.
        if let Err(fault) = self.process_input(link) {
            return self.fault(link, fault).await;
        }
        loop {
            if let Some((disconnect, done)) = self.pump(link) {
                self.close(link, disconnect).await;
                let _ = done.send(());
                return LinkEnd::Closed;
            }
            // While a message waits for the application we do not read, so a PINGRESP
            // could not be seen: do not count it against the server then.
            let deadline = if self.held.is_some() && link.ping_sent.is_some() {
                None
            } else {
                link.keep_alive_deadline()
            };
            let far = Instant::now() + Duration::from_secs(86_400);
            let taking = self.pending.is_empty() && link.write_buf.len() < WRITE_HIGH_WATER;
            // A clone, so that a permit does not hold `self` borrowed in the handlers.
            let messages = self.messages.clone();
            tokio::select! {
                read = link.reader.read_buf(&mut link.read_buf), if self.held.is_none() => {
                    match read {
                        Ok(0) => return LinkEnd::Lost(Error::ConnectionClosed),
                        Ok(_) => {
                            if let Err(fault) = self.process_input(link) {
                                return self.fault(link, fault).await;
                            }
                        }
                        Err(e) => return LinkEnd::Lost(e.into()),
                    }
                }
                permit = messages.reserve(), if self.held.is_some() => {
                    if let (Ok(permit), Some((message, _))) = (permit, self.held.as_ref()) {
                        permit.send(message.clone());
                    }
                    if let Some((_, Some(ack))) = self.held.take() {
                        link.send(&ack);
                    }
                    if let Err(fault) = self.process_input(link) {
                        return self.fault(link, fault).await;
                    }
                }
                command = self.commands.recv(), if taking => {
                    let Some(command) = command else {
                        self.close(link, Disconnect::default()).await;
                        return LinkEnd::Closed;
                    };
                    self.pending.push_back(command);
                    while self.pending.len() < BATCH {
                        match self.commands.try_recv() {
                            Ok(command) => self.pending.push_back(command),
                            Err(_) => break,
                        }
                    }
                }
                written = link.writer.write(&link.write_buf), if !link.write_buf.is_empty() => {
                    match written {
                        Ok(0) => return LinkEnd::Lost(Error::ConnectionClosed),
                        Ok(n) => {
                            link.write_buf.advance(n);
                            link.last_write = Instant::now();
                            if link.write_buf.is_empty() {
                                if let Err(e) = link.writer.flush().await {
                                    return LinkEnd::Lost(e.into());
                                }
                            }
                        }
                        Err(e) => return LinkEnd::Lost(e.into()),
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                    if link.ping_sent.is_some() {
                        return LinkEnd::Lost(Error::Timeout);
                    }
                    tracing::trace!(client_id = %self.client_id, "PINGREQ");
                    link.send(&Packet::PingReq);
                    link.ping_sent = Some(Instant::now());
                    // Count from now, not from when the PINGREQ is written.
                    link.last_write = Instant::now();
                }
            }
        }
    }

    /// Starts the pending requests that flow control allows. Returns a DISCONNECT request
    /// when it reaches one (everything before it has been written to the buffer).
    fn pump(&mut self, link: &mut Link) -> Option<(Disconnect, oneshot::Sender<()>)> {
        while let Some(command) = self.pending.front() {
            if link.write_buf.len() >= WRITE_HIGH_WATER || !self.can_start(command, link) {
                return None;
            }
            match self.pending.pop_front()? {
                Command::Publish(message, responder) => {
                    self.start_publish(link, message, responder)
                }
                Command::Subscribe(packet, responder) => {
                    self.start_subscribe(link, packet, responder)
                }
                Command::Unsubscribe(packet, responder) => {
                    self.start_unsubscribe(link, packet, responder)
                }
                Command::Disconnect(disconnect, done) => return Some((disconnect, done)),
                Command::Reauthenticate(responder) => self.start_reauthentication(link, responder),
            }
        }
        None
    }

    fn can_start(&self, command: &Command, link: &Link) -> bool {
        match command {
            Command::Publish(message, _) if message.qos != QoS::AtMostOnce => {
                self.session.publishes_in_flight < usize::from(link.limits.receive_maximum)
                    && self.session.has_free_id()
            }
            Command::Publish(..) | Command::Disconnect(..) | Command::Reauthenticate(..) => true,
            Command::Subscribe(..) | Command::Unsubscribe(..) => self.session.has_free_id(),
        }
    }

    fn start_publish(
        &mut self,
        link: &mut Link,
        message: Message,
        responder: Responder<PublishAck>,
    ) {
        if let Err(e) = check_publish(&message, link) {
            return respond(responder, Err(e));
        }
        let use_aliases = self.options.outgoing_topic_aliases;
        if message.qos == QoS::AtMostOnce {
            let result = link.send_publish(&message.to_publish(0), use_aliases);
            return respond(responder, result.map(|()| PublishAck::default()));
        }
        let Some(id) = self.session.free_id() else {
            return respond(
                responder,
                Err(Error::InvalidRequest("no free packet identifier".into())),
            );
        };
        if let Err(e) = link.send_publish(&message.to_publish(id), use_aliases) {
            return respond(responder, Err(e));
        }
        let stage = match message.qos {
            QoS::ExactlyOnce => Stage::PubRec,
            _ => Stage::PubAck,
        };
        let op = Outgoing::Publish {
            message,
            stage,
            respond: responder,
        };
        self.session.insert(id, op);
    }

    fn start_subscribe(
        &mut self,
        link: &mut Link,
        mut packet: Subscribe,
        responder: Responder<SubscribeAck>,
    ) {
        let Some(id) = self.session.free_id() else {
            return respond(
                responder,
                Err(Error::InvalidRequest("no free packet identifier".into())),
            );
        };
        packet.packet_id = id;
        link.send(&Packet::Subscribe(packet.clone()));
        self.session.insert(
            id,
            Outgoing::Subscribe {
                packet,
                respond: responder,
            },
        );
    }

    fn start_unsubscribe(
        &mut self,
        link: &mut Link,
        mut packet: Unsubscribe,
        responder: Responder<UnsubscribeAck>,
    ) {
        let Some(id) = self.session.free_id() else {
            return respond(
                responder,
                Err(Error::InvalidRequest("no free packet identifier".into())),
            );
        };
        packet.packet_id = id;
        link.send(&Packet::Unsubscribe(packet.clone()));
        self.session.insert(
            id,
            Outgoing::Unsubscribe {
                packet,
                respond: responder,
            },
        );
    }

    /// Sends AUTH 0x19 (Re-authenticate) with a new exchange's first data [MQTT-4.12.1-1].
    fn start_reauthentication(
        &mut self,
        link: &mut Link,
        responder: oneshot::Sender<Result<(), Error>>,
    ) {
        let Some(auth) = self.authenticator.as_deref_mut() else {
            let _ = responder.send(Err(Error::InvalidRequest(
                "re-authentication needs an authenticator (ConnectOptions::authenticator)".into(),
            )));
            return;
        };
        if self.reauthentication.is_some() {
            let _ = responder.send(Err(Error::InvalidRequest(
                "a re-authentication is already in progress".into(),
            )));
            return;
        }
        match auth.start() {
            Ok(data) => {
                link.send(&auth_packet(
                    ReasonCode::RE_AUTHENTICATE,
                    auth.method(),
                    data,
                ));
                self.reauthentication = Some(responder);
            }
            Err(e) => {
                let _ = responder.send(Err(e.into()));
            }
        }
    }

    /// AUTH from the server on an established connection: the next step of the
    /// re-authentication in progress, or its end.
    fn handle_auth(&mut self, link: &mut Link, packet: Auth) -> Result<(), Fault> {
        let Some(auth) = self.authenticator.as_deref_mut() else {
            let what = if self.options.properties.authentication_method.is_none() {
                "AUTH from the server although the client sent no Authentication Method \
                 [MQTT-4.12.0-6]"
            } else {
                "AUTH from the server, but the client has no authenticator to answer it with"
            };
            return Err(Fault::protocol(ReasonCode::PROTOCOL_ERROR, what));
        };
        if self.reauthentication.is_none() {
            // Only the client starts a re-authentication (section 4.12.1).
            return Err(Fault::protocol(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH from the server with no re-authentication in progress",
            ));
        }
        let method = auth.method().to_owned();
        let expected = if packet.reason_code == ReasonCode::SUCCESS {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::CONTINUE_AUTHENTICATION
        };
        let data = check_server_auth(&packet, &method, expected)
            .map_err(|(reason, what)| Fault::protocol(reason, what))?;
        let not_authorized = |e: crate::AuthError| Fault {
            reason: Some(ReasonCode::NOT_AUTHORIZED),
            error: e.into(),
        };
        if expected == ReasonCode::SUCCESS {
            auth.finish(data).map_err(not_authorized)?;
            tracing::info!(client_id = %self.client_id, "re-authenticated");
            if let Some(waiter) = self.reauthentication.take() {
                let _ = waiter.send(Ok(()));
            }
        } else {
            let answer = auth.step(data).map_err(not_authorized)?;
            // [MQTT-4.12.0-3] The answer to AUTH is AUTH 0x18 (Continue authentication).
            link.send(&auth_packet(
                ReasonCode::CONTINUE_AUTHENTICATION,
                &method,
                answer,
            ));
        }
        Ok(())
    }

    /// Decodes and handles every whole packet in the read buffer, stopping early when a
    /// message must wait for room in the application's channel.
    fn process_input(&mut self, link: &mut Link) -> Result<(), Fault> {
        while self.held.is_none() {
            let packet = match decode(&mut link.read_buf, link.version, link.max_incoming) {
                Ok(Some(packet)) => packet,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Fault::protocol(e.reason_code(), e.to_string())),
            };
            tracing::trace!(client_id = %self.client_id, packet = ?packet.packet_type(), "received");
            link.observe_received(&packet);
            self.handle_packet(link, packet)?;
        }
        Ok(())
    }

    fn handle_packet(&mut self, link: &mut Link, packet: Packet) -> Result<(), Fault> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(link, publish)?,
            Packet::PubAck(resp) => self.handle_puback(resp),
            Packet::PubRec(resp) => self.handle_pubrec(link, resp),
            Packet::PubRel(resp) => self.handle_pubrel(link, resp),
            Packet::PubComp(resp) => self.handle_pubcomp(resp),
            Packet::SubAck(ack) => {
                if let Some(Outgoing::Subscribe { packet, respond: r }) =
                    self.take(ack.packet_id, "SUBACK")
                {
                    let ack = SubscribeAck {
                        reason_codes: ack.reason_codes,
                        properties: ack.properties,
                    };
                    self.session.record_subscriptions(&packet, &ack);
                    respond(r, Ok(ack));
                }
            }
            Packet::UnsubAck(ack) => {
                if let Some(Outgoing::Unsubscribe { packet, respond: r }) =
                    self.take(ack.packet_id, "UNSUBACK")
                {
                    self.session.forget_subscriptions(&packet);
                    respond(
                        r,
                        Ok(UnsubscribeAck {
                            reason_codes: ack.reason_codes,
                            properties: ack.properties,
                        }),
                    );
                }
            }
            Packet::PingResp => link.ping_sent = None,
            Packet::Auth(auth) => self.handle_auth(link, auth)?,
            Packet::Disconnect(d) => {
                return Err(Fault {
                    reason: None,
                    error: Error::ServerDisconnected {
                        reason_code: d.reason_code,
                        reason_string: d.properties.reason_string.map(|s| s.to_string()),
                    },
                })
            }
            other => {
                return Err(Fault::protocol(
                    ReasonCode::PROTOCOL_ERROR,
                    format!("unexpected {:?} from the server", other.packet_type()),
                ))
            }
        }
        Ok(())
    }

    /// Takes the operation a SUBACK/UNSUBACK/PUBACK... acknowledges, if any.
    fn take(&mut self, id: u16, what: &str) -> Option<Outgoing> {
        let op = self.session.remove(id);
        if op.is_none() {
            tracing::debug!(client_id = %self.client_id, "{what} for unknown packet id {id}");
        }
        op
    }

    fn handle_publish(&mut self, link: &mut Link, mut publish: Publish) -> Result<(), Fault> {
        if link.version.is_v5() {
            link.in_aliases
                .resolve(&mut publish)
                .map_err(|what| Fault::protocol(ReasonCode::TOPIC_ALIAS_INVALID, what))?;
        }
        let id = publish.packet_id;
        let qos = publish.qos;
        let message = Message::from_publish(publish);
        match qos {
            QoS::AtMostOnce => self.deliver(link, message, None),
            QoS::AtLeastOnce => self.deliver(link, message, Some(Packet::PubAck(PubResp::new(id)))),
            QoS::ExactlyOnce => {
                let pubrec = Packet::PubRec(PubResp::new(id));
                if self.session.inbound_qos2.insert(id) {
                    self.deliver(link, message, Some(pubrec));
                } else {
                    // Delivered before; PUBREL not yet seen: acknowledge again, do not
                    // deliver twice.
                    link.send(&pubrec);
                }
            }
        }
        Ok(())
    }

    fn deliver(&mut self, link: &mut Link, message: Message, ack: Option<Packet>) {
        match self.messages.try_send(message) {
            Err(mpsc::error::TrySendError::Full(message)) => {
                self.held = Some((message, ack));
                return;
            }
            // Closed: the application dropped its `Messages`; acknowledge and move on.
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
        if let Some(ack) = ack {
            link.send(&ack);
        }
    }

    fn handle_puback(&mut self, resp: PubResp) {
        match self.session.outgoing.get(&resp.packet_id) {
            Some((
                _,
                Outgoing::Publish {
                    stage: Stage::PubAck,
                    ..
                },
            )) => {
                if let Some(Outgoing::Publish { respond: r, .. }) =
                    self.session.remove(resp.packet_id)
                {
                    respond(r, ack_result(resp));
                }
            }
            _ => {
                tracing::debug!(client_id = %self.client_id, "PUBACK for unknown packet id {}", resp.packet_id)
            }
        }
    }

    fn handle_pubrec(&mut self, link: &mut Link, resp: PubResp) {
        let id = resp.packet_id;
        let stage = match self.session.outgoing.get_mut(&id) {
            Some((_, Outgoing::Publish { stage, .. })) if *stage != Stage::PubAck => stage,
            _ => {
                let code = if link.version.is_v5() {
                    ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
                } else {
                    ReasonCode::SUCCESS
                };
                link.send(&Packet::PubRel(PubResp::with_reason(id, code)));
                return;
            }
        };
        if resp.reason_code.is_error() {
            if let Some(Outgoing::Publish { respond: r, .. }) = self.session.remove(id) {
                respond(r, ack_result(resp));
            }
            return;
        }
        *stage = Stage::PubComp;
        link.send(&Packet::PubRel(PubResp::new(id)));
    }

    fn handle_pubrel(&mut self, link: &mut Link, resp: PubResp) {
        let id = resp.packet_id;
        let code = if self.session.inbound_qos2.remove(&id) || !link.version.is_v5() {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        link.send(&Packet::PubComp(PubResp::with_reason(id, code)));
    }

    fn handle_pubcomp(&mut self, resp: PubResp) {
        match self.session.outgoing.get(&resp.packet_id) {
            Some((
                _,
                Outgoing::Publish {
                    stage: Stage::PubComp,
                    ..
                },
            )) => {
                if let Some(Outgoing::Publish { respond: r, .. }) =
                    self.session.remove(resp.packet_id)
                {
                    respond(r, ack_result(resp));
                }
            }
            _ => {
                tracing::debug!(client_id = %self.client_id, "PUBCOMP for unknown packet id {}", resp.packet_id)
            }
        }
    }

    /// Ends a connection the server broke: tell a 5.0 server why, then close.
    async fn fault(&mut self, link: &mut Link, fault: Fault) -> LinkEnd {
        tracing::debug!(client_id = %self.client_id, "closing the connection: {}", fault.error);
        if let (Some(reason), true) = (fault.reason, link.version.is_v5()) {
            link.send(&Packet::Disconnect(Disconnect {
                reason_code: reason,
                ..Disconnect::default()
            }));
            let _ = tokio::time::timeout(Duration::from_secs(1), link.flush()).await;
        }
        LinkEnd::Lost(fault.error)
    }

    /// Sends DISCONNECT after everything already queued, and closes the socket.
    async fn close(&mut self, link: &mut Link, disconnect: Disconnect) {
        link.send(&Packet::Disconnect(disconnect));
        let flush = async {
            link.flush().await?;
            link.writer.shutdown().await
        };
        if let Err(e) = tokio::time::timeout(self.options.connect_timeout, flush).await {
            tracing::debug!(client_id = %self.client_id, "DISCONNECT not written: {e}");
        }
    }

    /// Reconnects with back-off, holding new requests in the offline buffer meanwhile.
    /// `None` when the client stopped (asked to, or out of attempts).
    async fn reconnect(&mut self, policy: &Reconnect) -> Option<Link> {
        self.held = None;
        let mut delay = policy.min_delay;
        let mut attempts = 0u32;
        loop {
            if !self.wait_offline(delay).await {
                self.finish(Error::Closed, None);
                return None;
            }
            attempts = attempts.saturating_add(1);
            // A 5.0 client asks to resume its session; a 3.1.1 client with clean session
            // had none to resume, and will subscribe again.
            let clean_start = !self.options.protocol.is_v5() && self.options.clean_start;
            let attempt = connection::open(
                &self.options,
                clean_start,
                &self.client_id,
                self.authenticator.as_deref_mut(),
            );
            match attempt.await {
                Ok((mut link, connack)) => {
                    tracing::info!(client_id = %self.client_id, session_present = connack.session_present, "reconnected");
                    self.resume(&mut link, &connack);
                    return Some(link);
                }
                Err(error) => {
                    tracing::debug!(client_id = %self.client_id, "reconnect attempt {attempts} failed: {error}");
                    if policy.max_attempts.is_some_and(|max| attempts >= max) {
                        self.finish(error.clone(), Some(error));
                        return None;
                    }
                }
            }
            delay = (delay * 2).min(policy.max_delay);
        }
    }

    /// Sleeps for `delay`, queueing requests meanwhile. False when told to stop.
    async fn wait_offline(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(Command::Disconnect(_, done)) => {
                        let _ = done.send(());
                        return false;
                    }
                    Some(command) => self.hold_offline(command),
                }
            }
        }
    }

    fn hold_offline(&mut self, command: Command) {
        if self.pending.len() < self.options.offline_buffer {
            self.pending.push_back(command);
            return;
        }
        match command {
            Command::Publish(_, r) => respond(r, Err(Error::OfflineBufferFull)),
            Command::Subscribe(_, r) => respond(r, Err(Error::OfflineBufferFull)),
            Command::Unsubscribe(_, r) => respond(r, Err(Error::OfflineBufferFull)),
            Command::Disconnect(_, done) => {
                let _ = done.send(());
            }
            Command::Reauthenticate(r) => {
                let _ = r.send(Err(Error::OfflineBufferFull));
            }
        }
    }

    /// After a reconnection: resend what the server has not acknowledged, and restore
    /// subscriptions if the server no longer has the session.
    fn resume(&mut self, link: &mut Link, connack: &ConnAck) {
        if let Some(id) = &connack.properties.assigned_client_identifier {
            self.client_id = id.clone();
        }
        self.shared
            .set_info(ConnectionInfo::new(connack, self.client_id.clone()));
        let present = connack.session_present;
        // What was in flight on the old connection, before anything new is started.
        let resend = self.session.ids_in_send_order();
        if !present {
            // The server forgot the QoS 2 exchanges it started: our half goes too.
            self.session.inbound_qos2.clear();
            // Subscribe again first, so that resent messages find their subscribers.
            for (sub, properties) in std::mem::take(&mut self.session.subscriptions) {
                let packet = Subscribe {
                    packet_id: 0,
                    filters: vec![(sub.filter, sub.options)],
                    properties,
                };
                self.start_subscribe(link, packet, None);
            }
        }
        let use_aliases = self.options.outgoing_topic_aliases;
        for id in resend {
            let Some((_, op)) = self.session.outgoing.get(&id) else {
                continue;
            };
            let result = match op {
                Outgoing::Publish {
                    stage: Stage::PubComp,
                    ..
                } if !present => {
                    // The server had the message (it sent PUBREC): it is delivered.
                    if let Some(Outgoing::Publish { respond: r, .. }) = self.session.remove(id) {
                        respond(r, Ok(PublishAck::default()));
                    }
                    continue;
                }
                Outgoing::Publish {
                    stage: Stage::PubComp,
                    ..
                } => {
                    link.send(&Packet::PubRel(PubResp::new(id)));
                    Ok(())
                }
                Outgoing::Publish { message, .. } => {
                    let mut publish = message.to_publish(id);
                    publish.dup = present;
                    link.send_publish(&publish, use_aliases)
                }
                Outgoing::Subscribe { packet, .. } => {
                    link.send(&Packet::Subscribe(packet.clone()));
                    Ok(())
                }
                Outgoing::Unsubscribe { packet, .. } => {
                    link.send(&Packet::Unsubscribe(packet.clone()));
                    Ok(())
                }
            };
            if let Err(e) = result {
                if let Some(op) = self.session.remove(id) {
                    op.fail(e);
                }
            }
        }
    }

    /// Stops for good: fails what is outstanding, records why for `Messages`.
    fn finish(&mut self, error: Error, reason: Option<Error>) {
        self.session.fail_all(&error);
        for command in self.pending.drain(..) {
            match command {
                Command::Publish(_, r) => respond(r, Err(error.clone())),
                Command::Subscribe(_, r) => respond(r, Err(error.clone())),
                Command::Unsubscribe(_, r) => respond(r, Err(error.clone())),
                Command::Disconnect(_, done) => {
                    let _ = done.send(());
                }
                Command::Reauthenticate(r) => {
                    let _ = r.send(Err(error.clone()));
                }
            }
        }
        if let Some(waiter) = self.reauthentication.take() {
            let _ = waiter.send(Err(error.clone()));
        }
        self.shared.set_closed(reason);
        self.commands.close();
    }
}

/// The result of PUBACK/PUBREC/PUBCOMP for the publisher.
fn ack_result(resp: PubResp) -> Result<PublishAck, Error> {
    if resp.reason_code.is_error() {
        Err(Error::PublishRefused {
            reason_code: resp.reason_code,
            reason_string: resp.properties.reason_string.map(|s| s.to_string()),
        })
    } else {
        Ok(PublishAck {
            reason_code: resp.reason_code,
            properties: resp.properties,
        })
    }
}

/// Checks a message against MQTT's rules and the server's announced limits.
fn check_publish(message: &Message, link: &Link) -> Result<(), Error> {
    midge_proto::topic::valid_topic_name(&message.topic)
        .map_err(|e| Error::InvalidRequest(format!("topic {:?}: {e}", message.topic.as_str())))?;
    if message.qos.as_u8() > link.limits.maximum_qos {
        return Err(Error::InvalidRequest(format!(
            "QoS {} is above the server's maximum QoS {}",
            message.qos.as_u8(),
            link.limits.maximum_qos
        )));
    }
    if message.retain && !link.limits.retain_available {
        return Err(Error::InvalidRequest(
            "the server does not support retained messages".into(),
        ));
    }
    Ok(())
}
