#!/usr/bin/env python3
"""A subscriber that stops reading: the "phone in a tunnel" of bench/slow-consumer.sh.

Connects (MQTT 3.1.1, clean session, keep-alive 0 so that the broker never times it out),
subscribes to TOPIC at QOS with a 4 KiB receive buffer, prints "subscribed" once the
SUBACK is in, then reads nothing more until it is killed or SECONDS pass.
Usage: stuck_subscriber.py PORT TOPIC QOS SECONDS
"""
import socket
import sys
import time


def packet(kind: int, body: bytes) -> bytes:
    """A fixed header (remaining length as MQTT's variable-length integer) and `body`."""
    n, length = len(body), bytearray()
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes([kind]) + bytes(length) + body


def string(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def read_packet(sock: socket.socket) -> int:
    """Reads one packet; returns its type byte."""
    head = sock.recv(1, socket.MSG_WAITALL)
    if not head:
        raise SystemExit("broker closed the connection")
    multiplier, remaining = 1, 0
    while True:
        byte = sock.recv(1, socket.MSG_WAITALL)[0]
        remaining += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    if remaining:
        sock.recv(remaining, socket.MSG_WAITALL)
    return head[0]


def main() -> None:
    port, topic, qos, seconds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    connect = string("MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big") + string(f"stuck{port}")
    sock.sendall(packet(0x10, connect))
    if read_packet(sock) != 0x20:
        raise SystemExit("no CONNACK")
    sock.sendall(packet(0x82, (1).to_bytes(2, "big") + string(topic) + bytes([qos])))
    while read_packet(sock) != 0x90:
        pass
    print("subscribed", flush=True)
    time.sleep(seconds)


if __name__ == "__main__":
    main()
