//! The application's side: [`Client`] (a cheap, cloneable handle that sends requests to
//! the event loop) and [`Messages`] (the stream of received messages).

use crate::connection;
use crate::eventloop::EventLoop;
use crate::message::{
    ConnectionInfo, Message, PublishAck, SubscribeAck, Subscription, UnsubscribeAck,
};
use crate::options::ConnectOptions;
use crate::session::Session;
use crate::Error;
use bytes::Bytes;
use midge_proto::{ByteStr, Disconnect, Properties, ProtocolVersion, QoS, Subscribe, Unsubscribe};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting in the channel to the event loop before `publish` waits for room.
const COMMAND_CHANNEL: usize = 128;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A request from a `Client` handle to the event loop.
pub(crate) enum Command {
    Publish(Message, Option<Reply<PublishAck>>),
    Subscribe(Subscribe, Option<Reply<SubscribeAck>>),
    Unsubscribe(Unsubscribe, Option<Reply<UnsubscribeAck>>),
    Disconnect(Disconnect, oneshot::Sender<()>),
    Reauthenticate(Reply<()>),
}

/// State the event loop shares with the handles.
pub(crate) struct Shared {
    version: ProtocolVersion,
    info: Mutex<ConnectionInfo>,
    closed: Mutex<Option<Error>>,
}

impl Shared {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        // The data is plain values: a panic elsewhere cannot leave it inconsistent.
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set_info(&self, info: ConnectionInfo) {
        *Self::lock(&self.info) = info;
    }

    pub(crate) fn set_closed(&self, reason: Option<Error>) {
        *Self::lock(&self.closed) = reason;
    }

    fn closed_error(&self) -> Error {
        Self::lock(&self.closed).clone().unwrap_or(Error::Closed)
    }
}

/// A handle to an MQTT connection. Cheap to clone; every clone talks to the same
/// background task. When the last clone is dropped the client disconnects.
///
/// ```
/// # use midge_client::{Client, ConnectOptions, QoS};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), midge_client::Error> {
/// # let broker = midge_broker::Broker::start(midge_broker::Config {
/// #     listeners: vec![midge_broker::ListenerConfig::tcp("127.0.0.1:0".parse().unwrap(), true)],
/// #     ..Default::default() }).await.unwrap();
/// # let port = broker.local_addrs()[0].port();
/// let (client, mut messages) = Client::connect(ConnectOptions::new("127.0.0.1", port)).await?;
/// client.subscribe("greetings/#", QoS::AtLeastOnce).await?;
/// let ack = client.publish("greetings/world", "hello", QoS::AtLeastOnce, false).await?;
/// assert!(!ack.reason_code.is_error());
/// let message = messages.recv().await.expect("the message comes back");
/// assert_eq!(&message.payload[..], b"hello");
/// client.disconnect().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.connection_info().client_id)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (CONNECT, then waits for CONNACK) and starts the background task.
    ///
    /// Fails with [`Error::ConnectionRefused`] when the server refuses, even with
    /// reconnect enabled: reconnecting applies to connections lost later.
    ///
    /// With an [`authenticator`](ConnectOptions::authenticator), the enhanced
    /// authentication exchange runs before CONNACK; the connection fails with
    /// [`Error::Authentication`] if the authenticator refuses what the server sent.
    pub async fn connect(options: ConnectOptions) -> Result<(Client, Messages), Error> {
        let mut authenticator = options.authenticator.as_ref().map(|(_, make)| make());
        let (link, connack) = connection::open(
            &options,
            options.clean_start,
            &options.client_id,
            authenticator.as_deref_mut(),
        )
        .await?;
        let client_id = connack
            .properties
            .assigned_client_identifier
            .clone()
            .unwrap_or_else(|| options.client_id.clone());
        tracing::info!(%client_id, session_present = connack.session_present, "connected");
        let shared = Arc::new(Shared {
            version: options.protocol,
            info: Mutex::new(ConnectionInfo::new(&connack, client_id.clone())),
            closed: Mutex::new(None),
        });
        let (command_tx, command_rx) = mpsc::channel(COMMAND_CHANNEL);
        let (message_tx, message_rx) = mpsc::channel(options.incoming_buffer);
        let event_loop = EventLoop {
            options,
            client_id,
            session: Session::default(),
            commands: command_rx,
            messages: message_tx,
            shared: shared.clone(),
            pending: VecDeque::new(),
            held: None,
            authenticator,
            reauthentication: None,
        };
        tokio::spawn(event_loop.run(link));
        let client = Client {
            commands: command_tx,
            shared: shared.clone(),
        };
        let messages = Messages {
            rx: message_rx,
            shared,
        };
        Ok((client, messages))
    }

    /// What the server said in its last CONNACK, and the client identifier in use.
    pub fn connection_info(&self) -> ConnectionInfo {
        Shared::lock(&self.shared.info).clone()
    }

    /// The protocol version in use.
    pub fn protocol(&self) -> ProtocolVersion {
        self.shared.version
    }

    /// Publishes and waits for the flow to complete: PUBACK (QoS 1), PUBCOMP (QoS 2), or
    /// the packet being queued for writing (QoS 0).
    pub async fn publish(
        &self,
        topic: impl Into<ByteStr>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Result<PublishAck, Error> {
        let message = Message::new(topic, payload).qos(qos).retain(retain);
        self.publish_message(message).await
    }

    /// Publishes a message built with [`Message::new`] (for properties), and waits for
    /// its acknowledgement.
    pub async fn publish_message(&self, message: Message) -> Result<PublishAck, Error> {
        self.start_publish(message).await?.await
    }

    /// Queues a message and returns as soon as the event loop has it, with a future for
    /// its acknowledgement. Lets one task keep many publishes in flight.
    ///
    /// ```
    /// # use midge_client::{Client, ConnectOptions, Message, QoS};
    /// # async fn f(client: Client) -> Result<(), midge_client::Error> {
    /// let mut acks = Vec::new();
    /// for i in 0..100 {
    ///     let message = Message::new("readings", format!("{i}")).qos(QoS::AtLeastOnce);
    ///     acks.push(client.start_publish(message).await?);
    /// }
    /// for ack in acks {
    ///     ack.await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_publish(&self, message: Message) -> Result<PendingAck<PublishAck>, Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Publish(message, Some(tx))).await?;
        Ok(PendingAck {
            rx,
            shared: self.shared.clone(),
        })
    }

    /// Subscribes to one filter; returns the granted QoS (or failure) as a reason code.
    pub async fn subscribe(
        &self,
        filter: impl Into<ByteStr>,
        qos: QoS,
    ) -> Result<SubscribeAck, Error> {
        self.subscribe_many([Subscription::new(filter, qos)], Properties::default())
            .await
    }

    /// Subscribes to several filters in one SUBSCRIBE, with 5.0 properties (Subscription
    /// Identifier, user properties).
    pub async fn subscribe_many(
        &self,
        subscriptions: impl IntoIterator<Item = Subscription>,
        properties: Properties,
    ) -> Result<SubscribeAck, Error> {
        let filters: Vec<_> = subscriptions
            .into_iter()
            .map(|s| (s.filter, s.options))
            .collect();
        for (filter, _) in &filters {
            midge_proto::topic::valid_topic_filter(filter)
                .map_err(|e| Error::InvalidRequest(format!("filter {:?}: {e}", filter.as_str())))?;
        }
        if filters.is_empty() {
            return Err(Error::InvalidRequest("SUBSCRIBE needs a filter".into()));
        }
        let packet = Subscribe {
            packet_id: 0,
            filters,
            properties,
        };
        let (tx, rx) = oneshot::channel();
        self.send(Command::Subscribe(packet, Some(tx))).await?;
        self.wait(rx).await
    }

    /// Unsubscribes from filters; returns one reason code per filter (5.0 only).
    pub async fn unsubscribe<I, F>(
        &self,
        filters: I,
        properties: Properties,
    ) -> Result<UnsubscribeAck, Error>
    where
        I: IntoIterator<Item = F>,
        F: Into<ByteStr>,
    {
        let filters: Vec<ByteStr> = filters.into_iter().map(Into::into).collect();
        if filters.is_empty() {
            return Err(Error::InvalidRequest("UNSUBSCRIBE needs a filter".into()));
        }
        let packet = Unsubscribe {
            packet_id: 0,
            filters,
            properties,
        };
        let (tx, rx) = oneshot::channel();
        self.send(Command::Unsubscribe(packet, Some(tx))).await?;
        self.wait(rx).await
    }

    /// Re-authenticates on the open connection (MQTT 5.0 enhanced authentication,
    /// section 4.12.1): sends AUTH 0x19 (Re-authenticate) with the
    /// [`authenticator`](ConnectOptions::authenticator)'s new first message
    /// [MQTT-4.12.1-1], answers the server's challenges, and resolves once the server
    /// answered AUTH 0x00 (Success) and the authenticator accepted its data. Other
    /// requests and messages keep flowing meanwhile.
    ///
    /// Fails with [`Error::InvalidRequest`] without an authenticator or while another
    /// re-authentication is in progress, with [`Error::ServerDisconnected`] when the
    /// server refuses (it then closes the connection, and the client reconnects if so
    /// configured), and with [`Error::Authentication`] when the authenticator refuses
    /// the server's answer (the client then disconnects with 0x87 Not authorized).
    ///
    /// ```
    /// # use midge_client::{Client, Error};
    /// # async fn f(client: Client) -> Result<(), Error> {
    /// client.reauthenticate().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn reauthenticate(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Reauthenticate(tx)).await?;
        self.wait(rx).await
    }

    /// Sends DISCONNECT (normal disconnection, will not published) after every request
    /// already made, and closes the connection.
    pub async fn disconnect(&self) -> Result<(), Error> {
        self.disconnect_with(Disconnect::default()).await
    }

    /// Sends this DISCONNECT: a reason code (0x04 asks the server to publish the will)
    /// and 5.0 properties (session expiry, reason string, user properties).
    pub async fn disconnect_with(&self, disconnect: Disconnect) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Disconnect(disconnect, tx)).await?;
        // The event loop answers once the socket is closed; it may also have stopped.
        let _ = rx.await;
        Ok(())
    }

    async fn send(&self, command: Command) -> Result<(), Error> {
        self.commands
            .send(command)
            .await
            .map_err(|_| self.shared.closed_error())
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        rx.await.unwrap_or_else(|_| Err(self.shared.closed_error()))
    }
}

/// The acknowledgement of a request started with [`Client::start_publish`].
#[must_use = "the acknowledgement tells whether the server took the message"]
pub struct PendingAck<T> {
    rx: oneshot::Receiver<Result<T, Error>>,
    shared: Arc<Shared>,
}

impl<T> Future for PendingAck<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(_)) => Poll::Ready(Err(self.shared.closed_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Messages received on the client's subscriptions, in order. Also a
/// [`Stream`](futures_core::Stream). Ends when the client stops;
/// [`close_reason`](Self::close_reason) then says why.
///
/// Messages are acknowledged (PUBACK, PUBREC) once they are in this buffer
/// ([`ConnectOptions::incoming_buffer`](crate::ConnectOptions::incoming_buffer) long).
/// When it is full the client stops reading from the socket until the application
/// catches up, so a slow reader slows the server down rather than growing memory.
/// Dropping `Messages` is fine for a client that only publishes: what arrives is then
/// acknowledged and discarded.
pub struct Messages {
    rx: mpsc::Receiver<Message>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages").finish_non_exhaustive()
    }
}

impl Messages {
    /// The next message; `None` once the client has stopped.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Why the client stopped: `None` while running or after a `disconnect`, the error
    /// after a connection loss it did not (or could not) recover from.
    pub fn close_reason(&self) -> Option<Error> {
        Shared::lock(&self.shared.closed).clone()
    }
}

impl futures_core::Stream for Messages {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}
