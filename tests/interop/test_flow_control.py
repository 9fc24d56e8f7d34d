"""Flow control and limits: Receive Maximum / max_inflight_messages, Maximum Packet Size /
max_packet_size, message_size_limit, Maximum QoS / max_qos."""

import pytest

from conftest import (
    CONNACK, DISCONNECT, P_MAXIMUM_PACKET_SIZE, P_MAXIMUM_QOS, P_RECEIVE_MAXIMUM, PUBACK, PUBLISH,
    PUBREC, SUBACK, QUIET, MQTTv311, MQTTv5, ack_packet, connect_packet, publish_packet,
    subscribe_packet,
)


def _raw_subscriber(broker, raw_factory, version, cid, topics, props=None):
    is5 = version == MQTTv5
    r = raw_factory(broker, v5=is5)
    assert r.connect(cid, props=props).fields["rc"] == 0
    r.send(subscribe_packet(topics, v5=is5))
    r.expect(SUBACK)
    return r


# --------------------------------------------------------------------------- in-flight window


def test_v5_connack_receive_maximum_follows_max_inflight_messages(broker_factory, raw_factory):
    """The CONNACK Receive Maximum is the server's in-flight limit (max_inflight_messages).
    §3.2.2.3.3"""
    b = broker_factory(["max_inflight_messages 2"])
    r = raw_factory(b, v5=True)
    assert r.connect("rm").fields["props"].get(P_RECEIVE_MAXIMUM) == 2


def test_server_respects_client_receive_maximum(broker, raw_factory, client_factory):
    """5.0: with the client's Receive Maximum 1 the server has at most one unacknowledged QoS 1
    PUBLISH outstanding; the next follows the PUBACK. [MQTT-3.3.4-9]"""
    r = _raw_subscriber(broker, raw_factory, MQTTv5, "rm1", [("rm/t", 1)], props=[(P_RECEIVE_MAXIMUM, 1)])
    pub = client_factory(broker, "rmpub", MQTTv5)
    for i in range(3):
        pub.publish("rm/t", b"%d" % i, qos=1)
    first = r.expect(PUBLISH)
    assert first.fields["payload"] == b"0"
    # Proving that the second PUBLISH is being held needs the absence of a packet: nothing the
    # server does can mark "I am holding it", so wait a bounded short time.
    assert r.is_open_after(QUIET) and r.buf == b"", "second QoS 1 PUBLISH sent before PUBACK"
    for expected in (b"1", b"2"):
        r.send(ack_packet(PUBACK, first.fields["pid"]))
        first = r.expect(PUBLISH)
        assert first.fields["payload"] == expected
    r.send(ack_packet(PUBACK, first.fields["pid"]))


def test_v311_max_inflight_messages_limits_unacked_deliveries(broker_factory, raw_factory, client_factory):
    """3.1.1: with max_inflight_messages 2 at most two QoS 1 messages are unacknowledged towards
    a client; the rest wait in the queue and follow, in order, as PUBACKs come in (Mosquitto's
    max_inflight_messages; 5.0 clients set their own limit with Receive Maximum, tested above).
    [MQTT-4.6.0-5] (order kept while queued)."""
    b = broker_factory(["max_inflight_messages 2"])
    r = _raw_subscriber(b, raw_factory, MQTTv311, "inf", [("inf/t", 1)])
    pub = client_factory(b, "infpub", MQTTv311)
    for i in range(5):
        pub.publish("inf/t", b"%d" % i, qos=1)
    got = [r.expect(PUBLISH), r.expect(PUBLISH)]
    # See test_server_respects_client_receive_maximum: absence needs a bounded wait.
    assert r.is_open_after(QUIET) and r.buf == b"", "third PUBLISH sent with two in flight"
    payloads = []
    while got:
        p = got.pop(0)
        payloads.append(p.fields["payload"])
        r.send(ack_packet(PUBACK, p.fields["pid"]))
        if len(payloads) + len(got) < 5:
            got.append(r.expect(PUBLISH))
    assert payloads == [b"%d" % i for i in range(5)]


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 answers the excess QoS 2 PUBLISH with PUBREC 0x97 "
                               "and keeps the connection")
def test_v5_client_exceeding_receive_maximum_disconnected_0x93(broker_factory, raw_factory):
    """A client sending more unacknowledged QoS 2 PUBLISHes than the server's Receive Maximum
    (2) gets DISCONNECT 0x93 (Receive Maximum exceeded). [MQTT-3.3.4-7], §3.3.4."""
    b = broker_factory(["max_inflight_messages 2"])
    r = raw_factory(b, v5=True)
    assert r.connect("greedy").fields["props"].get(P_RECEIVE_MAXIMUM) == 2
    for pid in (1, 2, 3):
        r.send(publish_packet("greedy/t", b"x", qos=2, pid=pid, v5=True))  # never PUBREL
    got = r.wait_closed()
    assert [p.type for p in got[:2]] == [PUBREC, PUBREC], got
    assert got[-1].type == DISCONNECT and got[-1].fields["rc"] == 0x93, got


# --------------------------------------------------------------------------- packet size


def test_v5_connack_advertises_maximum_packet_size(broker_factory, raw_factory):
    """max_packet_size is advertised as Maximum Packet Size in the 5.0 CONNACK. §3.2.2.3.6"""
    b = broker_factory(["max_packet_size 1000"])
    r = raw_factory(b, v5=True)
    assert r.connect("mps").fields["props"].get(P_MAXIMUM_PACKET_SIZE) == 1000


def test_packet_over_max_packet_size_disconnects(broker_factory, raw_factory, client_factory, version):
    """A client sending a packet larger than max_packet_size is disconnected and the message is
    not delivered (5.0: DISCONNECT 0x95 Packet too large). §3.2.2.3.6, [MQTT-3.2.2-15]."""
    b = broker_factory(["max_packet_size 1000"])
    sub = client_factory(b, "mpssub", version)
    sub.subscribe("mps/#", 0)
    is5 = version == MQTTv5
    r = raw_factory(b, v5=is5)
    r.connect("big")
    r.send(publish_packet("mps/big", b"x" * 2000, v5=is5))
    got = r.wait_closed()
    if is5:
        assert got and got[-1].type == DISCONNECT and got[-1].fields["rc"] == 0x95, got
    else:
        assert got == [], got
    sub.publish("mps/marker", b"m")
    assert sub.collect_until("mps/marker") == []


def test_packet_under_max_packet_size_is_accepted(broker_factory, client_factory, version):
    """A packet under max_packet_size is accepted and delivered. §3.2.2.3.6"""
    b = broker_factory(["max_packet_size 1000"])
    c = client_factory(b, "small", version)
    c.subscribe("mps/ok", 1)
    c.publish("mps/ok", b"y" * 800, qos=1)
    assert c.expect().payload == b"y" * 800


def test_v5_server_respects_client_maximum_packet_size(broker, raw_factory, client_factory):
    """The server does not send a packet larger than the client's Maximum Packet Size: it
    discards the message (and delivers the next one that fits). [MQTT-3.1.2-24], [MQTT-3.1.2-25]"""
    r = _raw_subscriber(broker, raw_factory, MQTTv5, "tiny", [("cmps/#", 1)],
                        props=[(P_MAXIMUM_PACKET_SIZE, 200)])
    pub = client_factory(broker, "cmpspub", MQTTv5)
    pub.publish("cmps/big", b"z" * 500, qos=1)
    pub.publish("cmps/small", b"fits", qos=1)
    p = r.expect(PUBLISH)
    assert (p.fields["topic"], p.fields["payload"]) == ("cmps/small", b"fits")
    r.send(ack_packet(PUBACK, p.fields["pid"]))


def test_message_size_limit_drops_oversized_payload(broker_factory, raw_factory, client_factory, version):
    """A payload over message_size_limit is not forwarded, but the QoS 1 flow completes (5.0:
    PUBACK with a failure Reason Code >= 0x80) and the connection stays up (Mosquitto's
    documented behaviour)."""
    b = broker_factory(["message_size_limit 100"])
    sub = client_factory(b, "mslsub", version)
    sub.subscribe("msl/#", 1)
    is5 = version == MQTTv5
    r = raw_factory(b, v5=is5)
    r.connect("mslpub")
    r.send(publish_packet("msl/big", b"x" * 200, qos=1, pid=1, v5=is5))
    ack = r.expect(PUBACK)
    assert ack.fields["pid"] == 1
    if is5:
        assert ack.fields.get("rc", 0) >= 0x80
    r.send(publish_packet("msl/small", b"ok", qos=1, pid=2, v5=is5))
    r.expect(PUBACK)
    got = sub.expect()
    assert (got.topic, got.payload) == ("msl/small", b"ok")


# --------------------------------------------------------------------------- maximum QoS


def test_v5_max_qos_1_advertised_and_subscription_downgraded(broker_factory, client_factory, raw_factory):
    """With max_qos 1 the 5.0 CONNACK has Maximum QoS 1 and a QoS 2 subscription is granted
    QoS 1. [MQTT-3.2.2-9], [MQTT-3.2.2-10]"""
    b = broker_factory(["max_qos 1"])
    r = raw_factory(b, v5=True)
    assert r.connect("mq").fields["props"].get(P_MAXIMUM_QOS) == 1
    c = client_factory(b, "mqsub", MQTTv5)
    assert c.subscribe("mq/t", 2) == [1]


def test_v311_max_qos_1_subscription_granted_qos_1(broker_factory, client_factory):
    """3.1.1: a QoS 2 subscription to a max_qos 1 server is granted QoS 1 and QoS 1 messages
    flow. [MQTT-3.8.4-6] (granted QoS may be lower)."""
    b = broker_factory(["max_qos 1"])
    c = client_factory(b, "mq311", MQTTv311)
    assert c.subscribe("mq/t", 2) == [1]
    c.publish("mq/t", b"q1", qos=1)
    m = c.expect()
    assert (m.payload, m.qos) == (b"q1", 1)


def test_v5_publish_above_maximum_qos_disconnects_0x9b(broker_factory, raw_factory):
    """5.0: a PUBLISH with QoS above the advertised Maximum QoS gets DISCONNECT 0x9B (QoS not
    supported). [MQTT-3.2.2-11] (client), §3.3.1.2 / §4.13."""
    b = broker_factory(["max_qos 1"])
    r = raw_factory(b, v5=True)
    r.connect("mq2")
    r.send(publish_packet("mq/t", b"x", qos=2, v5=True))
    got = r.wait_closed()
    assert got and got[-1].type == DISCONNECT and got[-1].fields["rc"] == 0x9B, got


def test_v5_will_qos_above_maximum_qos_refused_0x9b(broker_factory, raw_factory):
    """5.0: a Will QoS above the server's Maximum QoS is refused with CONNACK 0x9B and close.
    [MQTT-3.2.2-12]"""
    b = broker_factory(["max_qos 1"])
    r = raw_factory(b, v5=True)
    r.send(connect_packet("wq2", level=5, will=("w/t", b"x"), will_qos=2))
    got = r.wait_closed()
    assert got and got[0].type == CONNACK and got[0].fields["rc"] == 0x9B, got
