"""$SYS broker statistics (Mosquitto-compatible topics), published every sys_interval seconds."""

import re
import time

import pytest

from conftest import MQTTv311, MQTTv5, TIMEOUT

SYS_CONF = ["sys_interval 1"]


def _latest(sub, topic, predicate=lambda p: True, timeout=6.0):
    """Wait for a message on ``topic`` whose payload satisfies ``predicate``; return payload."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {topic} message satisfying the condition; saw {seen}")
        m = sub.expect(timeout=remaining)
        if m.topic == topic:
            p = m.payload.decode()
            seen.append(p)
            if predicate(p):
                return p


def test_sys_broker_version_is_retained_and_nonempty(broker_factory, client_factory, version):
    """$SYS/broker/version is available at once (retained) and non-empty. Mosquitto: e.g.
    "mosquitto version 2.0.11"."""
    b = broker_factory(SYS_CONF)
    c = client_factory(b, "sysv", version)
    c.subscribe("$SYS/broker/version", 0)
    m = c.expect(timeout=3)
    assert m.retain is True
    text = m.payload.decode()
    assert "version" in text and re.search(r"\d", text), text


def test_sys_uptime_is_seconds_and_increases(broker_factory, client_factory):
    """$SYS/broker/uptime is "N seconds" and grows between publications (sys_interval 1)."""
    b = broker_factory(SYS_CONF)
    c = client_factory(b, "sysup", MQTTv311)
    c.subscribe("$SYS/broker/uptime", 0)
    first = _latest(c, "$SYS/broker/uptime", lambda p: re.fullmatch(r"\d+ seconds", p) is not None)
    n0 = int(first.split()[0])
    later = _latest(c, "$SYS/broker/uptime", lambda p: int(p.split()[0]) > n0)
    assert re.fullmatch(r"\d+ seconds", later)


def test_sys_clients_connected_tracks_connections(broker_factory, client_factory):
    """$SYS/broker/clients/connected counts connected clients and follows disconnections."""
    b = broker_factory(SYS_CONF)
    c = client_factory(b, "syscc", MQTTv311)
    c.subscribe("$SYS/broker/clients/connected", 0)
    others = [client_factory(b, f"other{i}", MQTTv5) for i in range(2)]
    _latest(c, "$SYS/broker/clients/connected", lambda p: p == "3")
    others[0].disconnect()
    _latest(c, "$SYS/broker/clients/connected", lambda p: p == "2")


@pytest.mark.parametrize("topic", [
    "$SYS/broker/clients/total",
    "$SYS/broker/clients/maximum",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/retained messages/count",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
    "$SYS/broker/publish/messages/received",
    "$SYS/broker/publish/messages/sent",
])
def test_sys_counter_topics_are_integers(broker_factory, client_factory, topic):
    """The usual Mosquitto $SYS counters exist and carry a non-negative integer."""
    b = broker_factory(SYS_CONF)
    c = client_factory(b, "syscnt", MQTTv311)
    c.subscribe(topic, 0)
    _latest(c, topic, lambda p: re.fullmatch(r"\d+", p) is not None)


def test_sys_subscription_count_reflects_subscriptions(broker_factory, client_factory):
    """$SYS/broker/subscriptions/count reaches the number of subscriptions made."""
    b = broker_factory(SYS_CONF)
    c = client_factory(b, "syssub", MQTTv311)
    for t in ("a", "b", "c"):
        c.subscribe(f"sc/{t}", 0)
    c.subscribe("$SYS/broker/subscriptions/count", 0)
    _latest(c, "$SYS/broker/subscriptions/count", lambda p: int(p) >= 4)


def test_sys_republished_periodically(broker_factory, client_factory):
    """With sys_interval 1, $SYS/broker/uptime is republished periodically (Mosquitto 2.0.11
    actually publishes every ~2 s with sys_interval 1, so the bound is loose)."""
    b = broker_factory(SYS_CONF)
    c = client_factory(b, "sysint", MQTTv311)
    c.subscribe("$SYS/broker/uptime", 0)
    _latest(c, "$SYS/broker/uptime")  # the retained/first one
    t0 = time.monotonic()
    _latest(c, "$SYS/broker/uptime", timeout=3)
    _latest(c, "$SYS/broker/uptime", timeout=3)
    assert time.monotonic() - t0 < 5.0
