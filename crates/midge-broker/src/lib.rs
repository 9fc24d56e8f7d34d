//! The Midge MQTT broker as a library: listeners, connections, sessions, routing,
//! retained messages, wills and `$SYS` statistics. Embeddable in tests.

pub mod auth;
pub mod broker;
pub mod config;
mod connection;
mod keepalive;
mod listener;
pub mod message;
pub mod parking;
mod persist;
mod protocol;
pub mod retained;
pub mod router;
pub mod session;
mod slow_consumer;
pub mod sys;
pub mod tls;

pub use broker::{Broker, BrokerInner, ShutdownError, StartError};
pub use config::{Config, ListenerConfig, ListenerSecurity, Persistence, TlsSettings, TlsVersion};
pub use midge_store::Durability;
