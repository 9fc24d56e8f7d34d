"""Malformed and forbidden packets after CONNECT: the server closes the connection (5.0: it may
send DISCONNECT with a reason code >= 0x80 first) and does not act on the packet.
MQTT 3.1.1 §4.8 / 5.0 §4.13 (handling errors)."""

import struct

import pytest

from conftest import (
    CONNACK, DISCONNECT, P_MAXIMUM_PACKET_SIZE, P_RECEIVE_MAXIMUM, P_SESSION_EXPIRY,
    P_SUBSCRIPTION_ID, PINGREQ, PINGRESP, PINGREQ_PACKET, PUBACK, PUBCOMP, PUBREL, SUBACK,
    UNSUBSCRIBE, MQTTv311, MQTTv5, ack_packet, connect_packet, enc_props, enc_str, packet,
    publish_packet, subscribe_packet,
)


def _assert_closed_without_reply(r, forbidden=()):
    got = r.wait_closed()
    for p in got:
        assert p.type not in forbidden, got
        if p.type == DISCONNECT:
            assert p.fields["rc"] >= 0x80, got
    return got


def _unsubscribe(filters, v5, flags=0x02, pid=1):
    body = struct.pack("!H", pid) + (enc_props([]) if v5 else b"")
    for f in filters:
        body += enc_str(f)
    return packet(UNSUBSCRIBE, flags, body)


CASES = {
    # name: (builder(v5) -> bytes, packet types that must not come back)
    "unsubscribe-flags-0000": (lambda v5: _unsubscribe(["a"], v5, flags=0), ()),     # [MQTT-3.10.1-1]
    "unsubscribe-without-filters": (lambda v5: _unsubscribe([], v5), ()),             # [MQTT-3.10.3-2]
    "pubrel-flags-0000": (lambda v5: packet(PUBREL, 0, struct.pack("!H", 1)), (PUBCOMP,)),  # [MQTT-3.6.1-1]
    "remaining-length-5-bytes": (lambda v5: bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), ()),  # §2.2.3 / §1.5.5
    "topic-with-nul": (lambda v5: publish_packet("a\x00b", b"x", qos=1, v5=v5), (PUBACK,)),  # [MQTT-1.5.3-2] / [MQTT-1.5.4-2]
    "topic-invalid-utf8": (lambda v5: publish_packet(b"a\xff\xfeb", b"x", qos=1, v5=v5), (PUBACK,)),  # [MQTT-1.5.3-1] / [MQTT-1.5.4-1]
    "empty-topic-no-alias": (lambda v5: publish_packet("", b"x", qos=1, v5=v5), (PUBACK,)),  # [MQTT-4.7.3-1], 5.0 §3.3.2.3.4
    "qos1-packet-id-0": (lambda v5: publish_packet("a", b"x", qos=1, pid=0, v5=v5), (PUBACK,)),  # [MQTT-2.3.1-1] / [MQTT-2.2.1-3]
    "reserved-packet-type-0": (lambda v5: packet(0, 0, b""), ()),                    # §2.2.1 / §2.1.2 "Forbidden"
    # 3.1.1: type 15 is reserved; 5.0: AUTH without an Authentication Method in CONNECT
    "packet-type-15": (lambda v5: bytes([0xF0, 0x00]), ()),                          # §2.2.1 / §4.12
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_packet_closes_connection(broker, raw_factory, version, case):
    """Each malformed packet makes the server close the connection without acting on it.
    Cases cite: [MQTT-3.10.1-1], [MQTT-3.10.3-2], [MQTT-3.6.1-1], §2.2.3 (Remaining Length at
    most 4 bytes), [MQTT-1.5.3-1] / [MQTT-1.5.4-1], [MQTT-1.5.3-2] / [MQTT-1.5.4-2],
    [MQTT-4.7.3-1], [MQTT-2.3.1-1] / [MQTT-2.2.1-3], reserved packet types (3.1.1 type 15 and 0,
    5.0 type 0), 5.0 AUTH without an Authentication Method (§4.12)."""
    is5 = version == MQTTv5
    build, forbidden = CASES[case]
    r = raw_factory(broker, v5=is5)
    r.connect("malformed")
    r.send(build(is5))
    _assert_closed_without_reply(r, forbidden)


def test_malformed_publish_is_not_delivered(broker, raw_factory, client_factory, version):
    """A PUBLISH with an invalid topic name is not forwarded to anyone. §4.8 / §4.13"""
    sub = client_factory(broker, "mfsub", version)
    sub.subscribe("#", 1)
    r = raw_factory(broker, v5=version == MQTTv5)
    r.connect("mfpub")
    r.send(publish_packet(b"bad\xc3(", b"x", qos=1, v5=version == MQTTv5))
    r.wait_closed()
    sub.publish("mf/marker", b"m", qos=1)
    assert sub.collect_until("mf/marker") == []


def test_subscribe_empty_filter_is_refused(broker, raw_factory, version):
    """A zero-length Topic Filter is invalid [MQTT-4.7.3-1]: SUBACK failure (Midge: 0x80 /
    0x8F, connection kept) or the connection is closed (Mosquitto)."""
    r = raw_factory(broker, v5=version == MQTTv5)
    r.connect("emptyflt")
    r.send(subscribe_packet([("", 0)], v5=version == MQTTv5))
    first = r.next_or_closed()
    assert first is None or first.type == DISCONNECT or (
        first.type == SUBACK and first.fields["codes"][0] >= 0x80), first


def test_connect_client_id_invalid_utf8_is_refused(broker, raw_factory, version):
    """A ClientId that is not valid UTF-8 is refused (non-zero CONNACK or plain close).
    [MQTT-3.1.3-4], [MQTT-1.5.3-1] / [MQTT-1.5.4-1]"""
    r = raw_factory(broker, v5=version == MQTTv5)
    r.send(connect_packet(b"\xff\xfe", level=5 if version == MQTTv5 else 4))
    got = r.wait_closed()
    assert all(p.type == CONNACK and p.fields["rc"] != 0 for p in got), got


def test_puback_for_unknown_packet_id_is_ignored(broker, raw_factory, version):
    """A PUBACK for a Packet Identifier the server never used does not break the connection."""
    r = raw_factory(broker, v5=version == MQTTv5)
    r.connect("strayack")
    r.send(ack_packet(PUBACK, 4321))
    r.send(PINGREQ_PACKET)
    r.expect(PINGRESP)


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 answers a PINGREQ with reserved flags set")
def test_pingreq_with_reserved_flags_closes_connection(broker, raw_factory, version):
    """Fixed-header flags of PINGREQ are reserved (0000); anything else is malformed.
    [MQTT-2.2.2-2] (3.1.1), [MQTT-2.1.3-1] (5.0)."""
    r = raw_factory(broker, v5=version == MQTTv5)
    r.connect("pingflags")
    r.send(packet(PINGREQ, 0x01, b""))
    _assert_closed_without_reply(r, (PINGRESP,))


# --------------------------------------------------------------------------- 5.0 only

V5_CONNECT_CASES = {
    "receive-maximum-0": [(P_RECEIVE_MAXIMUM, 0)],          # §3.1.2.11.3
    "maximum-packet-size-0": [(P_MAXIMUM_PACKET_SIZE, 0)],  # §3.1.2.11.4
    "duplicate-session-expiry": [(P_SESSION_EXPIRY, 1), (P_SESSION_EXPIRY, 2)],  # §3.1.2.11.2
}


@pytest.mark.parametrize("case", sorted(V5_CONNECT_CASES))
def test_v5_connect_with_invalid_property_is_refused(broker, raw_factory, case):
    """A 5.0 CONNECT with a forbidden property value is a Protocol Error: non-zero CONNACK or
    close. §3.1.2.11, [MQTT-3.1.4-1]."""
    r = raw_factory(broker, v5=True)
    r.send(connect_packet("badprop", level=5, props=V5_CONNECT_CASES[case]))
    got = r.wait_closed()
    assert all(p.type == CONNACK and p.fields["rc"] >= 0x80 for p in got), got


def test_v5_unsupported_authentication_method_gets_0x8c(broker, raw_factory):
    """A CONNECT with an Authentication Method the server does not support gets CONNACK 0x8C
    (Bad authentication method) and close. §3.1.2.11.9, §4.12."""
    r = raw_factory(broker, v5=True)
    r.send(connect_packet("auth", level=5, props=[(0x15, "NO-SUCH-METHOD")]))
    got = r.wait_closed()
    assert len(got) == 1 and got[0].type == CONNACK and got[0].fields["rc"] == 0x8C, got


@pytest.mark.parametrize("options", [0xC0, 0x30], ids=["reserved-bits", "retain-handling-3"])
def test_v5_subscribe_with_invalid_options_closes_connection(broker, raw_factory, options):
    """Subscription Options with reserved bits set, or Retain Handling 3, are a Malformed
    Packet / Protocol Error. [MQTT-3.8.3-5], §3.8.3.1."""
    r = raw_factory(broker, v5=True)
    r.connect("subopts")
    r.send(subscribe_packet([("so/t", options)], v5=True))
    _assert_closed_without_reply(r, (SUBACK,))


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 accepts a client PUBLISH with a Subscription Identifier")
def test_v5_client_publish_with_subscription_identifier_is_protocol_error(broker, raw_factory):
    """A PUBLISH from a client MUST NOT contain a Subscription Identifier: Protocol Error.
    [MQTT-3.3.4-6]"""
    r = raw_factory(broker, v5=True)
    r.connect("pubsid")
    r.send(publish_packet("ps/t", b"x", qos=1, v5=True, props=[(P_SUBSCRIPTION_ID, 3)]))
    _assert_closed_without_reply(r, (PUBACK,))
