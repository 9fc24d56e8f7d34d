"""Harness for the Midge end-to-end interoperability and conformance suite.

Every test starts its own broker process on a free loopback port:

* ``MQTT_BROKER=midge`` (the default) runs ``$MIDGE_BIN -c <conf>``
  (``MIDGE_BIN`` defaults to ``<repo>/target/debug/midge``);
* ``MQTT_BROKER=mosquitto`` runs ``mosquitto -c <conf>`` (``MOSQUITTO_BIN`` overrides the path).

Both read the same ``mosquitto.conf``.  Tests marked ``midge_only`` check a choice where
Midge legitimately differs from Mosquitto; they are skipped only when
``MQTT_BROKER=mosquitto`` (set ``INTEROP_RUN_MIDGE_ONLY=1`` to run them there anyway, to see
what Mosquitto does).

Synchronisation is done with queues and events that have timeouts, never with sleeps.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
BROKER_KIND = os.environ.get("MQTT_BROKER", "midge").strip().lower()
IS_MOSQUITTO = BROKER_KIND == "mosquitto"
IS_MIDGE = BROKER_KIND == "midge"
MIDGE_BIN = os.environ.get("MIDGE_BIN", str(REPO_ROOT / "target" / "debug" / "midge"))
MOSQUITTO_BIN = os.environ.get("MOSQUITTO_BIN") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"
RUN_MIDGE_ONLY_EVERYWHERE = os.environ.get("INTEROP_RUN_MIDGE_ONLY") == "1"

# Default time to wait for something that is expected to happen.
TIMEOUT = float(os.environ.get("INTEROP_TIMEOUT", "5"))
# Bounded wait used ONLY where no later event can prove that something did not happen
# (each use says why in a comment).
QUIET = 0.5

MQTTv311 = mqtt.MQTTv311
MQTTv5 = mqtt.MQTTv5
MQTTv31 = mqtt.MQTTv31


# --------------------------------------------------------------------------- pytest hooks


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "midge_only: Midge's documented behaviour differs from Mosquitto's where the "
        "specification leaves a choice; skipped when MQTT_BROKER=mosquitto",
    )


def pytest_report_header(config):
    exe = MOSQUITTO_BIN if IS_MOSQUITTO else MIDGE_BIN
    return f"interop broker: {BROKER_KIND} ({exe})"


def pytest_collection_modifyitems(config, items):
    if not IS_MOSQUITTO or RUN_MIDGE_ONLY_EVERYWHERE:
        return
    for item in items:
        m = item.get_closest_marker("midge_only")
        if m is not None:
            why = m.kwargs.get("reason") or (m.args[0] if m.args else "")
            item.add_marker(pytest.mark.skip(reason=f"midge_only: Mosquitto differs: {why}".rstrip(": ")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for i, b in enumerate(getattr(item, "_interop_brokers", [])):
            rep.sections.append((f"broker {i} log ({b.log_path})", b.read_log()))


# --------------------------------------------------------------------------- the broker


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """One broker process listening on 127.0.0.1:port."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, extra_conf_lines: Iterable[str] = ()):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra_conf_lines = list(extra_conf_lines)
        self.port = free_port()
        self.conf_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "broker.log"
        self.proc: subprocess.Popen | None = None

    def conf_text(self) -> str:
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", *self.extra_conf_lines]
        return "\n".join(lines) + "\n"

    def command(self) -> list[str]:
        if IS_MOSQUITTO:
            return [MOSQUITTO_BIN, "-c", str(self.conf_path)]
        if IS_MIDGE:
            return [MIDGE_BIN, "-c", str(self.conf_path)]
        raise RuntimeError(f"MQTT_BROKER must be 'midge' or 'mosquitto', not {BROKER_KIND!r}")

    def start(self, ready_timeout: float = 10.0) -> "Broker":
        self.conf_path.write_text(self.conf_text())
        cmd = self.command()
        if not Path(cmd[0]).exists():
            pytest.fail(f"broker binary not found: {cmd[0]} (build it or set MIDGE_BIN / MQTT_BROKER)")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"broker exited early with code {self.proc.returncode}:\n{self.read_log()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"broker did not accept connections within {ready_timeout}s")
                time.sleep(0.02)  # polling interval of the readiness loop, not synchronisation

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
        self.proc = None
        self._log.close()

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"<no log: {e}>"


@pytest.fixture
def broker_factory(tmp_path, request):
    """``broker_factory(extra_conf_lines=[...])`` starts a broker with extra config lines."""
    started: list[Broker] = []
    request.node._interop_brokers = started

    def factory(extra_conf_lines: Iterable[str] = ()) -> Broker:
        b = Broker(tmp_path / f"broker{len(started)}", extra_conf_lines)
        started.append(b)
        return b.start()

    yield factory
    for b in started:
        b.stop()


@pytest.fixture
def broker(broker_factory) -> Broker:
    return broker_factory()


@pytest.fixture(params=[MQTTv311, MQTTv5], ids=["v311", "v5"])
def version(request) -> int:
    """Protocol version for tests whose behaviour exists in both MQTT 3.1.1 and 5.0."""
    return request.param


# --------------------------------------------------------------------------- paho helpers


@dataclass
class Connack:
    session_present: bool
    reason_code: int
    properties: Any


class TestClient:
    """A paho client (v2 callback API) whose events land in queues.

    Named TestClient for readability; ``__test__ = False`` keeps pytest from collecting it.
    """

    __test__ = False

    def __init__(
        self,
        broker: Broker,
        client_id: str = "",
        protocol: int = MQTTv5,
        clean: bool = True,
        keepalive: int = 60,
        properties: Properties | None = None,
        will: dict | None = None,
        auto_ack: bool = True,
    ):
        self.broker = broker
        self.protocol = protocol
        self.client_id = client_id
        self.clean = clean
        self.keepalive = keepalive
        self.connect_properties = properties
        # No automatic reconnection: a test reconnects explicitly (and an auto-reconnecting
        # client would fight a takeover test's second client for the ClientId).
        kwargs = dict(client_id=client_id, protocol=protocol, reconnect_on_failure=False)
        if protocol != MQTTv5:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kwargs)
        if not auto_ack:
            self.c.manual_ack_set(True)
        if will:
            self.c.will_set(**will)
        self.messages: queue.Queue = queue.Queue()
        self.connacks: queue.Queue = queue.Queue()
        self.subacks: dict[int, queue.Queue] = {}
        self.unsubacks: dict[int, queue.Queue] = {}
        self.published: dict[int, threading.Event] = {}
        self.disconnects: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe
        self.c.on_publish = self._on_publish
        self.c.on_disconnect = self._on_disconnect
        self._loop_started = False

    # callbacks (paho's network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connacks.put(Connack(bool(flags.session_present), int(reason_code.value), properties))

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _q(self, d, mid):
        with self._lock:
            return d.setdefault(mid, queue.Queue())

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._q(self.subacks, mid).put([int(rc.value) for rc in reason_codes])

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        self._q(self.unsubacks, mid).put([int(rc.value) for rc in reason_codes])

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            ev = self.published.setdefault(mid, threading.Event())
        ev.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnects.put((int(reason_code.value), properties))

    # actions
    def connect(self, expect_rc: int | None = 0, clean_start: bool | None = None) -> Connack:
        if self._loop_started:
            self.c.loop_stop()
            self._loop_started = False
        if self.protocol == MQTTv5:
            cs = self.clean if clean_start is None else clean_start
            self.c.connect(
                self.broker.host, self.broker.port, self.keepalive,
                clean_start=cs, properties=self.connect_properties,
            )
        else:
            self.c.connect(self.broker.host, self.broker.port, self.keepalive)
        self.c.loop_start()
        self._loop_started = True
        ack = self.connacks.get(timeout=TIMEOUT)
        if expect_rc is not None:
            assert ack.reason_code == expect_rc, f"CONNACK reason {ack.reason_code:#x}"
        return ack

    def subscribe(self, topic, qos: int = 0, options: SubscribeOptions | None = None,
                  properties: Properties | None = None) -> list[int]:
        if self.protocol == MQTTv5:
            opts = options or SubscribeOptions(qos=qos)
            rc, mid = self.c.subscribe(topic, options=opts, properties=properties)
        else:
            rc, mid = self.c.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._q(self.subacks, mid).get(timeout=TIMEOUT)

    def unsubscribe(self, topic) -> list[int]:
        rc, mid = self.c.unsubscribe(topic)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        return self._q(self.unsubacks, mid).get(timeout=TIMEOUT)

    def publish(self, topic, payload=b"", qos: int = 0, retain: bool = False,
                properties: Properties | None = None, wait: bool = True):
        """Publish; with ``wait`` block until the flow completes (QoS 0: written to the socket)."""
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        if wait:
            with self._lock:
                ev = self.published.setdefault(info.mid, threading.Event())
            assert ev.wait(TIMEOUT), f"publish of {topic!r} (qos {qos}) did not complete"
        return info

    def expect(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.client_id or 'client'}: no message within {timeout}s") from None

    def expect_n(self, n: int, timeout: float = TIMEOUT) -> list:
        return [self.expect(timeout) for _ in range(n)]

    def collect_until(self, marker_topic: str, timeout: float = TIMEOUT) -> list:
        """Return messages received before the one on ``marker_topic`` (which is consumed).

        Used to show that something did NOT arrive: a marker published afterwards on the
        same path proves that anything before it would already have been delivered.
        """
        got = []
        while True:
            m = self.expect(timeout)
            if m.topic == marker_topic:
                return got
            got.append(m)

    def collect_until_payload(self, marker_payload: bytes, timeout: float = TIMEOUT) -> list:
        """Like :meth:`collect_until`, with the marker recognised by its payload (same topic)."""
        got = []
        while True:
            m = self.expect(timeout)
            if m.payload == marker_payload:
                return got
            got.append(m)

    def assert_no_message(self):
        assert self.messages.empty(), [(m.topic, m.payload) for m in list(self.messages.queue)]

    def expect_disconnect(self, timeout: float = TIMEOUT):
        try:
            return self.disconnects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("client was not disconnected") from None

    def disconnect(self, reasoncode=None, properties=None):
        if reasoncode is not None:
            from paho.mqtt.reasoncodes import ReasonCode
            rc = ReasonCode(PacketTypes.DISCONNECT, identifier=reasoncode)
            self.c.disconnect(reasoncode=rc, properties=properties)
        else:
            self.c.disconnect(properties=properties)
        try:
            self.disconnects.get(timeout=TIMEOUT)
        except queue.Empty:
            pass

    def close(self):
        try:
            self.c.disconnect()
        except Exception:
            pass
        if self._loop_started:
            self.c.loop_stop()
            self._loop_started = False

    def kill(self):
        """Drop the TCP connection without DISCONNECT (an abrupt close)."""
        sock = self.c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes paho's network thread, which then exits
            except OSError:
                pass
        self.c.loop_stop()
        self._loop_started = False
        if sock is not None:
            sock.close()


@pytest.fixture
def client_factory():
    """``client_factory(broker, client_id, protocol=..., clean=..., connect=True, ...)``.

    Returns a connected :class:`TestClient` (unless ``connect=False``); all are closed at
    teardown.
    """
    made: list[TestClient] = []

    def factory(broker: Broker, client_id: str = "", protocol: int = MQTTv5, *,
                connect: bool = True, expect_rc: int | None = 0, **kw) -> TestClient:
        c = TestClient(broker, client_id, protocol, **kw)
        made.append(c)
        if connect:
            c.connect(expect_rc=expect_rc)
        return c

    yield factory
    for c in made:
        c.close()


def props(packet_type, **values) -> Properties:
    """``props(PacketTypes.PUBLISH, MessageExpiryInterval=5)``."""
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def pub_props(**values) -> Properties:
    return props(PacketTypes.PUBLISH, **values)


def connect_props(**values) -> Properties:
    return props(PacketTypes.CONNECT, **values)


def sub_props(**values) -> Properties:
    return props(PacketTypes.SUBSCRIBE, **values)


def prop(msg_or_props, name, default=None):
    p = getattr(msg_or_props, "properties", msg_or_props)
    if p is None:
        return default
    return getattr(p, name, default)


# --------------------------------------------------------------------------- raw MQTT over a socket

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

# Property identifiers (MQTT 5.0 section 2.2.2.2)
P_PAYLOAD_FORMAT = 0x01
P_MESSAGE_EXPIRY = 0x02
P_CONTENT_TYPE = 0x03
P_RESPONSE_TOPIC = 0x08
P_CORRELATION_DATA = 0x09
P_SUBSCRIPTION_ID = 0x0B
P_SESSION_EXPIRY = 0x11
P_ASSIGNED_CLIENT_ID = 0x12
P_SERVER_KEEP_ALIVE = 0x13
P_REASON_STRING = 0x1F
P_RECEIVE_MAXIMUM = 0x21
P_TOPIC_ALIAS_MAXIMUM = 0x22
P_TOPIC_ALIAS = 0x23
P_MAXIMUM_QOS = 0x24
P_RETAIN_AVAILABLE = 0x25
P_USER_PROPERTY = 0x26
P_MAXIMUM_PACKET_SIZE = 0x27

_PROP_KIND = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}


def enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def enc_str(s) -> bytes:
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def enc_props(items: list[tuple[int, Any]] | None) -> bytes:
    """Encode a property list ``[(id, value), ...]`` with its length prefix."""
    body = bytearray()
    for pid, val in items or []:
        kind = _PROP_KIND[pid]
        body += enc_varint(pid)
        if kind == "byte":
            body += struct.pack("!B", val)
        elif kind == "u16":
            body += struct.pack("!H", val)
        elif kind == "u32":
            body += struct.pack("!I", val)
        elif kind == "varint":
            body += enc_varint(val)
        elif kind in ("str", "bin"):
            body += enc_str(val)
        elif kind == "pair":
            body += enc_str(val[0]) + enc_str(val[1])
    return enc_varint(len(body)) + bytes(body)


def dec_props(data: bytes, pos: int) -> tuple[dict, int]:
    """Decode a property list at ``pos``; returns ({id: value or [values]}, new pos)."""
    length, pos = dec_varint(data, pos)
    end = pos + length
    out: dict = {}
    while pos < end:
        pid, pos = dec_varint(data, pos)
        kind = _PROP_KIND.get(pid)
        if kind == "byte":
            val = data[pos]; pos += 1
        elif kind == "u16":
            val = struct.unpack_from("!H", data, pos)[0]; pos += 2
        elif kind == "u32":
            val = struct.unpack_from("!I", data, pos)[0]; pos += 4
        elif kind == "varint":
            val, pos = dec_varint(data, pos)
        elif kind in ("str", "bin"):
            n = struct.unpack_from("!H", data, pos)[0]
            val = bytes(data[pos + 2: pos + 2 + n]); pos += 2 + n
            if kind == "str":
                val = val.decode()
        elif kind == "pair":
            n = struct.unpack_from("!H", data, pos)[0]
            k = data[pos + 2: pos + 2 + n].decode(); pos += 2 + n
            n = struct.unpack_from("!H", data, pos)[0]
            v = data[pos + 2: pos + 2 + n].decode(); pos += 2 + n
            val = (k, v)
        else:
            raise ValueError(f"unknown property {pid:#x}")
        if pid in (P_USER_PROPERTY, P_SUBSCRIPTION_ID):
            out.setdefault(pid, []).append(val)
        else:
            out[pid] = val
    return out, end


def dec_varint(data: bytes, pos: int) -> tuple[int, int]:
    mult, val = 1, 0
    while True:
        b = data[pos]
        pos += 1
        val += (b & 0x7F) * mult
        if not b & 0x80:
            return val, pos
        mult *= 128


def packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + enc_varint(len(body)) + body


def connect_packet(client_id: str = "raw", *, level: int = 4, clean: bool = True, keepalive: int = 60,
                   props: list | None = None, will: tuple | None = None, will_qos: int = 0,
                   will_retain: bool = False, will_props: list | None = None,
                   reserved_flag: bool = False, username: str | None = None,
                   password: bytes | None = None, protocol_name: str | None = None) -> bytes:
    """Build a CONNECT. ``level`` 3 = MQTT 3.1 ("MQIsdp"), 4 = 3.1.1, 5 = 5.0.

    ``will`` is ``(topic, payload)``.
    """
    name = protocol_name or ("MQIsdp" if level == 3 else "MQTT")
    flags = 0
    if reserved_flag:
        flags |= 0x01
    if clean:
        flags |= 0x02
    if will is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None:
        flags |= 0x80
    body = enc_str(name) + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        body += enc_props(props)
    body += enc_str(client_id)
    if will is not None:
        if level == 5:
            body += enc_props(will_props)
        body += enc_str(will[0]) + enc_str(will[1])
    if username is not None:
        body += enc_str(username)
    if password is not None:
        body += enc_str(password)
    return packet(CONNECT, 0, body)


def publish_packet(topic, payload: bytes = b"", *, qos: int = 0, retain: bool = False, dup: bool = False,
                   pid: int = 1, v5: bool = False, props: list | None = None) -> bytes:
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    body = enc_str(topic)
    if qos:
        body += struct.pack("!H", pid)
    if v5:
        body += enc_props(props)
    return packet(PUBLISH, flags, body + payload)


def subscribe_packet(topics: list[tuple[str, int]], *, pid: int = 1, v5: bool = False,
                     props: list | None = None, flags: int = 0x02) -> bytes:
    body = struct.pack("!H", pid)
    if v5:
        body += enc_props(props)
    for t, opts in topics:
        body += enc_str(t) + bytes([opts])
    return packet(SUBSCRIBE, flags, body)


def ack_packet(ptype: int, pid: int, *, reason: int | None = None) -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP (PUBREL gets its mandatory flags 0b0010)."""
    body = struct.pack("!H", pid)
    if reason is not None:
        body += bytes([reason])
    return packet(ptype, 0x02 if ptype == PUBREL else 0, body)


PINGREQ_PACKET = packet(PINGREQ, 0, b"")
DISCONNECT_PACKET = packet(DISCONNECT, 0, b"")


@dataclass
class Packet:
    type: int
    flags: int
    body: bytes
    v5: bool = False
    fields: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return PacketTypes.Names[self.type] if self.type < len(PacketTypes.Names) else str(self.type)

    def __repr__(self):
        return f"<{self.name} flags={self.flags:#x} {self.fields} body={self.body[:40]!r}>"


class Closed(Exception):
    pass


class RawClient:
    """A blocking TCP connection that speaks hand-made MQTT packets."""

    def __init__(self, broker: Broker, v5: bool = False, rcvbuf: int | None = None):
        self.v5 = v5
        if rcvbuf is None:
            self.sock = socket.create_connection((broker.host, broker.port), timeout=TIMEOUT)
        else:
            # Set before connecting, so that the advertised window is this small from the
            # start (a client that stops reading then fills it at once).
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect((broker.host, broker.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, n: int, deadline: float):
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("timed out waiting for a packet")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                raise Closed()
            self.buf += chunk

    def recv_packet(self, timeout: float = TIMEOUT) -> Packet:
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        # remaining length: up to 4 bytes
        i, mult, length = 1, 1, 0
        while True:
            self._fill(i + 1, deadline)
            b = self.buf[i]
            length += (b & 0x7F) * mult
            i += 1
            if not b & 0x80:
                break
            mult *= 128
        self._fill(i + length, deadline)
        head, body = self.buf[0], self.buf[i:i + length]
        self.buf = self.buf[i + length:]
        p = Packet(head >> 4, head & 0x0F, body, self.v5)
        self._parse(p)
        return p

    def _parse(self, p: Packet):
        b, f = p.body, p.fields
        if p.type == CONNACK:
            f["session_present"] = bool(b[0] & 1)
            f["rc"] = b[1]
            if self.v5 and len(b) > 2:
                f["props"], _ = dec_props(b, 2)
        elif p.type == PUBLISH:
            n = struct.unpack_from("!H", b, 0)[0]
            f["topic"] = b[2:2 + n].decode()
            pos = 2 + n
            f["qos"] = (p.flags >> 1) & 3
            f["retain"] = bool(p.flags & 1)
            f["dup"] = bool(p.flags & 8)
            if f["qos"]:
                f["pid"] = struct.unpack_from("!H", b, pos)[0]
                pos += 2
            if self.v5:
                f["props"], pos = dec_props(b, pos)
            f["payload"] = bytes(b[pos:])
        elif p.type in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, SUBACK):
            f["pid"] = struct.unpack_from("!H", b, 0)[0]
            pos = 2
            if p.type == SUBACK:
                if self.v5:
                    f["props"], pos = dec_props(b, pos)
                f["codes"] = list(b[pos:])
            elif len(b) > 2:
                f["rc"] = b[2]
        elif p.type == DISCONNECT:
            f["rc"] = b[0] if b else 0
            if self.v5 and len(b) > 1:
                f["props"], _ = dec_props(b, 1)

    def expect(self, ptype: int, timeout: float = TIMEOUT) -> Packet:
        p = self.recv_packet(timeout)
        assert p.type == ptype, f"expected {PacketTypes.Names[ptype]}, got {p!r}"
        return p

    def connect(self, client_id: str = "raw", **kw) -> Packet:
        kw.setdefault("level", 5 if self.v5 else 4)
        self.send(connect_packet(client_id, **kw))
        ack = self.expect(CONNACK)
        return ack

    def wait_closed(self, timeout: float = TIMEOUT) -> list[Packet]:
        """Wait until the broker closes the connection; returns packets received before that."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s; got {got}")
            try:
                got.append(self.recv_packet(remaining))
            except Closed:
                return got
            except socket.timeout:
                raise AssertionError(f"connection still open after {timeout}s; got {got}") from None
            except OSError:
                return got

    def next_or_closed(self, timeout: float = TIMEOUT) -> "Packet | None":
        """The next packet, or None if the broker closes the connection first."""
        try:
            return self.recv_packet(timeout)
        except (Closed, ConnectionError):
            return None

    def is_open_after(self, quiet: float) -> bool:
        """True if nothing closes the connection within ``quiet`` seconds (packets are kept)."""
        try:
            self._fill(len(self.buf) + 1, time.monotonic() + quiet)
            return True
        except socket.timeout:
            return True
        except (Closed, OSError):
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def raw_factory():
    made: list[RawClient] = []

    def factory(broker: Broker, v5: bool = False, rcvbuf: int | None = None) -> RawClient:
        r = RawClient(broker, v5, rcvbuf)
        made.append(r)
        return r

    yield factory
    for r in made:
        r.close()


def v5(version: int) -> bool:
    return version == MQTTv5
