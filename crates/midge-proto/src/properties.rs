//! MQTT 5.0 properties (section 2.2.2): one struct holding every property, each optional.
//!
//! Which properties a packet may carry is checked by the decoder; the struct itself is
//! the same for every packet so that the broker can forward them without reshaping.

use crate::decode::Reader;
use crate::encode::{put_binary, put_varint, varint_len, Counter, Sink};
use crate::error::SHORT;
use crate::{ByteStr, DecodeError};
use bytes::Bytes;

/// Property identifiers (MQTT 5.0 section 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PropertyId {
    PayloadFormatIndicator = 0x01,
    MessageExpiryInterval = 0x02,
    ContentType = 0x03,
    ResponseTopic = 0x08,
    CorrelationData = 0x09,
    SubscriptionIdentifier = 0x0B,
    SessionExpiryInterval = 0x11,
    AssignedClientIdentifier = 0x12,
    ServerKeepAlive = 0x13,
    AuthenticationMethod = 0x15,
    AuthenticationData = 0x16,
    RequestProblemInformation = 0x17,
    WillDelayInterval = 0x18,
    RequestResponseInformation = 0x19,
    ResponseInformation = 0x1A,
    ServerReference = 0x1C,
    ReasonString = 0x1F,
    ReceiveMaximum = 0x21,
    TopicAliasMaximum = 0x22,
    TopicAlias = 0x23,
    MaximumQos = 0x24,
    RetainAvailable = 0x25,
    UserProperty = 0x26,
    MaximumPacketSize = 0x27,
    WildcardSubscriptionAvailable = 0x28,
    SubscriptionIdentifierAvailable = 0x29,
    SharedSubscriptionAvailable = 0x2A,
}

/// Every MQTT 5.0 property. `None` / empty means absent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<ByteStr>,
    pub response_topic: Option<ByteStr>,
    pub correlation_data: Option<Bytes>,
    /// A PUBLISH from the server may carry several; SUBSCRIBE carries at most one.
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<ByteStr>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<ByteStr>,
    pub authentication_data: Option<Bytes>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<ByteStr>,
    pub server_reference: Option<ByteStr>,
    pub reason_string: Option<ByteStr>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    /// Order is kept and names may repeat [MQTT-3.3.2-18].
    pub user_properties: Vec<(ByteStr, ByteStr)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

impl Properties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// Which packet a property block belongs to. Each allows its own identifiers
/// (5.0 table 2.2.2.2); any other identifier is a Malformed Packet (section 2.2.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl PropertyId {
    pub fn from_u8(id: u8) -> Option<PropertyId> {
        use PropertyId::*;
        Some(match id {
            0x01 => PayloadFormatIndicator,
            0x02 => MessageExpiryInterval,
            0x03 => ContentType,
            0x08 => ResponseTopic,
            0x09 => CorrelationData,
            0x0B => SubscriptionIdentifier,
            0x11 => SessionExpiryInterval,
            0x12 => AssignedClientIdentifier,
            0x13 => ServerKeepAlive,
            0x15 => AuthenticationMethod,
            0x16 => AuthenticationData,
            0x17 => RequestProblemInformation,
            0x18 => WillDelayInterval,
            0x19 => RequestResponseInformation,
            0x1A => ResponseInformation,
            0x1C => ServerReference,
            0x1F => ReasonString,
            0x21 => ReceiveMaximum,
            0x22 => TopicAliasMaximum,
            0x23 => TopicAlias,
            0x24 => MaximumQos,
            0x25 => RetainAvailable,
            0x26 => UserProperty,
            0x27 => MaximumPacketSize,
            0x28 => WildcardSubscriptionAvailable,
            0x29 => SubscriptionIdentifierAvailable,
            0x2A => SharedSubscriptionAvailable,
            _ => return None,
        })
    }

    /// Whether the property may appear in that packet (5.0 table 2.2.2.2).
    pub(crate) fn allowed_in(self, context: PropertyContext) -> bool {
        use PropertyContext as C;
        use PropertyId::*;
        match self {
            PayloadFormatIndicator
            | MessageExpiryInterval
            | ContentType
            | ResponseTopic
            | CorrelationData => matches!(context, C::Publish | C::Will),
            SubscriptionIdentifier => matches!(context, C::Publish | C::Subscribe),
            SessionExpiryInterval => {
                matches!(context, C::Connect | C::ConnAck | C::Disconnect)
            }
            AssignedClientIdentifier
            | ServerKeepAlive
            | ResponseInformation
            | MaximumQos
            | RetainAvailable
            | WildcardSubscriptionAvailable
            | SubscriptionIdentifierAvailable
            | SharedSubscriptionAvailable => context == C::ConnAck,
            AuthenticationMethod | AuthenticationData => {
                matches!(context, C::Connect | C::ConnAck | C::Auth)
            }
            RequestProblemInformation | RequestResponseInformation => context == C::Connect,
            WillDelayInterval => context == C::Will,
            ServerReference => matches!(context, C::ConnAck | C::Disconnect),
            ReasonString => !matches!(
                context,
                C::Connect | C::Will | C::Publish | C::Subscribe | C::Unsubscribe
            ),
            ReceiveMaximum | TopicAliasMaximum | MaximumPacketSize => {
                matches!(context, C::Connect | C::ConnAck)
            }
            TopicAlias => context == C::Publish,
            UserProperty => true,
        }
    }
}

impl Properties {
    /// Reads a property block: its Variable Byte Integer length, then the properties.
    /// Repeating a property that may appear once is a Protocol Error, as are the values
    /// the specification forbids (0 for Receive Maximum, 2 for a 0/1 flag, ...).
    pub(crate) fn decode(r: &mut Reader, context: PropertyContext) -> Result<Self, DecodeError> {
        let len = r.varint()?;
        let mut r = r.sub(usize::try_from(len).map_err(|_| SHORT)?)?;
        let mut props = Properties::default();
        while !r.is_empty() {
            let id = u8::try_from(r.varint()?)
                .ok()
                .and_then(PropertyId::from_u8)
                .ok_or(DecodeError::Malformed("unknown property identifier"))?;
            if !id.allowed_in(context) {
                return Err(DecodeError::Malformed(
                    "property not allowed on this packet",
                ));
            }
            props.decode_one(id, &mut r, context)?;
        }
        if props.authentication_data.is_some() && props.authentication_method.is_none() {
            return Err(DecodeError::Protocol(
                "Authentication Data without Authentication Method",
            ));
        }
        Ok(props)
    }

    fn decode_one(
        &mut self,
        id: PropertyId,
        r: &mut Reader,
        context: PropertyContext,
    ) -> Result<(), DecodeError> {
        use PropertyId::*;
        match id {
            PayloadFormatIndicator => once(&mut self.payload_format_indicator, r.u8()?),
            MessageExpiryInterval => once(&mut self.message_expiry_interval, r.u32()?),
            ContentType => once(&mut self.content_type, r.string()?),
            ResponseTopic => once(&mut self.response_topic, r.string()?),
            CorrelationData => once(&mut self.correlation_data, r.binary()?),
            SubscriptionIdentifier => {
                let value = r.varint()?;
                if value == 0 {
                    return Err(DecodeError::Protocol("Subscription Identifier 0"));
                }
                // A PUBLISH to a client carries one per matching subscription.
                if context != PropertyContext::Publish && !self.subscription_identifiers.is_empty()
                {
                    return Err(DUPLICATE);
                }
                self.subscription_identifiers.push(value);
                Ok(())
            }
            SessionExpiryInterval => once(&mut self.session_expiry_interval, r.u32()?),
            AssignedClientIdentifier => once(&mut self.assigned_client_identifier, r.string()?),
            ServerKeepAlive => once(&mut self.server_keep_alive, r.u16()?),
            AuthenticationMethod => once(&mut self.authentication_method, r.string()?),
            AuthenticationData => once(&mut self.authentication_data, r.binary()?),
            RequestProblemInformation => once(&mut self.request_problem_information, flag(r)?),
            WillDelayInterval => once(&mut self.will_delay_interval, r.u32()?),
            RequestResponseInformation => once(&mut self.request_response_information, flag(r)?),
            ResponseInformation => once(&mut self.response_information, r.string()?),
            ServerReference => once(&mut self.server_reference, r.string()?),
            ReasonString => once(&mut self.reason_string, r.string()?),
            ReceiveMaximum => once(&mut self.receive_maximum, non_zero_u16(r)?),
            TopicAliasMaximum => once(&mut self.topic_alias_maximum, r.u16()?),
            TopicAlias => once(&mut self.topic_alias, r.u16()?),
            MaximumQos => once(&mut self.maximum_qos, flag(r)?),
            RetainAvailable => once(&mut self.retain_available, flag(r)?),
            UserProperty => {
                let name = r.string()?;
                let value = r.string()?;
                self.user_properties.push((name, value));
                Ok(())
            }
            MaximumPacketSize => {
                let value = r.u32()?;
                if value == 0 {
                    return Err(DecodeError::Protocol("Maximum Packet Size 0"));
                }
                once(&mut self.maximum_packet_size, value)
            }
            WildcardSubscriptionAvailable => {
                once(&mut self.wildcard_subscription_available, flag(r)?)
            }
            SubscriptionIdentifierAvailable => {
                once(&mut self.subscription_identifier_available, flag(r)?)
            }
            SharedSubscriptionAvailable => once(&mut self.shared_subscription_available, flag(r)?),
        }
    }

    /// Writes the property block: length, then each property in identifier order.
    pub(crate) fn encode<S: Sink>(&self, out: &mut S) {
        put_varint(out, self.body_len() as u32);
        self.encode_body(out);
    }

    /// Bytes of the whole 5.0 property block, length prefix included (lets the broker
    /// see what dropping optional properties would save against a Maximum Packet Size).
    pub fn encoded_len(&self) -> usize {
        let body = self.body_len();
        varint_len(body) + body
    }

    fn body_len(&self) -> usize {
        let mut counter = Counter::default();
        self.encode_body(&mut counter);
        counter.0
    }

    fn encode_body<S: Sink>(&self, out: &mut S) {
        use PropertyId::*;
        let id = |out: &mut S, id: PropertyId| out.put_u8(id as u8);
        if let Some(v) = self.payload_format_indicator {
            id(out, PayloadFormatIndicator);
            out.put_u8(v);
        }
        if let Some(v) = self.message_expiry_interval {
            id(out, MessageExpiryInterval);
            out.put_u32(v);
        }
        if let Some(v) = &self.content_type {
            id(out, ContentType);
            put_binary(out, v.as_bytes());
        }
        if let Some(v) = &self.response_topic {
            id(out, ResponseTopic);
            put_binary(out, v.as_bytes());
        }
        if let Some(v) = &self.correlation_data {
            id(out, CorrelationData);
            put_binary(out, v);
        }
        for &v in &self.subscription_identifiers {
            id(out, SubscriptionIdentifier);
            put_varint(out, v);
        }
        if let Some(v) = self.session_expiry_interval {
            id(out, SessionExpiryInterval);
            out.put_u32(v);
        }
        if let Some(v) = &self.assigned_client_identifier {
            id(out, AssignedClientIdentifier);
            put_binary(out, v.as_bytes());
        }
        if let Some(v) = self.server_keep_alive {
            id(out, ServerKeepAlive);
            out.put_u16(v);
        }
        if let Some(v) = &self.authentication_method {
            id(out, AuthenticationMethod);
            put_binary(out, v.as_bytes());
        }
        if let Some(v) = &self.authentication_data {
            id(out, AuthenticationData);
            put_binary(out, v);
        }
        if let Some(v) = self.request_problem_information {
            id(out, RequestProblemInformation);
            out.put_u8(v);
        }
        if let Some(v) = self.will_delay_interval {
            id(out, WillDelayInterval);
            out.put_u32(v);
        }
        if let Some(v) = self.request_response_information {
            id(out, RequestResponseInformation);
            out.put_u8(v);
        }
        if let Some(v) = &self.response_information {
            id(out, ResponseInformation);
            put_binary(out, v.as_bytes());
        }
        if let Some(v) = &self.server_reference {
            id(out, ServerReference);
            put_binary(out, v.as_bytes());
        }
        if let Some(v) = &self.reason_string {
            id(out, ReasonString);
            put_binary(out, v.as_bytes());
        }
        if let Some(v) = self.receive_maximum {
            id(out, ReceiveMaximum);
            out.put_u16(v);
        }
        if let Some(v) = self.topic_alias_maximum {
            id(out, TopicAliasMaximum);
            out.put_u16(v);
        }
        if let Some(v) = self.topic_alias {
            id(out, TopicAlias);
            out.put_u16(v);
        }
        if let Some(v) = self.maximum_qos {
            id(out, MaximumQos);
            out.put_u8(v);
        }
        if let Some(v) = self.retain_available {
            id(out, RetainAvailable);
            out.put_u8(v);
        }
        for (name, value) in &self.user_properties {
            id(out, UserProperty);
            put_binary(out, name.as_bytes());
            put_binary(out, value.as_bytes());
        }
        if let Some(v) = self.maximum_packet_size {
            id(out, MaximumPacketSize);
            out.put_u32(v);
        }
        if let Some(v) = self.wildcard_subscription_available {
            id(out, WildcardSubscriptionAvailable);
            out.put_u8(v);
        }
        if let Some(v) = self.subscription_identifier_available {
            id(out, SubscriptionIdentifierAvailable);
            out.put_u8(v);
        }
        if let Some(v) = self.shared_subscription_available {
            id(out, SharedSubscriptionAvailable);
            out.put_u8(v);
        }
    }
}

const DUPLICATE: DecodeError = DecodeError::Protocol("property included more than once");

/// Sets a property that may appear at most once.
fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DUPLICATE);
    }
    *slot = Some(value);
    Ok(())
}

/// A byte property whose only values are 0 and 1 (anything else is a Protocol Error).
fn flag(r: &mut Reader) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol("property value other than 0 or 1")),
    }
}

/// Receive Maximum: 0 is a Protocol Error.
fn non_zero_u16(r: &mut Reader) -> Result<u16, DecodeError> {
    match r.u16()? {
        0 => Err(DecodeError::Protocol("Receive Maximum 0")),
        v => Ok(v),
    }
}
