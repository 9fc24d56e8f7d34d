"""Retained messages, 5.0 Retain Handling / Retain As Published, retain_available."""

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from conftest import (
    CONNACK, DISCONNECT, P_RETAIN_AVAILABLE, MQTTv311, MQTTv5, connect_packet, publish_packet,
)


def _publish_retained(broker, client_factory, version, topic, payload, qos=1, cid="rpub"):
    pub = client_factory(broker, cid, version)
    pub.publish(topic, payload, qos=qos, retain=True)
    pub.close()


def test_retained_message_sent_on_subscribe_with_retain_flag(broker, client_factory, version):
    """A retained message is stored and sent to a new subscriber with RETAIN 1.

    [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-8] (3.1.1); [MQTT-3.3.1-5], [MQTT-3.3.1-9] (5.0).
    """
    _publish_retained(broker, client_factory, version, "ret/a", b"stored")
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("ret/a", 1)
    m = sub.expect()
    assert (m.topic, m.payload, m.retain) == ("ret/a", b"stored", True)


@pytest.mark.parametrize("pub_qos,sub_qos", [(0, 1), (1, 1), (2, 2), (2, 0), (1, 0)])
def test_retained_message_qos_is_min_of_stored_and_granted(broker, client_factory, version, pub_qos, sub_qos):
    """A retained message is delivered at min(QoS it was published with, granted QoS).

    [MQTT-3.8.4-6] (3.1.1) / [MQTT-3.8.4-8] (5.0).
    """
    _publish_retained(broker, client_factory, version, "retq/t", b"q", qos=pub_qos)
    sub = client_factory(broker, "rqsub", version)
    sub.subscribe("retq/t", sub_qos)
    m = sub.expect()
    assert m.retain is True and m.qos == min(pub_qos, sub_qos)


def test_retained_message_is_replaced(broker, client_factory, version):
    """A new retained message replaces the previous one on the same topic. [MQTT-3.3.1-5]"""
    _publish_retained(broker, client_factory, version, "ret/rep", b"one", cid="p1")
    _publish_retained(broker, client_factory, version, "ret/rep", b"two", cid="p2")
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("ret/rep", 1)
    sub.subscribe("ret/marker", 1)
    sub.publish("ret/marker", b"m", qos=1)
    got = sub.collect_until("ret/marker")
    assert [(m.payload, m.retain) for m in got] == [(b"two", True)]


def test_empty_retained_payload_deletes_retained_message(broker, client_factory, version):
    """A retained PUBLISH with an empty payload removes the retained message and is itself not
    stored. [MQTT-3.3.1-10], [MQTT-3.3.1-11] (3.1.1); [MQTT-3.3.1-6], [MQTT-3.3.1-7] (5.0)."""
    _publish_retained(broker, client_factory, version, "ret/del", b"doomed", cid="p1")
    _publish_retained(broker, client_factory, version, "ret/del", b"", cid="p2")
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("ret/del", 1)
    sub.subscribe("ret/marker", 1)
    sub.publish("ret/marker", b"m", qos=1)
    assert sub.collect_until("ret/marker") == []


def test_empty_retained_payload_is_forwarded_to_existing_subscribers(broker, client_factory, version):
    """The zero-byte retained message that deletes is still delivered to current subscribers
    (normally, as any publish). [MQTT-3.3.1-10] (3.1.1), [MQTT-3.3.1-6] (5.0)."""
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("ret/del2", 1)
    pub = client_factory(broker, "rpub", version)
    pub.publish("ret/del2", b"", qos=1, retain=True)
    m = sub.expect()
    assert m.topic == "ret/del2" and m.payload == b""


def test_non_retained_publish_does_not_replace_retained(broker, client_factory, version):
    """A PUBLISH with RETAIN 0 neither stores nor replaces the retained message.
    [MQTT-3.3.1-12] (3.1.1), [MQTT-3.3.1-8] (5.0)."""
    _publish_retained(broker, client_factory, version, "ret/keep", b"kept")
    pub = client_factory(broker, "p2", version)
    pub.publish("ret/keep", b"live-only", qos=1, retain=False)
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("ret/keep", 1)
    m = sub.expect()
    assert (m.payload, m.retain) == (b"kept", True)


def test_live_message_to_existing_subscriber_has_retain_0(broker, client_factory, version):
    """A retained PUBLISH forwarded to an already-subscribed client has RETAIN 0 (3.1.1, and 5.0
    with the default Retain As Published 0). [MQTT-3.3.1-9] (3.1.1), [MQTT-3.3.1-12] (5.0)."""
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("ret/live", 1)
    pub = client_factory(broker, "rpub", version)
    pub.publish("ret/live", b"now", qos=1, retain=True)
    m = sub.expect()
    assert (m.payload, m.retain) == (b"now", False)


def test_wildcard_subscription_gets_all_matching_retained(broker, client_factory, version):
    """A wildcard subscription receives the retained message of every matching topic (and not
    of others). [MQTT-3.3.1-6] (3.1.1), [MQTT-3.3.1-9] (5.0)."""
    for i, t in enumerate(["rw/a", "rw/b", "rw/c/d", "other/x"]):
        _publish_retained(broker, client_factory, version, t, t.encode(), cid=f"p{i}")
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("rw/+", 1)
    sub.subscribe("rw-marker", 1)
    sub.publish("rw-marker", b"m", qos=1)
    got = sorted((m.topic, m.retain) for m in sub.collect_until("rw-marker"))
    assert got == [("rw/a", True), ("rw/b", True)]


def test_resubscribe_resends_retained_messages(broker, client_factory, version):
    """Re-subscribing to the same filter re-sends retained messages (3.1.1 MUST; 5.0 Retain
    Handling 0). [MQTT-3.8.4-3] (3.1.1), [MQTT-3.3.1-9] (5.0)."""
    _publish_retained(broker, client_factory, version, "rr/t", b"again")
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("rr/t", 1)
    assert sub.expect().payload == b"again"
    sub.subscribe("rr/t", 1)
    m = sub.expect()
    assert (m.payload, m.retain) == (b"again", True)


def test_retained_survives_between_many_clients(broker, client_factory, version):
    """Several retained topics are each kept independently. [MQTT-3.3.1-5]"""
    for i in range(5):
        _publish_retained(broker, client_factory, version, f"many/{i}", b"v%d" % i, cid=f"p{i}")
    sub = client_factory(broker, "rsub", version)
    sub.subscribe("many/#", 1)
    got = sorted(m.payload for m in sub.expect_n(5))
    assert got == [b"v%d" % i for i in range(5)]


# --------------------------------------------------------------------------- 5.0 options


@pytest.mark.parametrize("handling", [0, 1, 2])
def test_v5_retain_handling_on_new_subscription(broker, client_factory, handling):
    """Retain Handling 0 and 1 send retained messages for a new subscription; 2 does not.

    [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11].
    """
    _publish_retained(broker, client_factory, MQTTv5, "rh/t", b"ret")
    sub = client_factory(broker, "rhsub", MQTTv5)
    sub.subscribe("rh-marker", 1)
    sub.subscribe("rh/t", options=SubscribeOptions(qos=1, retainHandling=handling))
    sub.publish("rh-marker", b"m", qos=1)
    got = [(m.payload, m.retain) for m in sub.collect_until("rh-marker")]
    assert got == ([] if handling == 2 else [(b"ret", True)])


@pytest.mark.parametrize("handling,expected", [(0, 1), (1, 0), (2, 0)])
def test_v5_retain_handling_on_existing_subscription(broker, client_factory, handling, expected):
    """Re-subscribing to an existing subscription: Retain Handling 0 sends retained messages
    again, 1 only if the subscription did not exist (so not), 2 never.

    [MQTT-3.3.1-9], [MQTT-3.3.1-10], [MQTT-3.3.1-11].
    """
    _publish_retained(broker, client_factory, MQTTv5, "rhx/t", b"ret")
    sub = client_factory(broker, "rhxsub", MQTTv5)
    sub.subscribe("rhx-marker", 1)
    sub.subscribe("rhx/t", 1)
    assert sub.expect().payload == b"ret"
    sub.subscribe("rhx/t", options=SubscribeOptions(qos=1, retainHandling=handling))
    sub.publish("rhx-marker", b"m", qos=1)
    assert len(sub.collect_until("rhx-marker")) == expected


@pytest.mark.parametrize("rap", [False, True])
def test_v5_retain_as_published(broker, client_factory, rap):
    """Retain As Published 1 keeps the RETAIN flag on forwarded messages, 0 clears it.

    [MQTT-3.3.1-12], [MQTT-3.3.1-13].
    """
    sub = client_factory(broker, "rapsub", MQTTv5)
    sub.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=rap))
    pub = client_factory(broker, "rappub", MQTTv5)
    pub.publish("rap/t", b"r", qos=1, retain=True)
    pub.publish("rap/t", b"n", qos=1, retain=False)
    a, b = sub.expect_n(2)
    assert (a.payload, a.retain) == (b"r", rap)
    assert (b.payload, b.retain) == (b"n", False)


def test_v5_retained_on_subscribe_has_retain_flag_even_without_rap(broker, client_factory):
    """Messages sent because of a new subscription carry RETAIN 1 regardless of Retain As
    Published. [MQTT-3.3.1-9] (5.0 §3.3.1.3)."""
    _publish_retained(broker, client_factory, MQTTv5, "rapn/t", b"r")
    sub = client_factory(broker, "rapnsub", MQTTv5)
    sub.subscribe("rapn/t", options=SubscribeOptions(qos=1, retainAsPublished=False))
    assert sub.expect().retain is True


# --------------------------------------------------------------------------- retain_available false


def test_v5_connack_retain_available_0_when_disabled(broker_factory, raw_factory):
    """With retain_available false the 5.0 CONNACK has Retain Available 0. MQTT 5.0
    §3.2.2.3.5, [MQTT-3.2.2-14]."""
    b = broker_factory(["retain_available false"])
    r = raw_factory(b, v5=True)
    ack = r.connect("noret")
    assert ack.fields["props"].get(P_RETAIN_AVAILABLE) == 0


def test_v5_retained_publish_when_unavailable_disconnects_0x9a(broker_factory, raw_factory):
    """A retained PUBLISH to a server without retain support gets DISCONNECT 0x9A (Retain not
    supported). MQTT 5.0 §3.3.1.3, §4.13."""
    b = broker_factory(["retain_available false"])
    r = raw_factory(b, v5=True)
    r.connect("noret")
    r.send(publish_packet("nr/t", b"x", qos=1, retain=True, v5=True))
    got = r.wait_closed()
    assert got and got[-1].type == DISCONNECT and got[-1].fields["rc"] == 0x9A, got


def test_v311_retained_publish_when_unavailable_closes_connection(broker_factory, raw_factory):
    """3.1.1 clients cannot be told retain is unavailable: a retained PUBLISH closes the
    connection (Mosquitto's behaviour, which Midge follows)."""
    b = broker_factory(["retain_available false"])
    r = raw_factory(b)
    r.connect("noret311")
    r.send(publish_packet("nr/t", b"x", qos=1, retain=True))
    got = r.wait_closed()
    assert got == [], got


def test_v5_will_retain_when_unavailable_is_refused_0x9a(broker_factory, raw_factory):
    """A CONNECT whose Will has RETAIN 1 to a server without retain support is refused, CONNACK
    0x9A, and closed. [MQTT-3.2.2-13]"""
    b = broker_factory(["retain_available false"])
    r = raw_factory(b, v5=True)
    r.send(connect_packet("willret", level=5, will=("w/t", b"x"), will_retain=True))
    got = r.wait_closed()
    assert got and got[0].type == CONNACK and got[0].fields["rc"] == 0x9A, got


def test_retained_not_stored_when_unavailable_non_retained_still_flows(broker_factory, client_factory, version):
    """With retain_available false ordinary messages still flow. MQTT 5.0 §3.2.2.3.5."""
    b = broker_factory(["retain_available false"])
    sub = client_factory(b, "s", version)
    sub.subscribe("nr/ok", 1)
    sub.publish("nr/ok", b"fine", qos=1)
    assert sub.expect().payload == b"fine"
