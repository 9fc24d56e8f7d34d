#!/usr/bin/env bash
# Broker memory with many offline persistent sessions holding queued messages (issue 4,
# "bounded memory"): --sessions persistent sessions (MQTT 3.1.1, clean session 0, one
# QoS 1 subscription to one topic each, then disconnected), --messages QoS 1 messages of
# --size bytes published to that topic, so every session queues every message. Measures
# the broker's VmRSS / VmHWM (from /proc) with the sessions only, with the queues filled,
# and after a graceful restart (SIGTERM, start again on the same data dir), then drains
# one session to check its messages arrive. Results: bench/RESULTS.md, "Persistence".
#
# Usage: bench/offline-memory.sh [--midge BIN] [--sessions N] [--messages N] [--size BYTES]
#                                [--port PORT] [--out DIR]
#
# Run it once with the current build and once with an older one (`git worktree add
# /tmp/old REV`, `cargo build --release -p midge` there, `--midge /tmp/old/.../midge`) to
# compare. Every step is bounded; with the defaults it takes about a minute.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MIDGE="$ROOT/target/release/midge"
SESSIONS=10000
MESSAGES=100
SIZE=100
PORT=18873
OUT=/tmp/midge-offline-memory
while [ $# -gt 0 ]; do
    case "$1" in
        --midge) MIDGE=$(realpath "$2"); shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --messages) MESSAGES=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --port) PORT=$2; shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[ -x "$MIDGE" ] || { echo "no broker binary at $MIDGE (cargo build --release -p midge)" >&2; exit 2; }

log() { echo "offline-memory.sh: $(date -u +%H:%M:%S) $*" >&2; }

rm -rf "$OUT"
mkdir -p "$OUT"
DATA="$OUT/data"
PID=""
cleanup() { if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -9 "$PID"; fi; }
trap cleanup EXIT

start() {
    "$MIDGE" -p "$PORT" --data-dir "$DATA" >>"$OUT/broker.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        kill -0 "$PID" 2>/dev/null || { echo "broker exited; see $OUT/broker.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "broker did not listen within 60 s" >&2
    exit 1
}

stop() {
    kill -TERM "$PID"
    for _ in $(seq 1 600); do
        kill -0 "$PID" 2>/dev/null || { PID=""; return 0; }
        sleep 0.1
    done
    echo "broker did not stop within 60 s" >&2
    exit 1
}

rss() { # label
    local rss hwm
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")
    printf '%-34s VmRSS %7.1f MiB  VmHWM %7.1f MiB\n' "$1" "$(echo "$rss / 1024" | bc -l)" \
        "$(echo "$hwm / 1024" | bc -l)" | tee -a "$OUT/results.txt"
}

# A raw MQTT 3.1.1 client: enough for CONNECT, SUBSCRIBE, PUBLISH QoS 1 and reading.
client() { # mode
    python3 - "$1" "$PORT" "$SESSIONS" "$MESSAGES" "$SIZE" <<'EOF'
import socket, struct, sys, time
mode, port, sessions, messages, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
TOPIC = b"bench/offline"

def rl(n):
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)

def s16(b):
    return struct.pack(">H", len(b)) + b

def packet(first, body):
    return bytes([first]) + rl(len(body)) + body

def connect(cid, clean):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    flags = 0x02 if clean else 0x00
    s.sendall(packet(0x10, s16(b"MQTT") + bytes([4, flags]) + struct.pack(">H", 600) + s16(cid)))
    buf = Reader(s)
    t, body = buf.next()
    assert t >> 4 == 2 and body[1] == 0, f"CONNACK {body!r}"
    return s, buf

class Reader:
    def __init__(self, s):
        self.s, self.buf = s, b""
    def fill(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
    def next(self):
        self.fill(2)
        i, mult, n = 1, 1, 0
        while True:
            self.fill(i + 1)
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        self.fill(i + n)
        t, body, self.buf = self.buf[0], self.buf[i:i + n], self.buf[i + n:]
        return t, body

if mode == "sessions":
    for i in range(sessions):
        s, r = connect(f"offline-{i}".encode(), False)
        s.sendall(packet(0x82, struct.pack(">H", 1) + s16(TOPIC) + bytes([1])))
        t, _ = r.next()
        assert t >> 4 == 9
        s.sendall(bytes([0xE0, 0]))
        s.close()
elif mode == "publish":
    s, r = connect(b"offline-publisher", True)
    payload = b"x" * size
    for i in range(1, messages + 1):
        s.sendall(packet(0x32, s16(TOPIC) + struct.pack(">H", i) + payload))
        t, body = r.next()
        assert t >> 4 == 4 and struct.unpack(">H", body[:2])[0] == i
    s.sendall(bytes([0xE0, 0]))
    s.close()
elif mode == "drain":
    s, r = connect(b"offline-0", False)
    got, start = 0, time.time()
    while got < messages:
        t, body = r.next()
        if t >> 4 == 3:
            tl = struct.unpack(">H", body[:2])[0]
            pid = body[2 + tl:4 + tl]
            s.sendall(bytes([0x40, 2]) + pid)
            got += 1
    print(f"drained {got} messages of one session in {time.time() - start:.3f} s")
    s.sendall(bytes([0xE0, 0]))
    s.close()
EOF
}

log "broker: $MIDGE ($("$MIDGE" --version 2>/dev/null || echo unknown))"
log "$SESSIONS sessions x $MESSAGES messages of $SIZE bytes"
start
rss "started, empty store"
log "creating $SESSIONS persistent sessions"
client sessions
rss "$SESSIONS offline sessions, no queue"
log "publishing $MESSAGES messages"
t0=$(date +%s.%N)
client publish
t1=$(date +%s.%N)
printf 'published %d QoS 1 messages to %d sessions in %.1f s\n' "$MESSAGES" "$SESSIONS" \
    "$(echo "$t1 - $t0" | bc -l)" | tee -a "$OUT/results.txt"
rss "queues filled (running)"
log "restarting"
stop
t0=$(date +%s.%N)
start
t1=$(date +%s.%N)
printf 'restart until the port accepts: %.2f s\n' "$(echo "$t1 - $t0" | bc -l)" | tee -a "$OUT/results.txt"
rss "after restart"
client drain | tee -a "$OUT/results.txt"
rss "after draining one session"
du -sh "$DATA" | awk '{print "data dir: " $1}' | tee -a "$OUT/results.txt"
stop
log "results in $OUT/results.txt"
