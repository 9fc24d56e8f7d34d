//! The Midge MQTT broker as a library: listeners, connections, sessions, routing,
//! retained messages, wills and `$SYS` statistics. Embeddable in tests.

pub mod config;
pub mod retained;
pub mod router;

pub use config::{Config, ListenerConfig};
