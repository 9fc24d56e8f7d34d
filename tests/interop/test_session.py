"""Persistent sessions: subscriptions and queued QoS 1/2 messages survive reconnection;
5.0 Session Expiry Interval; redelivery of unacknowledged messages."""

import time

import pytest

from conftest import (
    DISCONNECT, P_SESSION_EXPIRY, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, SUBACK, QUIET,
    MQTTv311, MQTTv5, ack_packet, connect_props, packet, props, subscribe_packet, enc_props,
)
from paho.mqtt.packettypes import PacketTypes


def _persistent(client_factory, broker, cid, version, connect=True, expiry=300):
    kw = {"properties": connect_props(SessionExpiryInterval=expiry)} if version == MQTTv5 else {}
    return client_factory(broker, cid, version, clean=False, connect=connect, **kw)


def test_subscriptions_survive_reconnect(broker, client_factory, version):
    """A persistent session keeps its subscriptions across reconnection.
    [MQTT-3.1.2-4] (3.1.1), [MQTT-3.1.2-5], [MQTT-3.1.2-23] (5.0)."""
    c = _persistent(client_factory, broker, "keepsubs", version)
    c.subscribe("ps/t", 1)
    c.disconnect()
    c2 = _persistent(client_factory, broker, "keepsubs", version, connect=False)
    assert c2.connect().session_present is True
    pub = client_factory(broker, "pspub", version)
    pub.publish("ps/t", b"no-resubscribe-needed", qos=1)
    assert c2.expect().payload == b"no-resubscribe-needed"


@pytest.mark.parametrize("qos", [1, 2])
def test_qos_messages_queued_while_offline_are_delivered(broker, client_factory, version, qos):
    """QoS 1/2 messages matching the subscriptions of a disconnected persistent session are
    stored and delivered, in order, on reconnection.
    [MQTT-3.1.2-5] (3.1.1), [MQTT-3.1.2-23] (5.0), [MQTT-4.6.0-5] / [MQTT-4.6.0-6] (order)."""
    c = _persistent(client_factory, broker, "offline", version)
    c.subscribe("off/t", qos)
    c.disconnect()
    pub = client_factory(broker, "offpub", version)
    for i in range(5):
        pub.publish("off/t", b"m%d" % i, qos=qos)
    c2 = _persistent(client_factory, broker, "offline", version, connect=False)
    assert c2.connect().session_present is True
    got = c2.expect_n(5)
    assert [m.payload for m in got] == [b"m%d" % i for i in range(5)]
    assert all(m.qos == qos for m in got)


def test_qos0_messages_not_queued_for_offline_session_by_default(broker, client_factory, version):
    """QoS 0 messages are not queued for offline sessions by default (Mosquitto's
    queue_qos0_messages false, which Midge mirrors); QoS 1 ones are. 3.1.1 §3.1.2.4 ("QoS 0
    messages ... MAY" be stored)."""
    c = _persistent(client_factory, broker, "offq0", version)
    c.subscribe("offq0/a", 0)
    c.subscribe("offq0/b", 1)
    c.disconnect()
    pub = client_factory(broker, "q0pub", version)
    pub.publish("offq0/a", b"q0", qos=0)
    pub.publish("offq0/b", b"q1", qos=1)
    c2 = _persistent(client_factory, broker, "offq0", version, connect=False)
    c2.connect()
    assert [m.payload for m in c2.collect_until("offq0/b")] == []


def test_clean_session_client_gets_nothing_published_while_away(broker, client_factory, version):
    """A clean-session client's session ends at disconnection: nothing is queued for it.
    [MQTT-3.1.2-6] (3.1.1), [MQTT-3.1.2-4] (5.0)."""
    c = client_factory(broker, "cleaner", version, clean=True)
    c.subscribe("cl/t", 1)
    c.disconnect()
    pub = client_factory(broker, "clpub", version)
    pub.publish("cl/t", b"lost", qos=1)
    c2 = client_factory(broker, "cleaner", version, clean=True)
    c2.subscribe("cl/marker", 1)
    pub.publish("cl/marker", b"m", qos=1)
    assert c2.collect_until("cl/marker") == []


def test_unacked_qos1_is_redelivered_with_dup_on_reconnect(broker, raw_factory, client_factory, version):
    """An unacknowledged QoS 1 PUBLISH is re-sent on reconnection (clean session 0) with the
    same Packet Identifier and DUP 1. [MQTT-4.4.0-1], [MQTT-3.3.1-1], [MQTT-2.3.1-?]."""
    is5 = version == MQTTv5
    sp = [(P_SESSION_EXPIRY, 300)] if is5 else None
    r = raw_factory(broker, v5=is5)
    r.connect("redeliver", clean=False, props=sp)
    r.send(subscribe_packet([("rd/t", 1)], v5=is5))
    r.expect(SUBACK)
    pub = client_factory(broker, "rdpub", version)
    pub.publish("rd/t", b"ack-me", qos=1)
    first = r.expect(PUBLISH)
    r.close()  # no PUBACK
    r2 = raw_factory(broker, v5=is5)
    ack = r2.connect("redeliver", clean=False, props=sp)
    assert ack.fields["session_present"] is True
    again = r2.expect(PUBLISH)
    assert again.fields["payload"] == b"ack-me"
    assert again.fields["pid"] == first.fields["pid"]
    assert again.fields["dup"] is True
    r2.send(ack_packet(PUBACK, again.fields["pid"]))


def test_unacked_qos2_pubrel_is_resent_on_reconnect(broker, raw_factory, client_factory, version):
    """A QoS 2 flow interrupted after PUBREC resumes with the server re-sending PUBREL (not the
    PUBLISH) with the same Packet Identifier. [MQTT-4.4.0-1], [MQTT-4.3.3-?] (3.1.1 §4.3.3)."""
    is5 = version == MQTTv5
    sp = [(P_SESSION_EXPIRY, 300)] if is5 else None
    r = raw_factory(broker, v5=is5)
    r.connect("rdq2", clean=False, props=sp)
    r.send(subscribe_packet([("rd2/t", 2)], v5=is5))
    r.expect(SUBACK)
    pub = client_factory(broker, "rd2pub", version)
    pub.publish("rd2/t", b"twice?", qos=2)
    p = r.expect(PUBLISH)
    r.send(ack_packet(PUBREC, p.fields["pid"]))
    r.expect(PUBREL)
    r.close()  # no PUBCOMP
    r2 = raw_factory(broker, v5=is5)
    assert r2.connect("rdq2", clean=False, props=sp).fields["session_present"] is True
    rel = r2.expect(PUBREL)
    assert rel.fields["pid"] == p.fields["pid"]
    r2.send(ack_packet(PUBCOMP, rel.fields["pid"]))


def test_max_queued_messages_limits_offline_queue(broker_factory, client_factory, version):
    """With max_queued_messages 5, at most 5 (plus the in-flight window, here 1) of the messages
    published while a session is offline are kept; the oldest are the ones kept (Mosquitto drops
    new messages when the queue is full; Midge mirrors it)."""
    b = broker_factory(["max_queued_messages 5", "max_inflight_messages 1"])
    c = _persistent(client_factory, b, "qlimit", version)
    c.subscribe("ql/t", 1)
    c.disconnect()
    pub = client_factory(b, "qlpub", version)
    for i in range(20):
        pub.publish("ql/t", b"%02d" % i, qos=1)
    c2 = _persistent(client_factory, b, "qlimit", version, connect=False)
    c2.connect()
    c2.subscribe("ql/marker", 1)
    pub.publish("ql/marker", b"m", qos=1)
    got = [m.payload for m in c2.collect_until("ql/marker")]
    assert 5 <= len(got) <= 6, got
    assert got == [b"%02d" % i for i in range(len(got))]


# --------------------------------------------------------------------------- 5.0 Session Expiry


def test_v5_session_expiry_0_ends_session_at_disconnect(broker, client_factory):
    """5.0: Session Expiry Interval 0 (absent): the session ends when the connection closes, so a
    Clean Start 0 reconnection gets Session Present 0 and no queued messages.
    [MQTT-3.1.2-23] (only >0 is stored), [MQTT-3.2.2-3]."""
    c = client_factory(broker, "se0", MQTTv5, clean=False)
    c.subscribe("se0/t", 1)
    c.disconnect()
    pub = client_factory(broker, "se0pub", MQTTv5)
    pub.publish("se0/t", b"dropped", qos=1)
    c2 = client_factory(broker, "se0", MQTTv5, clean=False, connect=False)
    assert c2.connect().session_present is False
    c2.subscribe("se0/m", 1)
    pub.publish("se0/m", b"m", qos=1)
    assert c2.collect_until("se0/m") == []


def test_v5_session_expiry_positive_keeps_session(broker, client_factory):
    """5.0: Session Expiry Interval > 0 keeps the session: Session Present 1 and queued messages.
    [MQTT-3.1.2-23], [MQTT-3.2.2-3]."""
    c = _persistent(client_factory, broker, "se300", MQTTv5, expiry=300)
    c.subscribe("se300/t", 1)
    c.disconnect()
    pub = client_factory(broker, "se300pub", MQTTv5)
    pub.publish("se300/t", b"kept", qos=1)
    c2 = _persistent(client_factory, broker, "se300", MQTTv5, connect=False)
    assert c2.connect().session_present is True
    assert c2.expect().payload == b"kept"


def test_v5_session_expires_after_interval(broker, client_factory):
    """5.0: after the Session Expiry Interval (1 s) passes the session is gone.
    [MQTT-3.1.2-23], §3.1.2.11.2."""
    c = _persistent(client_factory, broker, "se1", MQTTv5, expiry=1)
    c.subscribe("se1/t", 1)
    c.disconnect()
    time.sleep(2.5)  # expiry is a timer: nothing observable marks it, wait past it (bounded)
    c2 = _persistent(client_factory, broker, "se1", MQTTv5, connect=False, expiry=1)
    assert c2.connect().session_present is False


def test_v5_disconnect_can_set_session_expiry_to_zero(broker, client_factory):
    """5.0: a Session Expiry Interval in DISCONNECT replaces the CONNECT one; 0 ends the session.
    §3.14.2.2.2, [MQTT-3.1.2-23]."""
    c = _persistent(client_factory, broker, "sedisc", MQTTv5, expiry=300)
    c.subscribe("sed/t", 1)
    c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=0))
    c2 = _persistent(client_factory, broker, "sedisc", MQTTv5, connect=False)
    assert c2.connect().session_present is False


def test_v5_disconnect_nonzero_expiry_after_zero_is_protocol_error(broker, raw_factory):
    """5.0: if CONNECT had Session Expiry 0, a non-zero Session Expiry in DISCONNECT is a
    Protocol Error: the server answers DISCONNECT 0x82 (or just closes). §3.14.2.2.2."""
    r = raw_factory(broker, v5=True)
    r.connect("sebad")
    r.send(packet(DISCONNECT, 0, bytes([0x00]) + enc_props([(P_SESSION_EXPIRY, 60)])))
    got = r.wait_closed()
    assert all(p.type == DISCONNECT and p.fields["rc"] == 0x82 for p in got), got


def test_v5_clean_start_1_discards_session_but_reconnect_clean_start_0_resumes(broker, client_factory):
    """5.0: Clean Start 1 starts a new session even if one exists; that new session (with expiry)
    is then resumed with Clean Start 0. [MQTT-3.1.2-4], [MQTT-3.1.2-5]."""
    c = _persistent(client_factory, broker, "cs", MQTTv5)
    c.subscribe("cs/old", 1)
    c.disconnect()
    kw = {"properties": connect_props(SessionExpiryInterval=300)}
    c2 = client_factory(broker, "cs", MQTTv5, clean=True, connect=False, **kw)
    assert c2.connect().session_present is False
    c2.subscribe("cs/new", 1)
    c2.disconnect()
    c3 = _persistent(client_factory, broker, "cs", MQTTv5, connect=False)
    assert c3.connect().session_present is True
    pub = client_factory(broker, "cspub", MQTTv5)
    pub.publish("cs/old", b"old", qos=1)
    pub.publish("cs/new", b"new", qos=1)
    assert c3.expect().payload == b"new"
