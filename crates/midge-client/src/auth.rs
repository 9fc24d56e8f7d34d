//! MQTT 5.0 enhanced authentication (section 4.12): the [`Authenticator`] trait a
//! challenge/response method implements, its error type, and the checks every AUTH packet
//! from the server must pass before its data reaches the method.
//!
//! The exchange at connection time:
//!
//! | client | server |
//! | --- | --- |
//! | CONNECT, Authentication Method + [`Authenticator::start`] data | |
//! | | AUTH 0x18 (Continue authentication) with a challenge, any number of times |
//! | AUTH 0x18 with [`Authenticator::step`]'s answer | |
//! | | CONNACK 0x00, its Authentication Data checked by [`Authenticator::finish`] |
//!
//! Re-authentication ([`Client::reauthenticate`](crate::Client::reauthenticate)) is the
//! same with AUTH 0x19 (Re-authenticate) instead of CONNECT and AUTH 0x00 instead of
//! CONNACK.

use bytes::Bytes;
use midge_proto::{Auth, Packet, Properties, ReasonCode};

/// A multi-step ("challenge/response") authentication method for MQTT 5.0 enhanced
/// authentication, such as [`ScramSha256`](crate::ScramSha256).
///
/// The client calls [`start`](Self::start) at the beginning of every exchange (the first
/// CONNECT, every automatic reconnection, every re-authentication), [`step`](Self::step)
/// for each AUTH 0x18 (Continue authentication) the server sends, and
/// [`finish`](Self::finish) with the data of the CONNACK 0x00 or AUTH 0x00 (Success) that
/// ends the exchange. Any error fails the connection (or the re-authentication, which
/// closes the connection [MQTT-4.12.1-2]).
///
/// Methods run on the connection's task: a slow computation (PBKDF2) delays that
/// connection's other packets, which is acceptable once per exchange.
pub trait Authenticator: Send {
    /// The Authentication Method, sent in CONNECT and in every AUTH packet; the server's
    /// AUTH packets and its CONNACK must name the same one [MQTT-4.12.0-5].
    fn method(&self) -> &str;

    /// Begins a new exchange, forgetting any earlier one (so that each exchange uses a
    /// fresh nonce, for instance); returns the Authentication Data for CONNECT or for
    /// AUTH 0x19 (Re-authenticate), if the method has any.
    fn start(&mut self) -> Result<Option<Bytes>, AuthError>;

    /// Answers the server's AUTH 0x18 (Continue authentication), whose Authentication
    /// Data is `server_data`; returns the data for the client's AUTH 0x18 [MQTT-4.12.0-3].
    fn step(&mut self, server_data: Option<&[u8]>) -> Result<Option<Bytes>, AuthError>;

    /// The server declared success (CONNACK 0x00 or AUTH 0x00) with `server_data`. A
    /// method whose server proves its identity checks that proof here; an error fails the
    /// connection even though the server accepted the client.
    fn finish(&mut self, server_data: Option<&[u8]>) -> Result<(), AuthError>;
}

/// Why an [`Authenticator`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The server's message does not follow the method's format.
    #[error("malformed server message: {0}")]
    Malformed(String),
    /// The server's message is well formed but its parameters are refused (a weakened
    /// work factor, a nonce that is not ours, an extension we must understand and do not).
    #[error("server parameters refused: {0}")]
    Refused(String),
    /// The server did not prove that it knows the credentials: it may be an impostor.
    #[error("the server's proof of the credentials does not verify")]
    ServerNotVerified,
    /// The server reported a failure in the method's own terms (SCRAM's `e=`).
    #[error("the server reported an authentication error: {0}")]
    ServerError(String),
    /// The exchange did not happen in the method's order (a challenge after the last
    /// step, success before the last step).
    #[error("unexpected authentication step: {0}")]
    OutOfOrder(&'static str),
    /// The client's own credentials cannot be used with this method.
    #[error("unusable credentials: {0}")]
    Credentials(String),
    /// Anything else, for methods outside this crate.
    #[error("{0}")]
    Other(String),
}

/// Checks an AUTH packet from the server against the exchange in progress, returning its
/// Authentication Data; on failure, the DISCONNECT reason code and why.
pub(crate) fn check_server_auth<'a>(
    auth: &'a Auth,
    method: &str,
    expected: ReasonCode,
) -> Result<Option<&'a [u8]>, (ReasonCode, String)> {
    let theirs = auth.properties.authentication_method.as_deref();
    if theirs != Some(method) {
        return Err((
            ReasonCode::BAD_AUTHENTICATION_METHOD,
            format!(
                "AUTH with Authentication Method {theirs:?}, expected {method:?} [MQTT-4.12.0-5]"
            ),
        ));
    }
    if auth.reason_code != expected {
        return Err((
            ReasonCode::PROTOCOL_ERROR,
            format!(
                "AUTH with reason code {} where {} was expected",
                auth.reason_code.name(),
                expected.name()
            ),
        ));
    }
    Ok(auth.properties.authentication_data.as_deref())
}

/// An AUTH packet from the client naming `method`.
pub(crate) fn auth_packet(reason_code: ReasonCode, method: &str, data: Option<Bytes>) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: Properties {
            authentication_method: Some(method.into()),
            authentication_data: data,
            ..Properties::default()
        },
    })
}
