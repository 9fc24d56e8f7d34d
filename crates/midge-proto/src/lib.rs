//! MQTT 3.1, 3.1.1 and 5.0 packets: one packet model, a version-aware decoder and encoder.
//!
//! This crate knows nothing of sockets. The broker and the client feed it bytes
//! (`decode`) and get bytes back (`encode`). Payloads, topics and other strings are
//! slices of the read buffer (`bytes::Bytes`), so a PUBLISH travels through the broker
//! without its payload being copied.

mod bytestr;
mod decode;
mod encode;
mod error;
mod packet;
mod properties;
mod reason;
pub mod topic;

pub use bytestr::ByteStr;
pub use decode::{decode, decode_fixed_header, FixedHeader};
pub use encode::{encode, encoded_len};
pub use error::DecodeError;
pub use packet::*;
pub use properties::{Properties, PropertyId};
pub use reason::ReasonCode;
