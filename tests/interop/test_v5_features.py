"""MQTT 5.0 features: message expiry, topic aliases, subscription identifiers, request/response,
user properties, payload format / content type, No Local, cross-version interop."""

import time

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from conftest import (
    DISCONNECT, P_CONTENT_TYPE, P_MESSAGE_EXPIRY, P_PAYLOAD_FORMAT, P_SESSION_EXPIRY,
    P_SUBSCRIPTION_ID, P_TOPIC_ALIAS, P_TOPIC_ALIAS_MAXIMUM, PUBACK, PUBLISH, SUBACK, MQTTv311,
    MQTTv5, ack_packet, connect_props, pub_props, publish_packet, sub_props, subscribe_packet,
)


def _persistent5(client_factory, broker, cid, connect=True):
    return client_factory(broker, cid, MQTTv5, clean=False, connect=connect,
                          properties=connect_props(SessionExpiryInterval=300))


# --------------------------------------------------------------------------- message expiry


def test_v5_expired_queued_message_is_dropped(broker, client_factory):
    """A message queued for an offline session whose Message Expiry Interval passes is not
    delivered; an unexpiring one queued after it is. [MQTT-3.3.2-5]"""
    c = _persistent5(client_factory, broker, "mexp")
    c.subscribe("mexp/t", 1)
    c.disconnect()
    pub = client_factory(broker, "mexppub", MQTTv5)
    pub.publish("mexp/t", b"short-lived", qos=1, properties=pub_props(MessageExpiryInterval=1))
    pub.publish("mexp/t", b"durable", qos=1)
    time.sleep(2.2)  # expiry is a timer: nothing observable marks it, wait past it (bounded)
    c2 = _persistent5(client_factory, broker, "mexp", connect=False)
    assert c2.connect().session_present is True
    assert [m.payload for m in c2.collect_until_payload(b"durable")] == []


def test_v5_forwarded_message_expiry_is_reduced_by_time_waited(broker, client_factory):
    """A queued message is forwarded with Message Expiry Interval = received value minus the
    time it waited. [MQTT-3.3.2-6]"""
    c = _persistent5(client_factory, broker, "mexp2")
    c.subscribe("mexp2/t", 1)
    c.disconnect()
    pub = client_factory(broker, "mexp2pub", MQTTv5)
    pub.publish("mexp2/t", b"aging", qos=1, properties=pub_props(MessageExpiryInterval=30))
    time.sleep(2.1)  # the property must shrink by the time spent queued: let time pass (bounded)
    c2 = _persistent5(client_factory, broker, "mexp2", connect=False)
    c2.connect()
    m = c2.expect()
    assert m.payload == b"aging"
    assert 1 <= m.properties.MessageExpiryInterval <= 28


def test_v5_live_message_expiry_is_forwarded(broker, client_factory):
    """A message forwarded at once carries its Message Expiry Interval (not larger); one
    without it has none. [MQTT-3.3.2-6]"""
    sub = client_factory(broker, "mexp3", MQTTv5)
    sub.subscribe("mexp3/t", 1)
    pub = client_factory(broker, "mexp3pub", MQTTv5)
    pub.publish("mexp3/t", b"a", qos=1, properties=pub_props(MessageExpiryInterval=60))
    pub.publish("mexp3/t", b"b", qos=1)
    a, b = sub.expect_n(2)
    assert 59 <= a.properties.MessageExpiryInterval <= 60
    assert getattr(b.properties, "MessageExpiryInterval", None) is None


def test_v5_expired_retained_message_not_sent_to_new_subscriber(broker, client_factory):
    """A retained message whose Message Expiry Interval has passed is no longer sent.
    [MQTT-3.3.2-5]"""
    pub = client_factory(broker, "rexppub", MQTTv5)
    pub.publish("rexp/t", b"stale", qos=1, retain=True, properties=pub_props(MessageExpiryInterval=1))
    time.sleep(2.2)  # expiry is a timer: nothing observable marks it, wait past it (bounded)
    sub = client_factory(broker, "rexpsub", MQTTv5)
    sub.subscribe("rexp/marker", 1)
    sub.subscribe("rexp/t", 1)
    sub.publish("rexp/marker", b"m", qos=1)
    assert sub.collect_until("rexp/marker") == []


def test_v5_retained_message_expiry_is_reduced(broker, client_factory):
    """A retained message is sent with its remaining expiry. [MQTT-3.3.2-6]"""
    pub = client_factory(broker, "rexp2pub", MQTTv5)
    pub.publish("rexp2/t", b"r", qos=1, retain=True, properties=pub_props(MessageExpiryInterval=30))
    time.sleep(2.1)  # the property must shrink by the time spent stored: let time pass (bounded)
    sub = client_factory(broker, "rexp2sub", MQTTv5)
    sub.subscribe("rexp2/t", 1)
    m = sub.expect()
    assert m.retain and 1 <= m.properties.MessageExpiryInterval <= 28


# --------------------------------------------------------------------------- topic aliases


def test_v5_connack_advertises_topic_alias_maximum(broker_factory, raw_factory):
    """The CONNACK Topic Alias Maximum follows max_topic_alias. §3.2.2.3.8"""
    b = broker_factory(["max_topic_alias 5"])
    r = raw_factory(b, v5=True)
    assert r.connect("tam").fields["props"].get(P_TOPIC_ALIAS_MAXIMUM) == 5


def test_v5_topic_alias_from_client_is_resolved(broker, raw_factory, client_factory):
    """A client sets alias 1 with a topic, then publishes with an empty topic and alias 1; the
    subscriber gets the full topic (aliases are per connection and never forwarded).
    [MQTT-3.3.2-12], §3.3.2.3.4."""
    sub = client_factory(broker, "tasub", MQTTv5)
    sub.subscribe("alias/#", 1)
    r = raw_factory(broker, v5=True)
    r.connect("tapub")
    r.send(publish_packet("alias/long/topic", b"first", qos=1, pid=1, v5=True, props=[(P_TOPIC_ALIAS, 1)]))
    r.expect(PUBACK)
    r.send(publish_packet("", b"second", qos=1, pid=2, v5=True, props=[(P_TOPIC_ALIAS, 1)]))
    r.expect(PUBACK)
    for payload in (b"first", b"second"):
        m = sub.expect()
        assert (m.topic, m.payload) == ("alias/long/topic", payload)
        assert getattr(m.properties, "TopicAlias", None) is None


def test_v5_topic_alias_can_be_remapped(broker, raw_factory, client_factory):
    """Sending a topic with an existing alias replaces the mapping. §3.3.2.3.4"""
    sub = client_factory(broker, "tasub", MQTTv5)
    sub.subscribe("alias/#", 1)
    r = raw_factory(broker, v5=True)
    r.connect("tapub")
    r.send(publish_packet("alias/a", b"1", qos=1, pid=1, v5=True, props=[(P_TOPIC_ALIAS, 2)]))
    r.send(publish_packet("alias/b", b"2", qos=1, pid=2, v5=True, props=[(P_TOPIC_ALIAS, 2)]))
    r.send(publish_packet("", b"3", qos=1, pid=3, v5=True, props=[(P_TOPIC_ALIAS, 2)]))
    got = [(m.topic, m.payload) for m in sub.expect_n(3)]
    assert got == [("alias/a", b"1"), ("alias/b", b"2"), ("alias/b", b"3")]


def test_v5_topic_alias_mapping_not_kept_across_connections(broker, raw_factory):
    """Topic Alias mappings last for one connection: using an alias set on a previous connection
    is a Protocol Error (DISCONNECT 0x82). [MQTT-3.3.2-7], §3.3.2.3.4."""
    r = raw_factory(broker, v5=True)
    r.connect("tacross")
    r.send(publish_packet("alias/x", b"1", qos=1, pid=1, v5=True, props=[(P_TOPIC_ALIAS, 1)]))
    r.expect(PUBACK)
    r.close()
    r2 = raw_factory(broker, v5=True)
    r2.connect("tacross")
    r2.send(publish_packet("", b"2", qos=1, pid=2, v5=True, props=[(P_TOPIC_ALIAS, 1)]))
    got = r2.wait_closed()
    assert got and got[-1].type == DISCONNECT and got[-1].fields["rc"] == 0x82, got


def test_v5_topic_alias_above_maximum_disconnects_0x94(broker, raw_factory):
    """A Topic Alias greater than the server's Topic Alias Maximum gets DISCONNECT 0x94 (Topic
    Alias invalid). [MQTT-3.3.2-9], §3.3.2.3.4."""
    r = raw_factory(broker, v5=True)
    tam = r.connect("tabig").fields["props"].get(P_TOPIC_ALIAS_MAXIMUM, 0)
    r.send(publish_packet("alias/x", b"1", qos=1, v5=True, props=[(P_TOPIC_ALIAS, tam + 1)]))
    got = r.wait_closed()
    assert got and got[-1].type == DISCONNECT and got[-1].fields["rc"] == 0x94, got


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 answers alias 0 with DISCONNECT 0x81 (Malformed Packet)")
def test_v5_topic_alias_zero_disconnects_0x94(broker, raw_factory):
    """Topic Alias 0 is not permitted: DISCONNECT 0x94 (Topic Alias invalid).
    [MQTT-3.3.2-8], §3.3.2.3.4."""
    r = raw_factory(broker, v5=True)
    r.connect("tazero")
    r.send(publish_packet("alias/x", b"1", qos=1, v5=True, props=[(P_TOPIC_ALIAS, 0)]))
    got = r.wait_closed()
    assert got and got[-1].type == DISCONNECT and got[-1].fields["rc"] == 0x94, got


def test_v5_no_outgoing_topic_alias_without_client_topic_alias_maximum(broker, raw_factory, client_factory):
    """A client that sent no Topic Alias Maximum never receives a Topic Alias.
    [MQTT-3.1.2-27]"""
    r = raw_factory(broker, v5=True)
    r.connect("noalias")
    r.send(subscribe_packet([("oa/t", 0)], v5=True))
    r.expect(SUBACK)
    pub = client_factory(broker, "oapub", MQTTv5)
    for i in range(3):
        pub.publish("oa/t", b"%d" % i)
    for _ in range(3):
        p = r.expect(PUBLISH)
        assert p.fields["topic"] == "oa/t" and P_TOPIC_ALIAS not in p.fields["props"]


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 never assigns outgoing topic aliases")
def test_v5_broker_assigns_outgoing_topic_aliases(broker, raw_factory, client_factory):
    """Midge assigns Topic Aliases on messages to a client that accepts them: the first PUBLISH
    carries topic + alias (<= the client's maximum), later ones the alias with an empty topic.
    [MQTT-3.1.2-26], [MQTT-3.3.2-11], [MQTT-3.3.2-10] (client side)."""
    r = raw_factory(broker, v5=True)
    r.connect("wantalias", props=[(P_TOPIC_ALIAS_MAXIMUM, 3)])
    r.send(subscribe_packet([("oa/long/topic/name", 0)], v5=True))
    r.expect(SUBACK)
    pub = client_factory(broker, "oapub", MQTTv5)
    for i in range(3):
        pub.publish("oa/long/topic/name", b"%d" % i)
    first = r.expect(PUBLISH)
    alias = first.fields["props"].get(P_TOPIC_ALIAS)
    assert first.fields["topic"] == "oa/long/topic/name"
    assert alias is not None and 1 <= alias <= 3
    for _ in range(2):
        p = r.expect(PUBLISH)
        assert p.fields["props"].get(P_TOPIC_ALIAS) == alias
        assert p.fields["topic"] in ("", "oa/long/topic/name")
    assert p.fields["topic"] == ""


# --------------------------------------------------------------------------- subscription ids


def test_v5_subscription_identifier_returned_on_delivery(broker, client_factory):
    """A message delivered because of a subscription with a Subscription Identifier carries it;
    one from a subscription without an identifier carries none. [MQTT-3.3.4-3]"""
    sub = client_factory(broker, "sid", MQTTv5)
    sub.subscribe("sid/a", 1, properties=sub_props(SubscriptionIdentifier=42))
    sub.subscribe("sid/b", 1)
    pub = client_factory(broker, "sidpub", MQTTv5)
    pub.publish("sid/a", b"a", qos=1)
    pub.publish("sid/b", b"b", qos=1)
    a, b = sub.expect_n(2)
    assert a.properties.SubscriptionIdentifier == [42]
    assert getattr(b.properties, "SubscriptionIdentifier", None) in (None, [])


def test_v5_subscription_identifier_replaced_on_resubscribe(broker, client_factory):
    """Re-subscribing with a new Subscription Identifier replaces the old one. §3.8.2.1.2"""
    sub = client_factory(broker, "sid2", MQTTv5)
    sub.subscribe("sid2/t", 1, properties=sub_props(SubscriptionIdentifier=1))
    sub.subscribe("sid2/t", 1, properties=sub_props(SubscriptionIdentifier=268435455))
    pub = client_factory(broker, "sid2pub", MQTTv5)
    pub.publish("sid2/t", b"x", qos=1)
    assert sub.expect().properties.SubscriptionIdentifier == [268435455]


def test_v5_overlapping_subscription_identifiers_all_reported(broker, client_factory):
    """With overlapping subscriptions, every matching subscription's identifier reaches the
    client: in one PUBLISH (Midge) or one per copy (Mosquitto). [MQTT-3.3.4-4], [MQTT-3.3.4-5]"""
    sub = client_factory(broker, "sid3", MQTTv5)
    sub.subscribe("sid3/#", 1, properties=sub_props(SubscriptionIdentifier=7))
    sub.subscribe("sid3/+", 1, properties=sub_props(SubscriptionIdentifier=8))
    sub.subscribe("sid3m", 1)
    pub = client_factory(broker, "sid3pub", MQTTv5)
    pub.publish("sid3/x", b"x", qos=1)
    pub.publish("sid3m", b"m", qos=1)
    got = sub.collect_until("sid3m")
    ids = sorted(i for m in got for i in m.properties.SubscriptionIdentifier)
    assert ids == [7, 8]


@pytest.mark.midge_only(reason="Mosquitto sends one copy per subscription")
def test_v5_single_copy_carries_all_subscription_identifiers(broker, client_factory):
    """Midge sends one copy for overlapping subscriptions, carrying all their identifiers.
    [MQTT-3.3.4-4]"""
    sub = client_factory(broker, "sid4", MQTTv5)
    sub.subscribe("sid4/#", 1, properties=sub_props(SubscriptionIdentifier=7))
    sub.subscribe("sid4/+", 1, properties=sub_props(SubscriptionIdentifier=8))
    sub.subscribe("sid4m", 1)
    pub = client_factory(broker, "sid4pub", MQTTv5)
    pub.publish("sid4/x", b"x", qos=1)
    pub.publish("sid4m", b"m", qos=1)
    got = sub.collect_until("sid4m")
    assert len(got) == 1
    assert sorted(got[0].properties.SubscriptionIdentifier) == [7, 8]


def test_v5_subscription_identifier_on_retained_delivery(broker, client_factory):
    """Retained messages sent on subscribe carry the new subscription's identifier.
    [MQTT-3.3.4-3]"""
    pub = client_factory(broker, "sid5pub", MQTTv5)
    pub.publish("sid5/t", b"r", qos=1, retain=True)
    sub = client_factory(broker, "sid5", MQTTv5)
    sub.subscribe("sid5/t", 1, properties=sub_props(SubscriptionIdentifier=99))
    m = sub.expect()
    assert m.retain and m.properties.SubscriptionIdentifier == [99]


# --------------------------------------------------------------------------- pass-through


def test_v5_request_response_properties_passed_through(broker, client_factory):
    """Response Topic and Correlation Data reach the subscriber unaltered, and the responder can
    answer on the response topic. [MQTT-3.3.2-15], [MQTT-3.3.2-16], §4.10."""
    requester = client_factory(broker, "req", MQTTv5)
    requester.subscribe("rr/responses/req", 1)
    responder = client_factory(broker, "resp", MQTTv5)
    responder.subscribe("rr/requests", 1)
    corr = bytes(range(20))
    requester.publish("rr/requests", b"question", qos=1,
                      properties=pub_props(ResponseTopic="rr/responses/req", CorrelationData=corr))
    q = responder.expect()
    assert q.properties.ResponseTopic == "rr/responses/req"
    assert q.properties.CorrelationData == corr
    responder.publish(q.properties.ResponseTopic, b"answer", qos=1,
                      properties=pub_props(CorrelationData=q.properties.CorrelationData))
    a = requester.expect()
    assert (a.payload, a.properties.CorrelationData) == (b"answer", corr)


def test_v5_user_properties_passed_through_in_order(broker, client_factory):
    """All User Properties are forwarded unaltered and in order, duplicates included.
    [MQTT-3.3.2-17], [MQTT-3.3.2-18]"""
    sub = client_factory(broker, "up", MQTTv5)
    sub.subscribe("up/t", 1)
    pub = client_factory(broker, "uppub", MQTTv5)
    ups = [("z", "1"), ("a", "2"), ("z", "3"), ("key with space", "\u00fcml\u00e4ut"), ("a", "")]
    pub.publish("up/t", b"x", qos=1, properties=pub_props(UserProperty=ups))
    assert sub.expect().properties.UserProperty == ups


def test_v5_payload_format_and_content_type_passed_through(broker, client_factory):
    """Payload Format Indicator and Content Type are forwarded unaltered.
    [MQTT-3.3.2-4], [MQTT-3.3.2-20]"""
    sub = client_factory(broker, "pf", MQTTv5)
    sub.subscribe("pf/#", 2)
    pub = client_factory(broker, "pfpub", MQTTv5)
    pub.publish("pf/utf8", "h\u00e9llo".encode(), qos=2,
                properties=pub_props(PayloadFormatIndicator=1, ContentType="text/plain; charset=utf-8"))
    pub.publish("pf/bin", b"\xff\xfe", qos=2,
                properties=pub_props(PayloadFormatIndicator=0, ContentType="application/octet-stream"))
    a, b = sub.expect_n(2)
    assert a.properties.PayloadFormatIndicator == 1
    assert a.properties.ContentType == "text/plain; charset=utf-8"
    assert getattr(b.properties, "PayloadFormatIndicator", 0) == 0
    assert b.properties.ContentType == "application/octet-stream"


def test_v5_properties_on_retained_message_are_kept(broker, client_factory):
    """A retained message keeps its properties when sent to a later subscriber.
    [MQTT-3.3.2-17], [MQTT-3.3.2-20], [MQTT-3.3.2-15]"""
    pub = client_factory(broker, "rppub", MQTTv5)
    pub.publish("rp/t", b"r", qos=1, retain=True, properties=pub_props(
        ContentType="x/y", ResponseTopic="rp/resp", UserProperty=[("k", "v")]))
    sub = client_factory(broker, "rpsub", MQTTv5)
    sub.subscribe("rp/t", 1)
    p = sub.expect().properties
    assert (p.ContentType, p.ResponseTopic, p.UserProperty) == ("x/y", "rp/resp", [("k", "v")])


def test_v5_publish_to_v311_subscriber_and_back(broker, client_factory):
    """Cross-version interop: a 5.0 publication with properties reaches a 3.1.1 subscriber (no
    properties, payload intact) and a 3.1.1 publication reaches a 5.0 subscriber."""
    old = client_factory(broker, "old", MQTTv311)
    old.subscribe("xv/to-old", 1)
    new = client_factory(broker, "new", MQTTv5)
    new.subscribe("xv/to-new", 1)
    new.publish("xv/to-old", b"hi-old", qos=1, properties=pub_props(UserProperty=[("a", "b")],
                                                                    ContentType="t/p"))
    old.publish("xv/to-new", b"hi-new", qos=1)
    m = old.expect()
    assert (m.topic, m.payload, m.qos) == ("xv/to-old", b"hi-old", 1)
    m = new.expect()
    assert (m.topic, m.payload, m.qos) == ("xv/to-new", b"hi-new", 1)


def test_v5_puback_reason_for_no_matching_subscribers(broker, raw_factory):
    """A QoS 1 PUBLISH nobody subscribes to is acknowledged with 0x00 or 0x10 (No matching
    subscribers). §3.4.2.1"""
    r = raw_factory(broker, v5=True)
    r.connect("nomatch")
    r.send(publish_packet("nobody/here", b"x", qos=1, pid=5, v5=True))
    ack = r.expect(PUBACK)
    assert ack.fields["pid"] == 5 and ack.fields.get("rc", 0) in (0x00, 0x10)


# --------------------------------------------------------------------------- No Local


def test_v5_no_local_suppresses_own_messages(broker, client_factory):
    """No Local 1: the client's own publications are not sent back to it, others' are.
    [MQTT-3.8.3-3]"""
    c = client_factory(broker, "nl", MQTTv5)
    c.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=True))
    c.publish("nl/t", b"mine", qos=1)
    other = client_factory(broker, "nlother", MQTTv5)
    other.publish("nl/t", b"theirs", qos=1)
    assert c.expect().payload == b"theirs"


def test_v5_no_local_is_per_subscription(broker, client_factory):
    """No Local applies only to the subscription that set it: an overlapping subscription
    without it still delivers the client's own message. [MQTT-3.8.3-3]"""
    c = client_factory(broker, "nl2", MQTTv5)
    c.subscribe("nl2/t", options=SubscribeOptions(qos=1, noLocal=True))
    c.subscribe("nl2/#", options=SubscribeOptions(qos=1, noLocal=False))
    c.subscribe("nl2m", 1)
    c.publish("nl2/t", b"mine", qos=1)
    c.publish("nl2m", b"m", qos=1)
    assert [m.payload for m in c.collect_until("nl2m")] == [b"mine"]


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 grants a shared subscription with No Local 1")
def test_v5_no_local_on_shared_subscription_is_protocol_error(broker, raw_factory):
    """No Local 1 on a Shared Subscription is a Protocol Error: the server closes the
    connection (DISCONNECT 0x82 if it sends one). [MQTT-3.8.3-4]"""
    r = raw_factory(broker, v5=True)
    r.connect("nlshare")
    r.send(subscribe_packet([("$share/g/nl/t", 0x05)], v5=True))  # QoS 1 + No Local
    got = r.wait_closed()
    assert all(p.type == DISCONNECT and p.fields["rc"] == 0x82 for p in got), got
