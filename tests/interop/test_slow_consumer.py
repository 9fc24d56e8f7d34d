"""One stuck subscriber must not stall anybody else: real third-party clients around a
subscriber that stopped reading.

The stuck client is a raw socket with a 4 KiB receive buffer that subscribes and then never
reads again (a phone in a tunnel, a hung process): its TCP window fills at once. Beside it a
healthy ``mosquitto_sub`` reads the same topic, and a paho publisher sends N messages of
1 KiB to it. Both brokers give each subscriber its own bounded queue and drop for the full
one alone (Mosquitto's ``max_queued_messages``, Midge's ``max_queued_messages`` /
``max_queued_bytes``), so the healthy subscriber receives every message in order and the
publisher gets every acknowledgement while the stuck client's window stays full.

The tests count; nothing in them is timed. Synchronisation waits for events: the healthy
subscriber's subscription shows in ``$SYS/broker/subscriptions/count``, the stuck client's
in its SUBACK, and ``mosquitto_sub -C N`` exits once it has printed N messages.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import SUBACK, MQTTv5, TIMEOUT, subscribe_packet

N = 10_000
PAYLOAD_PAD = b"x" * (1024 - 8)
TOPIC = "slow/t"
SYS_CONF = ["sys_interval 1"]
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
# Generous bound for the whole exchange on a debug build (it takes a few seconds).
EXCHANGE_TIMEOUT = 120


def _payload(i: int) -> bytes:
    return b"%08d" % i + PAYLOAD_PAD


def _wait_sys(watcher, topic: str, accept) -> str:
    """The first value of a $SYS topic (published every sys_interval) that ``accept`` takes."""
    while True:
        m = watcher.expect(timeout=TIMEOUT + 2)
        if m.topic == topic:
            value = m.payload.decode()
            if accept(value):
                return value


def _run_with_stuck_subscriber(broker, raw_factory, client_factory, version: int, qos: int, tmp_path):
    """Runs the scenario; returns (payloads the healthy subscriber printed, number of
    publications the publisher saw completed, a $SYS watcher connected throughout)."""
    watcher = client_factory(broker, "sc-watch", MQTTv5)
    watcher.subscribe("$SYS/broker/subscriptions/count", 0)
    out_path = tmp_path / "healthy.out"
    with open(out_path, "wb") as out:
        healthy = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", broker.host, "-p", str(broker.port), "-i", "sc-healthy",
             "-V", "mqttv5" if version == MQTTv5 else "mqttv311",
             "-t", TOPIC, "-q", str(qos), "-C", str(N), "-N"],
            stdout=out, stderr=subprocess.PIPE,
        )
        try:
            # The watcher's own subscription and the healthy one.
            _wait_sys(watcher, "$SYS/broker/subscriptions/count", lambda v: int(v) >= 2)

            is5 = version == MQTTv5
            stuck = raw_factory(broker, v5=is5, rcvbuf=4096)
            assert stuck.connect("sc-stuck").fields["rc"] == 0
            stuck.send(subscribe_packet([(TOPIC, qos)], v5=is5))
            stuck.expect(SUBACK)
            # From here on the stuck client reads nothing.

            pub = client_factory(broker, "sc-pub", version)
            infos = [pub.publish(TOPIC, _payload(i), qos=qos, wait=False) for i in range(N)]
            completed = 0
            for info in infos:
                info.wait_for_publish(timeout=EXCHANGE_TIMEOUT)
                completed += info.is_published()
            healthy.wait(timeout=EXCHANGE_TIMEOUT)
        finally:
            if healthy.poll() is None:
                healthy.kill()
                healthy.wait()
    assert healthy.returncode == 0, healthy.stderr.read().decode(errors="replace")
    data = out_path.read_bytes()
    printed = [data[i:i + len(_payload(0))] for i in range(0, len(data), len(_payload(0)))]
    return printed, completed, watcher


@pytest.mark.parametrize("qos", [0, 1], ids=["qos0", "qos1"])
def test_a_stuck_subscriber_does_not_slow_the_healthy_subscriber_or_the_publisher(
        broker_factory, raw_factory, client_factory, version, qos, tmp_path):
    """With one subscriber's TCP window full, the healthy subscriber on the same topic still
    receives all N messages, in order [MQTT-4.6.0-6], and the publisher gets all N
    acknowledgements (QoS 1) or writes all N (QoS 0): nobody waits on the stuck client."""
    b = broker_factory(SYS_CONF)
    printed, completed, _ = _run_with_stuck_subscriber(b, raw_factory, client_factory, version, qos, tmp_path)
    assert completed == N, f"the publisher saw {completed} of {N} publications complete"
    assert len(printed) == N, f"the healthy subscriber got {len(printed)} of {N}"
    assert printed == [_payload(i) for i in range(N)], "messages lost or reordered for the healthy subscriber"


@pytest.mark.parametrize("qos", [0, 1], ids=["qos0", "qos1"])
def test_messages_for_a_stuck_subscriber_are_dropped_and_counted(
        broker_factory, raw_factory, client_factory, qos, tmp_path):
    """What the stuck client's queue cannot take (QoS 0 too, for a connected client) is
    dropped for it alone, and counted in $SYS/broker/publish/messages/dropped (Mosquitto's
    name; Mosquitto bounds and counts the same way)."""
    b = broker_factory(SYS_CONF)
    _, completed, watcher = _run_with_stuck_subscriber(b, raw_factory, client_factory, MQTTv5, qos, tmp_path)
    assert completed == N
    watcher.subscribe("$SYS/broker/publish/messages/dropped", 0)
    _wait_sys(watcher, "$SYS/broker/publish/messages/dropped", lambda v: int(v) > 0)
