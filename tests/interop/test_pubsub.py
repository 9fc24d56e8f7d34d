"""PUBLISH / SUBSCRIBE / UNSUBSCRIBE: QoS flows, wildcards, ordering, malformed packets.

Showing that a message is NOT delivered: a marker message is published afterwards by the same
publisher at the same QoS and awaited; a broker forwards one publisher's messages to one
subscriber in order (per topic this is [MQTT-4.6.0-5] / [MQTT-4.6.0-6]; across topics both
Mosquitto and Midge route each connection's packets sequentially), so once the marker is in,
anything before it would have been too.
"""

import pytest

from conftest import (
    DISCONNECT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK, UNSUBACK, MQTTv311, MQTTv5,
    ack_packet, enc_str, packet, publish_packet, subscribe_packet, SUBSCRIBE, UNSUBSCRIBE,
    enc_props,
)

import struct


@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_delivered_qos_is_min_of_publish_and_granted_qos(broker, client_factory, version, pub_qos, sub_qos):
    """Messages are delivered at min(published QoS, granted QoS); SUBACK grants the requested
    QoS (the broker supports QoS 2).

    [MQTT-3.8.4-6] (3.1.1) / [MQTT-3.8.4-8] (5.0), [MQTT-3.9.3-1] (5.0), [MQTT-4.3.2-2],
    [MQTT-4.3.3-2] (QoS flows complete).
    """
    sub = client_factory(broker, "sub", version)
    assert sub.subscribe("qos/t", sub_qos) == [sub_qos]
    pub = client_factory(broker, "pub", version)
    pub.publish("qos/t", b"payload-%d" % pub_qos, qos=pub_qos)
    m = sub.expect()
    assert m.topic == "qos/t"
    assert m.payload == b"payload-%d" % pub_qos
    assert m.qos == min(pub_qos, sub_qos)
    assert m.retain is False


def test_suback_has_one_code_per_filter_in_order(broker, raw_factory, version):
    """SUBACK carries the SUBSCRIBE's Packet Identifier and one return code per filter, in order.

    [MQTT-3.8.4-1], [MQTT-3.8.4-2], [MQTT-3.8.4-4], [MQTT-3.8.4-5] (3.1.1); [MQTT-3.8.4-1],
    [MQTT-3.8.4-2], [MQTT-3.8.4-6], [MQTT-3.9.3-1] (5.0).
    """
    r = raw_factory(broker, v5=version == MQTTv5)
    r.connect("multi")
    r.send(subscribe_packet([("m/a", 2), ("m/b", 0), ("m/c", 1)], pid=4242, v5=version == MQTTv5))
    ack = r.expect(SUBACK)
    assert ack.fields["pid"] == 4242
    assert ack.fields["codes"] == [2, 0, 1]


def test_qos1_publish_gets_puback_with_same_packet_id(broker, raw_factory, version):
    """QoS 1 PUBLISH from a client is answered with PUBACK carrying its Packet Identifier.

    [MQTT-4.3.2-2] (3.1.1) / [MQTT-4.3.2-4] (5.0), [MQTT-2.3.1-6] (3.1.1) / [MQTT-2.2.1-5] (5.0).
    """
    r = raw_factory(broker, v5=version == MQTTv5)
    r.connect("q1raw")
    r.send(publish_packet("q1/raw", b"x", qos=1, pid=777, v5=version == MQTTv5))
    ack = r.expect(PUBACK)
    assert ack.fields["pid"] == 777


def test_qos2_inbound_flow_and_no_duplicate_onward_delivery(broker, raw_factory, client_factory, version):
    """QoS 2 from a client: PUBREC, then PUBREL -> PUBCOMP. A DUP re-send of the PUBLISH before
    PUBREL is PUBREC'd again but does not cause a duplicate delivery to subscribers.

    [MQTT-4.3.3-2] (3.1.1) / [MQTT-4.3.3-9], [MQTT-4.3.3-10] (5.0), [MQTT-3.6.1-1] (PUBREL flags).
    """
    sub = client_factory(broker, "q2sub", version)
    sub.subscribe("q2/#", 2)
    r = raw_factory(broker, v5=version == MQTTv5)
    r.connect("q2raw")
    is5 = version == MQTTv5
    r.send(publish_packet("q2/in", b"once", qos=2, pid=9, v5=is5))
    assert r.expect(PUBREC).fields["pid"] == 9
    r.send(publish_packet("q2/in", b"once", qos=2, pid=9, dup=True, v5=is5))
    assert r.expect(PUBREC).fields["pid"] == 9
    r.send(ack_packet(PUBREL, 9))
    assert r.expect(PUBCOMP).fields["pid"] == 9
    r.send(publish_packet("q2/marker", b"m", qos=2, pid=10, v5=is5))
    r.expect(PUBREC)
    r.send(ack_packet(PUBREL, 10))
    r.expect(PUBCOMP)
    got = sub.collect_until("q2/marker")
    assert [m.payload for m in got] == [b"once"]


def test_qos2_outbound_flow_to_raw_subscriber(broker, raw_factory, client_factory, version):
    """QoS 2 to a client: PUBLISH (non-zero Packet Identifier, DUP 0), client PUBREC, server
    PUBREL with flags 0010 and the same id, client PUBCOMP.

    [MQTT-2.3.1-1] (3.1.1) / [MQTT-2.2.1-4] (5.0), [MQTT-3.3.1-1] (DUP 0 on first attempt),
    [MQTT-3.6.1-1], [MQTT-4.3.3-1] (3.1.1) / [MQTT-4.3.3-3..5] (5.0).
    """
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("q2out")
    r.send(subscribe_packet([("q2out/t", 2)], pid=1, v5=is5))
    assert r.expect(SUBACK).fields["codes"] == [2]
    pub = client_factory(broker, "q2pub", version)
    pub.publish("q2out/t", b"exactly-once", qos=2)
    p = r.expect(PUBLISH)
    assert p.fields["qos"] == 2 and p.fields["pid"] != 0 and p.fields["dup"] is False
    assert p.fields["payload"] == b"exactly-once"
    r.send(ack_packet(PUBREC, p.fields["pid"]))
    rel = r.expect(PUBREL)
    assert rel.flags == 0x02 and rel.fields["pid"] == p.fields["pid"]
    r.send(ack_packet(PUBCOMP, p.fields["pid"]))


def test_qos1_outbound_publish_has_nonzero_packet_id(broker, raw_factory, client_factory, version):
    """QoS 1 to a client carries a non-zero Packet Identifier and DUP 0 on first delivery.

    [MQTT-2.3.1-1] (3.1.1) / [MQTT-2.2.1-4] (5.0), [MQTT-3.3.1-1].
    """
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("q1out")
    r.send(subscribe_packet([("q1out/t", 1)], pid=1, v5=is5))
    r.expect(SUBACK)
    pub = client_factory(broker, "q1pub", version)
    pub.publish("q1out/t", b"al", qos=1)
    p = r.expect(PUBLISH)
    assert p.fields["qos"] == 1 and p.fields["pid"] != 0 and p.fields["dup"] is False
    r.send(ack_packet(PUBACK, p.fields["pid"]))


WILDCARD_CASES = [
    # (filter, topic, matches) -- examples from MQTT 3.1.1 / 5.0 section 4.7
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "any/topic/at/all", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+/tennis/#", "sport/tennis/x/y", True),
    ("a/+/c", "a/b/d", False),
    ("a/b", "a/B", False),  # topics are case sensitive [MQTT-4.7.3-?] section 4.7.3
    ("a/b", "/a/b", False),
]


@pytest.mark.parametrize("flt,topic,matches", WILDCARD_CASES,
                         ids=[f"{f}~{t}" for f, t, _ in WILDCARD_CASES])
def test_topic_filter_matching(broker, client_factory, flt, topic, matches):
    """Wildcard matching of '+' and '#' as in the examples of section 4.7.1.

    [MQTT-4.7.1-1], [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-3.3.2-3] (topic delivered unchanged).
    """
    sub = client_factory(broker, "wsub", MQTTv311)
    sub.subscribe(flt, 1)
    sub.subscribe("zz-marker", 1)
    pub = client_factory(broker, "wpub", MQTTv311)
    pub.publish(topic, b"data", qos=1)
    pub.publish("zz-marker", b"m", qos=1)
    got = [(m.topic, m.payload) for m in sub.collect_until("zz-marker")]
    assert got == ([(topic, b"data")] if matches else [])


def test_dollar_topics_not_matched_by_leading_wildcards(broker_factory, client_factory, version):
    """'#' and '+/...' match neither retained nor periodic $SYS topics; '$SYS/#' does.

    [MQTT-4.7.2-1].
    """
    b = broker_factory(["sys_interval 1"])
    wild = client_factory(b, "wild", version)
    wild.subscribe("#", 0)
    wild.subscribe("+/broker/#", 0)
    sys_sub = client_factory(b, "syssub", version)
    sys_sub.subscribe("$SYS/#", 0)
    # Wait for a periodic (non-retained) $SYS publication: it was routed after '#' existed.
    while True:
        m = sys_sub.expect(timeout=6)
        assert m.topic.startswith("$SYS/")
        if not m.retain:
            break
    wild.publish("marker/after-sys", b"m", qos=0)
    got = wild.collect_until("marker/after-sys")
    assert [x.topic for x in got if x.topic.startswith("$")] == []


def test_overlapping_subscriptions_deliver_at_max_granted_qos(broker, client_factory, version):
    """With overlapping subscriptions the message reaches the client at the maximum QoS of the
    matching subscriptions (Mosquitto sends one copy per subscription, Midge one copy; both
    satisfy this).

    [MQTT-3.3.5-1] (3.1.1), [MQTT-3.3.4-2] (5.0).
    """
    sub = client_factory(broker, "ovsub", version)
    sub.subscribe("ov/#", 0)
    sub.subscribe("ov/+", 2)
    sub.subscribe("ovm", 2)  # marker subscription (non-overlapping)
    pub = client_factory(broker, "ovpub", version)
    pub.publish("ov/x", b"data", qos=2)
    pub.publish("ovm", b"m", qos=2)
    got = sub.collect_until("ovm")
    assert got, "no copy delivered"
    assert all(m.payload == b"data" for m in got)
    assert max(m.qos for m in got) == 2


@pytest.mark.midge_only(reason="Mosquitto delivers one copy per matching subscription")
def test_overlapping_subscriptions_deliver_exactly_one_copy(broker, client_factory, version):
    """Midge delivers ONE copy of a message matching several of a client's subscriptions, at the
    highest granted QoS. [MQTT-3.3.5-1] (3.1.1), [MQTT-3.3.4-2] (5.0)."""
    sub = client_factory(broker, "ov1sub", version)
    sub.subscribe("ov1/#", 1)
    sub.subscribe("ov1/+", 2)
    sub.subscribe("ov1/x", 0)
    sub.subscribe("ov1m", 2)
    pub = client_factory(broker, "ov1pub", version)
    pub.publish("ov1/x", b"data", qos=2)
    pub.publish("ov1m", b"m", qos=2)
    got = sub.collect_until("ov1m")
    assert [(m.payload, m.qos) for m in got] == [(b"data", 2)]


def test_resubscribe_replaces_subscription(broker, client_factory, version):
    """Subscribing again to an identical filter replaces the subscription (new QoS, one copy).

    [MQTT-3.8.4-3].
    """
    sub = client_factory(broker, "resub", version)
    sub.subscribe("rs/t", 0)
    assert sub.subscribe("rs/t", 2) == [2]
    sub.subscribe("rsm", 2)
    pub = client_factory(broker, "rspub", version)
    pub.publish("rs/t", b"d", qos=2)
    pub.publish("rsm", b"m", qos=2)
    got = sub.collect_until("rsm")
    assert [(m.payload, m.qos) for m in got] == [(b"d", 2)]


def test_unsubscribe_stops_delivery(broker, client_factory, version):
    """After UNSUBACK no new messages are delivered for that filter; the other subscription
    keeps working. [MQTT-3.10.4-1], [MQTT-3.10.4-2], [MQTT-3.10.4-4]."""
    sub = client_factory(broker, "unsub", version)
    sub.subscribe("us/a", 1)
    sub.subscribe("us/b", 1)
    pub = client_factory(broker, "uspub", version)
    pub.publish("us/a", b"before", qos=1)
    assert sub.expect().payload == b"before"
    codes = sub.unsubscribe("us/a")
    if version == MQTTv5:
        assert codes == [0]
    pub.publish("us/a", b"after", qos=1)
    pub.publish("us/b", b"marker", qos=1)
    assert [m.payload for m in sub.collect_until("us/b")] == []


def test_unsubscribe_matches_filter_exactly_not_by_wildcard(broker, client_factory, version):
    """UNSUBSCRIBE compares filters character by character: unsubscribing 'uw/+' does not remove
    the 'uw/x' subscription. [MQTT-3.10.4-1]"""
    sub = client_factory(broker, "unsubw", version)
    sub.subscribe("uw/x", 1)
    sub.unsubscribe("uw/+")
    pub = client_factory(broker, "uwpub", version)
    pub.publish("uw/x", b"still", qos=1)
    assert sub.expect().payload == b"still"


def test_unsubscribe_unknown_filter_still_gets_unsuback(broker, raw_factory, version):
    """UNSUBACK is sent (same Packet Identifier) even if no subscription matched; 5.0 gives
    Reason Code 0x11 (No subscription existed) or 0x00.

    [MQTT-3.10.4-4], [MQTT-3.10.4-5]; 5.0 §3.11.3.
    """
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("unsub-none")
    body = struct.pack("!H", 321) + (enc_props([]) if is5 else b"") + enc_str("never/subscribed")
    r.send(packet(UNSUBSCRIBE, 0x02, body))
    ack = r.expect(UNSUBACK)
    assert ack.fields["pid"] == 321
    if is5:
        assert ack.body[-1] in (0x00, 0x11)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_message_order_preserved_per_topic(broker, client_factory, version, qos):
    """Messages from one publisher on one topic arrive in publish order.

    [MQTT-4.6.0-5] (3.1.1), [MQTT-4.6.0-6] (5.0).
    """
    sub = client_factory(broker, "ordsub", version)
    sub.subscribe("ord/t", qos)
    pub = client_factory(broker, "ordpub", version)
    n = 40
    infos = [pub.publish("ord/t", b"%03d" % i, qos=qos, wait=False) for i in range(n)]
    for i in infos:
        i.wait_for_publish(5)
    got = [m.payload for m in sub.expect_n(n)]
    assert got == [b"%03d" % i for i in range(n)]


def test_fan_out_to_many_subscribers(broker, client_factory, version):
    """Every subscriber with a matching subscription receives the message. [MQTT-3.3.2-3]"""
    subs = [client_factory(broker, f"fan{i}", version) for i in range(5)]
    for s in subs:
        s.subscribe("fan/t", 1)
    pub = client_factory(broker, "fanpub", version)
    pub.publish("fan/t", b"all", qos=1)
    for s in subs:
        assert s.expect().payload == b"all"


def test_binary_and_empty_payloads_are_delivered_unchanged(broker, client_factory, version):
    """Payloads are opaque bytes: all 256 byte values and the empty payload arrive unchanged.
    Section 3.3.3 (payload)."""
    sub = client_factory(broker, "binsub", version)
    sub.subscribe("bin/#", 1)
    pub = client_factory(broker, "binpub", version)
    blob = bytes(range(256)) * 4
    pub.publish("bin/blob", blob, qos=1)
    pub.publish("bin/empty", b"", qos=1)
    assert sub.expect().payload == blob
    m = sub.expect()
    assert m.topic == "bin/empty" and m.payload == b""


def test_large_payload_is_delivered(broker, client_factory, version):
    """A 300 kB payload (multi-byte Remaining Length) is delivered intact. Section 2.2.3."""
    sub = client_factory(broker, "bigsub", version)
    sub.subscribe("big", 1)
    pub = client_factory(broker, "bigpub", version)
    blob = bytes((i * 7) % 251 for i in range(300_000))
    pub.publish("big", blob, qos=1)
    assert sub.expect().payload == blob


def test_utf8_topic_names_delivered_unchanged(broker, client_factory, version):
    """UTF-8 topic names (non-ASCII, spaces) are matched and delivered unchanged.
    [MQTT-1.5.3-1] (3.1.1) / [MQTT-1.5.4-1] (5.0), [MQTT-4.7.3-4] (no normalisation)."""
    sub = client_factory(broker, "utfsub", version)
    topic = "caf\u00e9/\u6e29\u5ea6/with space"
    sub.subscribe("caf\u00e9/+/with space", 1)
    pub = client_factory(broker, "utfpub", version)
    pub.publish(topic, b"t", qos=1)
    assert sub.expect().topic == topic


def test_client_receives_its_own_publication_by_default(broker, client_factory, version):
    """Without No Local a client that publishes to a topic it subscribes to receives the message.
    Section 3.8.3.1 (No Local defaults to 0)."""
    c = client_factory(broker, "selfie", version)
    c.subscribe("self/t", 1)
    c.publish("self/t", b"me", qos=1)
    assert c.expect().payload == b"me"


@pytest.mark.parametrize("topic", ["bad/#", "bad/+/x", "+"])
def test_publish_topic_with_wildcard_closes_connection(broker, raw_factory, client_factory, version, topic):
    """A PUBLISH Topic Name containing wildcard characters is a protocol violation: the
    connection is closed and the message not delivered. [MQTT-3.3.2-2]"""
    sub = client_factory(broker, "wcsub", version)
    sub.subscribe("#", 0)
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("wcpub")
    r.send(publish_packet(topic, b"nope", v5=is5))
    got = r.wait_closed()
    assert all(p.type == DISCONNECT for p in got), got
    sub.publish("after", b"m")
    assert [m.topic for m in sub.collect_until("after")] == []


@pytest.mark.parametrize("flt", ["a/#/b", "a/b#", "a+/b"])
def test_subscribe_invalid_filter_is_refused(broker, raw_factory, version, flt):
    """An invalid Topic Filter ('#' not last / not alone, '+' not alone in a level) is not
    granted: the connection is closed (3.1.1, or 5.0 DISCONNECT) or SUBACK carries a failure code
    (0x80 / 0x8F). [MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.8.0-1] (3.1.1)."""
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("badflt")
    r.send(subscribe_packet([(flt, 0)], pid=3, v5=is5))
    first = r.next_or_closed()
    assert first is None or first.type == DISCONNECT or (
        first.type == SUBACK and first.fields["codes"][0] >= 0x80), first


def test_subscribe_with_wrong_fixed_header_flags_closes_connection(broker, raw_factory, version):
    """SUBSCRIBE fixed-header bits 3..0 must be 0010, otherwise the connection is closed.
    [MQTT-3.8.1-1]"""
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("subflags")
    r.send(subscribe_packet([("sf/t", 0)], v5=is5, flags=0x00))
    got = r.wait_closed()
    assert all(p.type != SUBACK for p in got), got


def test_subscribe_with_qos_3_closes_connection(broker, raw_factory, version):
    """A Requested QoS of 3 in SUBSCRIBE is malformed: the connection is closed.
    [MQTT-3.8.3-4] (3.1.1), [MQTT-3-8.3-5] (5.0)."""
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("subq3")
    r.send(subscribe_packet([("sq/t", 3)], v5=is5))
    got = r.wait_closed()
    assert all(p.type != SUBACK for p in got), got


def test_subscribe_without_topic_filters_closes_connection(broker, raw_factory, version):
    """A SUBSCRIBE with no Topic Filter is a protocol violation. [MQTT-3.8.3-3] (3.1.1),
    [MQTT-3.8.3-2] (5.0)."""
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("subnone")
    r.send(subscribe_packet([], v5=is5))
    got = r.wait_closed()
    assert all(p.type != SUBACK for p in got), got


def test_publish_qos3_closes_connection(broker, raw_factory, version):
    """A PUBLISH with both QoS bits set (QoS 3) is malformed: the connection is closed.
    [MQTT-3.3.1-4]"""
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    r.connect("pubq3")
    r.send(publish_packet("pq/t", b"x", qos=3, v5=is5))
    got = r.wait_closed()
    assert all(p.type == DISCONNECT for p in got), got
