//! An async MQTT 3.1, 3.1.1 and 5.0 client for tokio.
//!
//! [`Client::connect`] opens the connection and returns a [`Client`] (a cheap, cloneable
//! handle) and [`Messages`] (what arrives on the subscriptions). One background task
//! owns the socket: it decodes packets, runs the QoS 1/2 state machines in both
//! directions, batches writes, sends PINGREQ on time, respects the server's Receive
//! Maximum, Maximum Packet Size and Topic Alias Maximum, and, when asked to, reconnects
//! with back-off, resuming the session and resending what was not acknowledged.
//!
//! ```
//! use midge_client::{Client, ConnectOptions, QoS};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), midge_client::Error> {
//! # let broker = midge_broker::Broker::start(midge_broker::Config {
//! #     listeners: vec![midge_broker::ListenerConfig::tcp("127.0.0.1:0".parse().unwrap(), true)],
//! #     ..Default::default() }).await.unwrap();
//! # let port = broker.local_addrs()[0].port();
//! let options = ConnectOptions::new("127.0.0.1", port).client_id("thermostat");
//! let (client, mut messages) = Client::connect(options).await?;
//!
//! client.subscribe("home/+/temperature", QoS::AtLeastOnce).await?;
//! client.publish("home/kitchen/temperature", "21.5", QoS::ExactlyOnce, false).await?;
//!
//! let message = messages.recv().await.expect("our own message comes back");
//! assert_eq!(message.topic, "home/kitchen/temperature");
//! client.disconnect().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Authentication: user name and password in CONNECT
//! ([`ConnectOptions::credentials`]), or MQTT 5.0 enhanced authentication with a
//! challenge/response [`Authenticator`] ([`ConnectOptions::authenticator`]), such as the
//! built-in [`ScramSha256`], which also proves that the server holds the credentials.
//!
//! Transports: TCP ([`TcpConnector`]) and TLS ([`TlsConnector`], rustls) are built in;
//! anything `AsyncRead + AsyncWrite` plugs in through [`Connector`] (a WebSocket
//! connector will join when the broker serves WebSocket).

mod alias;
pub mod auth;
mod client;
mod connection;
mod error;
mod eventloop;
mod message;
mod options;
pub mod scram;
mod session;
pub mod tls;
pub mod transport;

pub use auth::{AuthError, Authenticator};
pub use client::{Client, Messages, PendingAck};
pub use error::Error;
pub use message::{
    ConnectionInfo, Message, PublishAck, SubscribeAck, Subscription, UnsubscribeAck,
};
pub use options::{ConnectOptions, Direction, PacketObserver, Reconnect, Will};
pub use scram::ScramSha256;
pub use tls::{TlsConnector, TlsOptions};
pub use transport::{Connector, TcpConnector};

pub use midge_proto::{
    ByteStr, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode, RetainHandling,
    SubscriptionOptions,
};
