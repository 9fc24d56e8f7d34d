//! The client's error type: what can go wrong connecting, publishing, subscribing.

use midge_proto::{DecodeError, ReasonCode};
use std::io;
use std::sync::Arc;

/// Why an operation failed.
///
/// `Clone`, because one connection loss fails every operation that was waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The network connection could not be opened, or failed (I/O error).
    #[error("{0}")]
    Io(Arc<io::Error>),
    /// The server answered CONNECT with a failure reason code (a 3.1/3.1.1 return code is
    /// given as its 5.0 equivalent; [`ReasonCode::to_v3_connack`] gives it back).
    #[error("connection refused: {}", reason_text(*.reason_code, .reason_string))]
    ConnectionRefused {
        reason_code: ReasonCode,
        reason_string: Option<String>,
    },
    /// The server sent DISCONNECT (5.0).
    #[error("disconnected by the server: {}", reason_text(*.reason_code, .reason_string))]
    ServerDisconnected {
        reason_code: ReasonCode,
        reason_string: Option<String>,
    },
    /// The server closed the network connection.
    #[error("the server closed the connection")]
    ConnectionClosed,
    /// The server broke the protocol (or sent a packet this client cannot decode).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Enhanced authentication failed on the client's side: the
    /// [`Authenticator`](crate::Authenticator) refused what the server sent (a server that
    /// does not prove it knows the credentials, a weakened SCRAM iteration count, ...).
    /// A server refusing the client is [`ConnectionRefused`](Self::ConnectionRefused) or,
    /// on re-authentication, [`ServerDisconnected`](Self::ServerDisconnected).
    #[error("authentication failed: {0}")]
    Authentication(#[from] crate::auth::AuthError),
    /// The server did not answer in time (CONNACK, or PINGRESP within the keep-alive).
    #[error("timed out waiting for the server")]
    Timeout,
    /// The server refused a PUBLISH (PUBACK/PUBREC with a failure reason code).
    #[error("publish refused: {}", reason_text(*.reason_code, .reason_string))]
    PublishRefused {
        reason_code: ReasonCode,
        reason_string: Option<String>,
    },
    /// A packet would exceed the server's Maximum Packet Size; it was not sent.
    #[error("packet too large: {size} bytes, the server accepts at most {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// The request breaks a limit the server announced in CONNACK (QoS, retain, ...), or
    /// is not valid MQTT (a wildcard in a topic name, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// While reconnecting, the offline buffer is full: the request was not queued.
    #[error("offline buffer full")]
    OfflineBufferFull,
    /// The client was disconnected (by `disconnect`, or after giving up reconnecting).
    #[error("the client is closed")]
    Closed,
}

impl Error {
    /// The 5.0 reason code carried by the error, when there is one.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            Error::ConnectionRefused { reason_code, .. }
            | Error::ServerDisconnected { reason_code, .. }
            | Error::PublishRefused { reason_code, .. } => Some(*reason_code),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Protocol(e.to_string())
    }
}

fn reason_text(code: ReasonCode, reason_string: &Option<String>) -> String {
    match reason_string {
        Some(s) => format!("{} ({s})", code.name()),
        None => code.name().to_string(),
    }
}
