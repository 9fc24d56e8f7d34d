//! One file per protocol action, each an `impl Conn` block: a reader who knows MQTT
//! finds a behaviour by the packet that triggers it.

pub(crate) mod auth;
mod connect;
mod delivery;
mod disconnect;
mod publish;
mod subscribe;
mod unsubscribe;
