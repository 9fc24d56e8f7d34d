"""MQTT 5.0 shared subscriptions ($share/{ShareName}/{filter}), §4.8.2."""

import queue

import pytest

from conftest import SUBACK, DISCONNECT, TIMEOUT, MQTTv311, MQTTv5, subscribe_packet


def test_shared_subscription_each_message_to_exactly_one_member(broker, client_factory):
    """Each message matching a shared subscription goes to exactly one member of the group.
    §4.8.2 ("each message ... is sent to only one of the Clients")."""
    members = [client_factory(broker, f"m{i}", MQTTv5) for i in range(3)]
    for m in members:
        assert m.subscribe("$share/grp/jobs/+", 1) == [1]
    common = queue.Queue()
    for m in members:
        m.messages = common  # all members' deliveries land in one queue
    pub = client_factory(broker, "jobpub", MQTTv5)
    n = 30
    for i in range(n):
        pub.publish("jobs/x", b"%02d" % i, qos=1)
    received = [common.get(timeout=TIMEOUT) for _ in range(n)]
    assert sorted(x.payload for x in received) == [b"%02d" % i for i in range(n)]
    # No extra copies: a marker sent to every member through a plain subscription arrives
    # after anything still in flight.
    for m in members:
        m.subscribe("jobs-marker", 1)
    pub.publish("jobs-marker", b"m", qos=1)
    extra = []
    markers = 0
    while markers < len(members):
        x = common.get(timeout=TIMEOUT)
        if x.topic == "jobs-marker":
            markers += 1
        else:
            extra.append(x.payload)
    assert extra == []


def test_shared_and_normal_subscriptions_both_receive(broker, client_factory):
    """A non-shared subscriber gets its copy independently of the shared group, which gets one
    copy. §4.8.2"""
    a = client_factory(broker, "sa", MQTTv5)
    b = client_factory(broker, "sb", MQTTv5)
    normal = client_factory(broker, "normal", MQTTv5)
    a.subscribe("$share/g/sn/t", 1)
    b.subscribe("$share/g/sn/t", 1)
    normal.subscribe("sn/t", 1)
    for c in (a, b):
        c.subscribe("sn-marker", 1)
    pub = client_factory(broker, "snpub", MQTTv5)
    pub.publish("sn/t", b"x", qos=1)
    pub.publish("sn-marker", b"m", qos=1)
    assert normal.expect().payload == b"x"
    shared = a.collect_until("sn-marker") + b.collect_until("sn-marker")
    assert [m.payload for m in shared] == [b"x"]


def test_two_share_groups_each_get_a_copy(broker, client_factory):
    """Different ShareNames are different groups: each group gets one copy. §4.8.2"""
    g1 = client_factory(broker, "g1", MQTTv5)
    g2 = client_factory(broker, "g2", MQTTv5)
    g1.subscribe("$share/one/sg/t", 1)
    g2.subscribe("$share/two/sg/t", 1)
    pub = client_factory(broker, "sgpub", MQTTv5)
    pub.publish("sg/t", b"x", qos=1)
    assert g1.expect().payload == b"x"
    assert g2.expect().payload == b"x"


def test_shared_subscription_topic_is_the_real_topic(broker, client_factory):
    """Messages delivered through a shared subscription carry the published Topic Name, not the
    $share filter; wildcards work inside the shared filter. [MQTT-3.3.2-3], §4.8.2."""
    c = client_factory(broker, "st", MQTTv5)
    c.subscribe("$share/g/st/#", 1)
    pub = client_factory(broker, "stpub", MQTTv5)
    pub.publish("st/deep/topic", b"x", qos=1)
    assert c.expect().topic == "st/deep/topic"


def test_unsubscribe_from_shared_subscription(broker, client_factory):
    """After a member unsubscribes from the share, the remaining member gets every message.
    §4.8.2, [MQTT-3.10.4-1]"""
    a = client_factory(broker, "ua", MQTTv5)
    b = client_factory(broker, "ub", MQTTv5)
    a.subscribe("$share/g/us/t", 1)
    b.subscribe("$share/g/us/t", 1)
    a.unsubscribe("$share/g/us/t")
    pub = client_factory(broker, "uspub", MQTTv5)
    for i in range(4):
        pub.publish("us/t", b"%d" % i, qos=1)
    assert sorted(m.payload for m in b.expect_n(4)) == [b"0", b"1", b"2", b"3"]


def test_shared_subscription_from_v311_client(broker, client_factory):
    """3.1.1 clients may use $share too (Mosquitto and Midge accept it); one copy per group."""
    a = client_factory(broker, "a311", MQTTv311)
    b = client_factory(broker, "b311", MQTTv311)
    a.subscribe("$share/g/s311/t", 1)
    b.subscribe("$share/g/s311/t", 1)
    for c in (a, b):
        c.subscribe("s311m", 1)
    pub = client_factory(broker, "p311", MQTTv311)
    pub.publish("s311/t", b"x", qos=1)
    pub.publish("s311m", b"m", qos=1)
    assert len(a.collect_until("s311m") + b.collect_until("s311m")) == 1


_LAX = pytest.mark.midge_only(reason="Mosquitto 2.0.11 grants it (as an ordinary filter)")


@pytest.mark.parametrize("flt", [pytest.param("$share/g", marks=_LAX),
                                 pytest.param("$share//t", marks=_LAX),
                                 "$share/g+/t", "$share/g#/t"])
def test_invalid_shared_subscription_filter_is_refused(broker, raw_factory, flt):
    """An invalid shared filter (no '/filter', empty ShareName, wildcard in ShareName) is not
    granted: SUBACK failure code or the connection is closed. [MQTT-4.8.2-1], [MQTT-4.8.2-2]"""
    r = raw_factory(broker, v5=True)
    r.connect("badshare")
    r.send(subscribe_packet([(flt, 1)], pid=2, v5=True))
    first = r.next_or_closed()
    assert first is None or first.type == DISCONNECT or (
        first.type == SUBACK and first.fields["codes"][0] >= 0x80), first


@pytest.mark.midge_only(reason="Mosquitto 2.0.11 sends retained messages to a new shared subscription")
def test_retained_messages_not_sent_to_shared_subscription(broker, client_factory):
    """Retained messages are sent for new Non-shared Subscriptions only (5.0 §3.3.1.3, §4.8.2);
    Midge does not send them to a new shared subscription."""
    pub = client_factory(broker, "srpub", MQTTv5)
    pub.publish("sr/t", b"retained", qos=1, retain=True)
    c = client_factory(broker, "srsub", MQTTv5)
    c.subscribe("sr-marker", 1)
    c.subscribe("$share/g/sr/t", 1)
    pub.publish("sr-marker", b"m", qos=1)
    assert c.collect_until("sr-marker") == []
