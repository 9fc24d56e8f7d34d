//! Application messages (what is published and received) and the acknowledgements the
//! client's operations return.

use bytes::Bytes;
use midge_proto::{
    ByteStr, ConnAck, Properties, Publish, QoS, ReasonCode, RetainHandling, SubscriptionOptions,
};

/// An application message, received from or published to the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub topic: ByteStr,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    /// Set on a received message the server may have sent before (QoS 1/2 resend).
    pub dup: bool,
    /// 5.0 PUBLISH properties. On received messages a Topic Alias has already been
    /// resolved into `topic` and removed from here.
    pub properties: Properties,
}

impl Message {
    /// A QoS 0, non-retained message.
    pub fn new(topic: impl Into<ByteStr>, payload: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            ..Message::default()
        }
    }

    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    pub fn properties(mut self, properties: Properties) -> Self {
        self.properties = properties;
        self
    }

    pub(crate) fn from_publish(p: Publish) -> Self {
        Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            dup: p.dup,
            properties: p.properties,
        }
    }

    pub(crate) fn to_publish(&self, packet_id: u16) -> Publish {
        Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: self.topic.clone(),
            packet_id,
            properties: self.properties.clone(),
            payload: self.payload.clone(),
        }
    }
}

/// The outcome of a publish: PUBACK (QoS 1) or PUBCOMP (QoS 2) with a success code, or
/// `SUCCESS` as soon as a QoS 0 message is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishAck {
    /// 0x00 Success or 0x10 No matching subscribers (5.0; 3.1.1 always gives Success).
    pub reason_code: ReasonCode,
    pub properties: Properties,
}

/// One entry of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: ByteStr,
    pub options: SubscriptionOptions,
}

impl Subscription {
    pub fn new(filter: impl Into<ByteStr>, qos: QoS) -> Self {
        Subscription {
            filter: filter.into(),
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
        }
    }

    /// Do not receive our own publications (5.0).
    pub fn no_local(mut self, no_local: bool) -> Self {
        self.options.no_local = no_local;
        self
    }

    /// Keep the retain flag as published rather than clearing it (5.0).
    pub fn retain_as_published(mut self, rap: bool) -> Self {
        self.options.retain_as_published = rap;
        self
    }

    pub fn retain_handling(mut self, handling: RetainHandling) -> Self {
        self.options.retain_handling = handling;
        self
    }
}

/// SUBACK: one reason code per filter, in order (granted QoS 0..2, or a failure 0x80+).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeAck {
    pub reason_codes: Vec<ReasonCode>,
    pub properties: Properties,
}

/// UNSUBACK: one reason code per filter in 5.0; empty before 5.0 (the packet has none).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnsubscribeAck {
    pub reason_codes: Vec<ReasonCode>,
    pub properties: Properties,
}

/// What the server said in its last CONNACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionInfo {
    pub session_present: bool,
    /// CONNACK properties (5.0): assigned client identifier, server limits, ...
    pub properties: Properties,
    /// The client identifier in use: ours, or the one the server assigned.
    pub client_id: ByteStr,
}

impl ConnectionInfo {
    pub(crate) fn new(connack: &ConnAck, client_id: ByteStr) -> Self {
        ConnectionInfo {
            session_present: connack.session_present,
            properties: connack.properties.clone(),
            client_id,
        }
    }
}
