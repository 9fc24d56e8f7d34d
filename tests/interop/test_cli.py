"""Interop with the mosquitto_pub / mosquitto_sub command-line clients (libmosquitto)."""

import json
import os
import queue
import shutil
import signal
import subprocess
import threading

import pytest

from conftest import MQTTv311, MQTTv5, TIMEOUT

MOSQUITTO_PUB = shutil.which("mosquitto_pub")
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
# mosquitto_sub's stdout is block-buffered when piped; line-buffer it so that its debug lines
# (which tell when the SUBACK arrived) are seen at once.
STDBUF = [shutil.which("stdbuf"), "-oL"] if shutil.which("stdbuf") else []

pytestmark = pytest.mark.skipif(not (MOSQUITTO_PUB and MOSQUITTO_SUB),
                                reason="mosquitto_pub / mosquitto_sub not installed")


class CliSub:
    """mosquitto_sub with -d: its debug lines tell when the SUBACK arrived."""

    def __init__(self, broker, *args):
        self.lines: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            [*STDBUF, MOSQUITTO_SUB, "-d", "-h", broker.host, "-p", str(broker.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        threading.Thread(target=self._read, daemon=True).start()
        self.output: list[str] = []

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_subscribed(self):
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            assert line is not None, f"mosquitto_sub exited: {self.output}"
            self.output.append(line)
            if line.startswith("Subscribed (mid"):
                return

    def messages(self, timeout=TIMEOUT) -> list[str]:
        """Wait for exit (e.g. -C n reached) and return the non-debug output lines."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"mosquitto_sub did not finish; output so far: {self.output}")
        while True:
            line = self.lines.get(timeout=TIMEOUT)
            if line is None:
                break
            self.output.append(line)
        return [l for l in self.output if not l.startswith(("Client ", "Subscribed (mid"))]

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cli_sub():
    made = []

    def factory(broker, *args):
        s = CliSub(broker, *args)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.stop(signal.SIGKILL)


def cli_pub(broker, *args, stdin: bytes | None = None):
    r = subprocess.run([MOSQUITTO_PUB, "-h", broker.host, "-p", str(broker.port), *args],
                       input=stdin, capture_output=True, timeout=TIMEOUT * 2)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


@pytest.mark.parametrize("v", ["mqttv31", "mqttv311", "mqttv5"])
def test_cli_sub_receives_cli_pub(broker, cli_sub, v):
    """mosquitto_sub -C 1 receives what mosquitto_pub publishes, for MQTT 3.1, 3.1.1 and 5.0."""
    s = cli_sub(broker, "-C", "1", "-t", "cli/x", "-V", v)
    s.wait_subscribed()
    cli_pub(broker, "-t", "cli/x", "-m", "hello", "-V", v)
    assert s.messages() == ["hello"]


def test_cli_qos2_both_ways(broker, cli_sub):
    """QoS 2 end to end between the command-line clients: delivered once, at QoS 2."""
    s = cli_sub(broker, "-C", "1", "-t", "cli/q2", "-q", "2", "-F", "%q %p", "-V", "mqttv311")
    s.wait_subscribed()
    cli_pub(broker, "-t", "cli/q2", "-m", "exactly-once", "-q", "2", "-V", "mqttv311")
    assert s.messages() == ["2 exactly-once"]


def test_cli_retained_message(broker, cli_sub):
    """mosquitto_pub -r stores a retained message; a later mosquitto_sub gets it with retain 1."""
    cli_pub(broker, "-t", "cli/ret", "-m", "kept", "-r", "-q", "1")
    s = cli_sub(broker, "-C", "1", "-t", "cli/ret", "-F", "%r %p")
    assert s.messages() == ["1 kept"]


def test_cli_null_retained_clears(broker, cli_sub, client_factory):
    """mosquitto_pub -r -n (zero-length retained) clears the retained message. [MQTT-3.3.1-10]"""
    cli_pub(broker, "-t", "cli/clr", "-m", "doomed", "-r", "-q", "1")
    cli_pub(broker, "-t", "cli/clr", "-n", "-r", "-q", "1")
    c = client_factory(broker, "clrchk", MQTTv311)
    c.subscribe("cli/clr-marker", 1)
    c.subscribe("cli/clr", 1)
    c.publish("cli/clr-marker", b"m", qos=1)
    assert c.collect_until("cli/clr-marker") == []


def test_cli_v5_properties_reach_paho_subscriber(broker, client_factory):
    """mosquitto_pub -V 5 -D publish ... properties reach a paho 5.0 subscriber unaltered.
    [MQTT-3.3.2-4], [MQTT-3.3.2-15..18], [MQTT-3.3.2-20]"""
    c = client_factory(broker, "clipropsub", MQTTv5)
    c.subscribe("cli/props", 1)
    cli_pub(broker, "-V", "5", "-t", "cli/props", "-m", "with-props", "-q", "1",
            "-D", "publish", "user-property", "k1", "v1",
            "-D", "publish", "user-property", "k2", "v2",
            "-D", "publish", "content-type", "text/plain",
            "-D", "publish", "correlation-data", "corr-123",
            "-D", "publish", "response-topic", "cli/reply",
            "-D", "publish", "payload-format-indicator", "1",
            "-D", "publish", "message-expiry-interval", "60")
    m = c.expect()
    p = m.properties
    assert m.payload == b"with-props"
    assert p.UserProperty == [("k1", "v1"), ("k2", "v2")]
    assert p.ContentType == "text/plain"
    assert p.CorrelationData == b"corr-123"
    assert p.ResponseTopic == "cli/reply"
    assert p.PayloadFormatIndicator == 1
    assert 58 <= p.MessageExpiryInterval <= 60


def test_cli_sub_v5_shows_properties_from_paho(broker, cli_sub, client_factory):
    """mosquitto_sub -V 5 (JSON output) sees the properties a paho 5.0 client published."""
    from conftest import pub_props
    s = cli_sub(broker, "-V", "5", "-C", "1", "-t", "cli/json", "-F", "%j")
    s.wait_subscribed()
    c = client_factory(broker, "clijsonpub", MQTTv5)
    c.publish("cli/json", b"j", qos=1, properties=pub_props(
        ContentType="application/x", ResponseTopic="cli/r", UserProperty=[("a", "b")]))
    out = s.messages()
    assert len(out) == 1
    j = json.loads(out[0])
    assert j["topic"] == "cli/json" and j["payload"] == "j"
    assert j["properties"]["content-type"] == "application/x"
    assert j["properties"]["response-topic"] == "cli/r"
    assert j["properties"]["user-properties"] == {"a": "b"}


def test_cli_pub_lines_arrive_in_order(broker, cli_sub):
    """mosquitto_pub -l sends one message per stdin line; they arrive in order.
    [MQTT-4.6.0-5]"""
    s = cli_sub(broker, "-C", "5", "-t", "cli/lines", "-q", "1")
    s.wait_subscribed()
    cli_pub(broker, "-t", "cli/lines", "-l", "-q", "1", stdin=b"one\ntwo\nthree\nfour\nfive\n")
    assert s.messages() == ["one", "two", "three", "four", "five"]


def test_paho_binary_payload_to_cli_sub(broker, cli_sub, client_factory):
    """A binary payload from paho reaches mosquitto_sub byte for byte (hex output)."""
    s = cli_sub(broker, "-C", "1", "-t", "cli/bin", "-F", "%x")
    s.wait_subscribed()
    c = client_factory(broker, "clibin", MQTTv311)
    c.publish("cli/bin", bytes(range(256)), qos=1)
    assert s.messages() == [bytes(range(256)).hex()]


def test_cli_pub_to_paho_subscriber_v311(broker, client_factory):
    """mosquitto_pub (3.1.1, QoS 1) to a paho 3.1.1 subscriber."""
    c = client_factory(broker, "clisub311", MQTTv311)
    c.subscribe("cli/p", 1)
    cli_pub(broker, "-t", "cli/p", "-m", "from-cli", "-q", "1", "-V", "mqttv311")
    m = c.expect()
    assert (m.payload, m.qos) == (b"from-cli", 1)


def test_cli_sub_will_published_when_killed(broker, cli_sub, client_factory):
    """A mosquitto_sub with --will-* that is killed (no DISCONNECT) gets its Will published.
    [MQTT-3.1.2-8]"""
    c = client_factory(broker, "cliwill", MQTTv311)
    c.subscribe("cli/will", 1)
    s = cli_sub(broker, "-t", "cli/nothing", "--will-topic", "cli/will",
                "--will-payload", "cli-died", "--will-qos", "1")
    s.wait_subscribed()
    s.stop(signal.SIGKILL)
    assert c.expect().payload == b"cli-died"


@pytest.mark.parametrize("v", ["mqttv311", "mqttv5"])
def test_cli_persistent_session_gets_queued_message(broker, cli_sub, client_factory, v):
    """mosquitto_sub -c (clean session off; 5.0 with -x session expiry) receives a QoS 1
    message published while it was away. [MQTT-3.1.2-5] (3.1.1), [MQTT-3.1.2-23] (5.0)."""
    extra = ["-x", "300"] if v == "mqttv5" else []
    first = cli_sub(broker, "-V", v, "-c", "-i", "cli-persist", "-q", "1", "-t", "cli/persist", "-E", *extra)
    first.messages()  # -E: exits once subscribed
    c = client_factory(broker, "cli-persist-pub", MQTTv311)
    c.publish("cli/persist", b"while-away", qos=1)
    second = cli_sub(broker, "-V", v, "-c", "-i", "cli-persist", "-q", "1", "-t", "cli/persist",
                     "-C", "1", *extra)
    assert second.messages() == ["while-away"]
