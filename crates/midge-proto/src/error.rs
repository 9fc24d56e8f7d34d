//! Decode errors, each mapped to the consequence the specification gives it.

use crate::ReasonCode;

/// Why a byte stream is not a valid packet. Every variant closes the connection; the
/// reason code is what a 5.0 peer is told (CONNACK before CONNECT completed, DISCONNECT
/// after).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes do not follow the packet grammar (reason code 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well formed but breaks a rule of the protocol (reason code 0x82).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is larger than the maximum packet size (reason code 0x95). Reported as
    /// soon as the fixed header is read, before the body is buffered.
    #[error("packet too large: {size} bytes, maximum {max}")]
    PacketTooLarge { size: usize, max: usize },
    /// CONNECT with a protocol name or level this broker does not speak (CONNACK 0x84, or
    /// return code 1 for 3.1/3.1.1).
    #[error("unsupported protocol name or level {level}")]
    UnsupportedProtocol { level: u8 },
    /// A topic name that is not valid (wildcards, empty where not allowed) (reason code 0x90).
    #[error("topic name invalid: {0}")]
    TopicNameInvalid(&'static str),
}

impl DecodeError {
    /// The 5.0 reason code to report this error with.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
        }
    }
}

/// The error for a packet whose body ends before the fields it declares.
pub(crate) const SHORT: DecodeError = DecodeError::Malformed("packet shorter than its fields");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_reason_code() {
        assert_eq!(DecodeError::Malformed("x").reason_code().0, 0x81);
        assert_eq!(DecodeError::Protocol("x").reason_code().0, 0x82);
        let too_large = DecodeError::PacketTooLarge { size: 2, max: 1 };
        assert_eq!(too_large.reason_code().0, 0x95);
        let unsupported = DecodeError::UnsupportedProtocol { level: 9 };
        assert_eq!(unsupported.reason_code().0, 0x84);
        assert_eq!(DecodeError::TopicNameInvalid("x").reason_code().0, 0x90);
    }
}
