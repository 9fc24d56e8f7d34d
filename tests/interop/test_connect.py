"""CONNECT / CONNACK, client identifiers, session takeover and malformed CONNECTs."""

import pytest

from conftest import (
    CONNACK, DISCONNECT, P_ASSIGNED_CLIENT_ID, P_SERVER_KEEP_ALIVE, PINGREQ_PACKET, PINGRESP,
    MQTTv311, MQTTv5, connect_packet, connect_props, packet, publish_packet, subscribe_packet,
    CONNECT, SUBACK, TIMEOUT,
)


def test_connack_success_session_present_0_with_clean_session(broker, client_factory, version):
    """A clean-session/clean-start connection gets CONNACK 0 with Session Present 0.

    [MQTT-3.2.2-1] (3.1.1), [MQTT-3.2.2-2] (5.0), [MQTT-3.1.4-5] (5.0).
    """
    c = client_factory(broker, "clean1", version, connect=False, clean=True)
    ack = c.connect()
    assert ack.reason_code == 0
    assert ack.session_present is False


def test_session_present_1_when_resuming_persistent_session(broker, client_factory, version):
    """Reconnecting with clean session 0 to an existing session sets Session Present 1.

    [MQTT-3.2.2-2] (3.1.1), [MQTT-3.2.2-3] (5.0), [MQTT-3.1.2-4] (3.1.1), [MQTT-3.1.2-5] (5.0).
    """
    kw = {"properties": connect_props(SessionExpiryInterval=300)} if version == MQTTv5 else {}
    c = client_factory(broker, "persist1", version, connect=False, clean=False, **kw)
    first = c.connect()
    assert first.session_present is False  # no session existed yet [MQTT-3.2.2-3] (3.1.1)
    c.subscribe("persist/t", 1)
    c.disconnect()
    c2 = client_factory(broker, "persist1", version, connect=False, clean=False, **kw)
    assert c2.connect().session_present is True


def test_clean_session_discards_existing_session(broker, client_factory, version):
    """Clean session/start 1 discards the old session: Session Present 0, old subscriptions gone.

    [MQTT-3.1.2-6] (3.1.1), [MQTT-3.1.2-4] (5.0), [MQTT-3.2.2-1] / [MQTT-3.2.2-2].
    """
    kw = {"properties": connect_props(SessionExpiryInterval=300)} if version == MQTTv5 else {}
    c = client_factory(broker, "discard1", version, connect=False, clean=False, **kw)
    c.connect()
    c.subscribe("discard/t", 1)
    c.disconnect()
    c2 = client_factory(broker, "discard1", version, connect=False, clean=True)
    assert c2.connect().session_present is False
    # The old subscription must be gone: a publish to it is not delivered, the marker is.
    c2.subscribe("discard/marker", 1)
    pub = client_factory(broker, "discard-pub", version)
    pub.publish("discard/t", b"old-sub", qos=1)
    pub.publish("discard/marker", b"m", qos=1)
    assert c2.collect_until("discard/marker") == []


def test_v311_empty_client_id_with_clean_session_is_accepted(broker, raw_factory):
    """3.1.1: a zero-byte ClientId with CleanSession 1 is accepted (server assigns an id).

    [MQTT-3.1.3-6], [MQTT-3.1.3-7].
    """
    r = raw_factory(broker)
    ack = r.connect("", clean=True)
    assert ack.fields["rc"] == 0
    assert ack.fields["session_present"] is False
    r.send(PINGREQ_PACKET)
    r.expect(PINGRESP)


def test_v311_empty_client_id_with_clean_session_0_is_rejected(broker, raw_factory):
    """3.1.1: zero-byte ClientId with CleanSession 0 gets CONNACK 0x02 and the connection closed.

    [MQTT-3.1.3-8], [MQTT-3.2.2-4] (session present 0 with a non-zero code), [MQTT-3.2.2-5].
    """
    r = raw_factory(broker)
    r.send(connect_packet("", clean=False))
    got = r.wait_closed()
    assert len(got) == 1 and got[0].type == CONNACK, got
    assert got[0].fields["rc"] == 0x02
    assert got[0].fields["session_present"] is False


def test_v5_empty_client_id_gets_assigned_client_identifier(broker, client_factory):
    """5.0: a zero-length Client Identifier gets CONNACK with an Assigned Client Identifier,
    unique among sessions.

    [MQTT-3.1.3-6], [MQTT-3.1.3-7], [MQTT-3.2.2-16].
    """
    ids = set()
    for _ in range(2):
        c = client_factory(broker, "", MQTTv5, connect=False)
        ack = c.connect()
        assigned = getattr(ack.properties, "AssignedClientIdentifier", None)
        assert assigned, ack.properties
        ids.add(assigned)
    assert len(ids) == 2


def test_v5_raw_empty_client_id_assigned_identifier_property(broker, raw_factory):
    """5.0 wire check: CONNACK carries property 0x12 (Assigned Client Identifier). [MQTT-3.2.2-16]"""
    r = raw_factory(broker, v5=True)
    ack = r.connect("")
    assert ack.fields["rc"] == 0
    assert ack.fields["props"].get(P_ASSIGNED_CLIENT_ID)


def test_takeover_disconnects_existing_client(broker, client_factory, version):
    """A second client with the same ClientId makes the server disconnect the first.

    [MQTT-3.1.4-2] (3.1.1), [MQTT-3.1.4-3] (5.0).
    """
    first = client_factory(broker, "same-id", version)
    second = client_factory(broker, "same-id", version)
    first.expect_disconnect()
    # The second connection is alive and works.
    second.subscribe("takeover/t", 1)
    second.publish("takeover/t", b"x", qos=1)
    assert second.expect().payload == b"x"


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 closes the old connection without DISCONNECT")
def test_v5_takeover_sends_disconnect_0x8e_to_existing_client(broker, raw_factory, client_factory):
    """5.0: the existing connection gets DISCONNECT with Reason Code 0x8E (Session taken over)
    before it is closed.

    [MQTT-3.1.4-3] (the close is a MUST, the DISCONNECT 0x8E is what Midge sends).
    """
    first = raw_factory(broker, v5=True)
    assert first.connect("takeover-v5").fields["rc"] == 0
    client_factory(broker, "takeover-v5", MQTTv5)
    got = first.wait_closed()
    assert got and got[-1].type == DISCONNECT, got
    assert got[-1].fields["rc"] == 0x8E


def test_first_packet_not_connect_closes_connection(broker, raw_factory):
    """A connection whose first packet is not CONNECT is closed. [MQTT-3.1.0-1]"""
    r = raw_factory(broker)
    r.send(publish_packet("a/b", b"hello"))
    got = r.wait_closed()
    assert all(p.type != CONNACK for p in got), got


def test_subscribe_before_connect_closes_connection(broker, raw_factory):
    """A SUBSCRIBE before CONNECT closes the connection without SUBACK. [MQTT-3.1.0-1]"""
    r = raw_factory(broker)
    r.send(subscribe_packet([("a/#", 0)]))
    got = r.wait_closed()
    assert all(p.type != SUBACK for p in got), got


def test_second_connect_is_protocol_violation(broker, raw_factory, version):
    """A second CONNECT on the same connection is a protocol error and the connection is closed.

    [MQTT-3.1.0-2].
    """
    r = raw_factory(broker, v5=version == MQTTv5)
    assert r.connect("twice").fields["rc"] == 0
    r.send(connect_packet("twice", level=5 if version == MQTTv5 else 4))
    got = r.wait_closed()
    assert all(p.type != CONNACK for p in got), got


def test_connect_reserved_flag_set_closes_connection(broker, raw_factory, version):
    """The CONNECT reserved flag (bit 0) must be 0, otherwise the connection is closed.

    [MQTT-3.1.2-3].
    """
    r = raw_factory(broker, v5=version == MQTTv5)
    r.send(connect_packet("resv", level=5 if version == MQTTv5 else 4, reserved_flag=True))
    got = r.wait_closed()
    assert all(p.type != CONNACK or p.fields["rc"] != 0 for p in got), got


def test_connect_fixed_header_flags_nonzero_closes_connection(broker, raw_factory):
    """CONNECT fixed-header flags are reserved (0000); anything else is malformed. [MQTT-2.2.2-2]
    (3.1.1), [MQTT-2.1.3-1] (5.0)."""
    r = raw_factory(broker)
    good = connect_packet("hdrflags")
    r.send(bytes([good[0] | 0x01]) + good[1:])
    got = r.wait_closed()
    assert all(p.type != CONNACK or p.fields["rc"] != 0 for p in got), got


def test_mqtt31_mqisdp_connect_is_accepted(broker, raw_factory):
    """MQTT 3.1 ("MQIsdp", protocol level 3) CONNECT is answered with CONNACK 0 (Mosquitto
    supports 3.1; Midge does too)."""
    r = raw_factory(broker)
    ack = r.connect("old-client", level=3)
    assert ack.fields["rc"] == 0
    r.send(PINGREQ_PACKET)
    r.expect(PINGRESP)


def test_mqtt31_client_can_publish_and_subscribe(broker, raw_factory, client_factory):
    """An MQTT 3.1 client interoperates with a 3.1.1 client (both directions)."""
    old = raw_factory(broker)
    assert old.connect("old31", level=3).fields["rc"] == 0
    old.send(subscribe_packet([("v31/in", 1)], pid=7))
    suback = old.expect(SUBACK)
    assert suback.fields["pid"] == 7 and suback.fields["codes"] == [1]
    new = client_factory(broker, "new311", MQTTv311)
    new.subscribe("v31/out", 0)
    new.publish("v31/in", b"to-old", qos=0)
    p = old.recv_packet()
    assert p.fields["topic"] == "v31/in" and p.fields["payload"] == b"to-old"
    old.send(publish_packet("v31/out", b"from-old"))
    assert new.expect().payload == b"from-old"


def test_unsupported_protocol_level_gets_connack_0x01_and_close(broker, raw_factory):
    """An unsupported protocol level (6) gets CONNACK return code 0x01 (3.1.1 format) and close.

    [MQTT-3.1.2-2] (3.1.1).
    """
    r = raw_factory(broker)
    r.send(connect_packet("lvl6", level=6))
    got = r.wait_closed()
    assert len(got) == 1 and got[0].type == CONNACK, got
    assert got[0].fields["rc"] == 0x01


def test_wrong_protocol_name_closes_connection(broker, raw_factory):
    """A protocol name other than "MQTT" is refused and the connection closed. [MQTT-3.1.2-1]"""
    r = raw_factory(broker)
    r.send(connect_packet("badname", protocol_name="MQTX"))
    got = r.wait_closed()
    assert all(p.type != CONNACK or p.fields["rc"] != 0 for p in got), got


def test_will_qos_3_closes_connection(broker, raw_factory, version):
    """Will QoS 3 is malformed: the connection is closed. [MQTT-3.1.2-14] (3.1.1),
    [MQTT-3.1.2-12] (5.0)."""
    r = raw_factory(broker, v5=version == MQTTv5)
    r.send(connect_packet("willq3", level=5 if version == MQTTv5 else 4, will=("w/t", b"x"), will_qos=3))
    got = r.wait_closed()
    assert all(p.type != CONNACK or p.fields["rc"] != 0 for p in got), got


def test_v311_password_without_username_closes_connection(broker, raw_factory):
    """3.1.1: Password Flag 1 with User Name Flag 0 is a protocol violation. [MQTT-3.1.2-22]"""
    r = raw_factory(broker)
    r.send(connect_packet("pwonly", password=b"secret"))
    got = r.wait_closed()
    assert all(p.type != CONNACK or p.fields["rc"] != 0 for p in got), got


def test_connack_is_first_packet_and_only_once(broker, raw_factory, version):
    """The server's first packet is CONNACK and it sends only one per connection.

    [MQTT-3.2.0-1] (3.1.1 / 5.0), [MQTT-3.2.0-2] (5.0).
    """
    r = raw_factory(broker, v5=version == MQTTv5)
    assert r.connect("once").fields["rc"] == 0
    r.send(PINGREQ_PACKET)
    assert r.recv_packet().type == PINGRESP


def test_pingreq_gets_pingresp(broker, raw_factory, version):
    """The server answers PINGREQ with PINGRESP. [MQTT-3.12.4-1]"""
    r = raw_factory(broker, v5=version == MQTTv5)
    r.connect("pinger")
    for _ in range(3):
        r.send(PINGREQ_PACKET)
        r.expect(PINGRESP)


def test_v5_connack_advertises_server_keep_alive_above_max_keepalive(broker_factory, raw_factory):
    """5.0: a Keep Alive above the server's max_keepalive is answered with CONNACK Server Keep
    Alive = max_keepalive. MQTT 5.0 §3.2.2.3.14, [MQTT-3.1.2-21]."""
    b = broker_factory(["max_keepalive 10"])
    r = raw_factory(b, v5=True)
    ack = r.connect("ka-hi", keepalive=30)
    assert ack.fields["rc"] == 0
    assert ack.fields["props"].get(P_SERVER_KEEP_ALIVE) == 10


def test_v5_keep_alive_within_max_is_not_overridden(broker_factory, raw_factory):
    """5.0: a Keep Alive within max_keepalive needs no Server Keep Alive (or echoes it unchanged).
    MQTT 5.0 §3.2.2.3.14."""
    b = broker_factory(["max_keepalive 60"])
    r = raw_factory(b, v5=True)
    ack = r.connect("ka-ok", keepalive=30)
    assert ack.fields["props"].get(P_SERVER_KEEP_ALIVE, 30) == 30


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 applies max_keepalive to 5.0 clients only")
def test_v311_keep_alive_above_max_keepalive_is_refused(broker_factory, raw_factory):
    """3.1.1 has no Server Keep Alive, so Midge refuses a Keep Alive above max_keepalive with
    CONNACK 0x02 (Identifier rejected, what later Mosquitto releases send) and closes; Mosquitto
    2.0.11 applies max_keepalive to 5.0 clients only and accepts. [MQTT-3.2.2-5]"""
    b = broker_factory(["max_keepalive 10"])
    r = raw_factory(b)
    r.send(connect_packet("ka311", keepalive=30))
    got = r.wait_closed()
    assert got and got[0].type == CONNACK and got[0].fields["rc"] == 0x02, got


def test_v5_no_response_information_unless_requested(broker, raw_factory):
    """Without Request Response Information (or with 0) the CONNACK has no Response Information.
    [MQTT-3.1.2-28]"""
    for props in (None, [(0x19, 0)]):
        r = raw_factory(broker, v5=True)
        ack = r.connect("noresp", props=props)
        assert 0x1A not in ack.fields.get("props", {}), ack


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 does not return Response Information")
def test_v5_response_information_when_requested(broker, raw_factory):
    """Midge answers Request Response Information 1 with Response Information
    "response/{client id}" (docs/design/broker-core.md). §3.1.2.11.7, §3.2.2.3.15."""
    r = raw_factory(broker, v5=True)
    ack = r.connect("wantresp", props=[(0x19, 1)])
    assert ack.fields["props"].get(0x1A) == "response/wantresp", ack
