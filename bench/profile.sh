#!/usr/bin/env bash
# Profiles Midge's publish path: for each scenario, starts a broker pinned to CPU 0, runs the
# load (`midge bench pubsub`) pinned to CPU 1, samples the broker with `perf record` (cpu-clock,
# DWARF call graphs) in the middle of the run, and writes a flame graph, a folded-stack file,
# a CPU breakdown by category and the broker's context switches per message. With
# `--strace`, the latency scenario also gets a 10 s `strace -c -f` window (syscalls per
# message), for Midge and for Mosquitto. Results and their reading: docs/design/profile.md.
#
#   bench/profile.sh [--only REGEX] [--duration S] [--freq HZ] [--out DIR] [--midge BIN]
#                    [--strace] [--no-svg]
#
# Needs perf, taskset, python3, and inferno (`cargo install inferno`) for the SVGs.
# Output (default /tmp/midge-profile): per scenario NAME.folded, NAME.categories.txt,
# NAME.top.txt, NAME.bench.json, NAME.stat.txt and NAME.svg.
set -euo pipefail
set -f  # scenario arguments hold `#` and `%i`, never globs

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ONLY=.
DURATION=25       # seconds of samples per scenario
WARMUP=3          # seconds of load before sampling starts
FREQ=499          # samples per second
OUT=/tmp/midge-profile
MIDGE=""
STRACE=0
SVG=1
while [ $# -gt 0 ]; do
    case "$1" in
        --only) ONLY=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --freq) FREQ=$2; shift ;;
        --out) OUT=$2; shift ;;
        --midge) MIDGE=$(realpath "$2"); shift ;;
        --strace) STRACE=1 ;;
        --no-svg) SVG=0 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "profile.sh: $*" >&2; }

for tool in perf taskset python3; do
    command -v "$tool" >/dev/null || { log "$tool is missing (apt-get install linux-perf util-linux python3)"; exit 1; }
done
if [ "$SVG" = 1 ] && ! command -v inferno-flamegraph >/dev/null; then
    log "inferno-flamegraph is missing: cargo install inferno (or pass --no-svg)"
    exit 1
fi

if [ -z "$MIDGE" ]; then
    # Full debug info for inlined frames; a target dir of its own so the shared one keeps
    # the normal release build.
    log "building midge (release, debug = true)"
    (cd "$ROOT" && CARGO_PROFILE_RELEASE_DEBUG=true CARGO_TARGET_DIR="$ROOT/target/profiling" \
        cargo build --release -q -p midge --bin midge)
    MIDGE="$ROOT/target/profiling/release/midge"
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/midge-profile.XXXXXX)
BROKER_PID=""
LOAD_PID=""
cleanup() {
    if [ -n "$LOAD_PID" ]; then kill "$LOAD_PID" 2>/dev/null || true; fi
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        port_in_use "$p" || { echo "$p"; return; }
    done
}

# start_broker midge|mosquitto PERSIST(0|1): broker on CPU 0; sets BROKER_PID and PORT.
start_broker() {
    local name=$1 persist=$2 i
    PORT=$(free_port)
    case "$name" in
        midge)
            local store=(--no-persistence)
            [ "$persist" = 1 ] && store=(--data-dir "$WORK/data-$PORT")
            RUST_LOG=warn taskset -c 0 "$MIDGE" -p "$PORT" "${store[@]}" 2>>"$WORK/broker.log" &
            ;;
        mosquitto)
            printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type error\n' \
                "$PORT" >"$WORK/mosquitto.conf"
            taskset -c 0 "$MOSQUITTO" -c "$WORK/mosquitto.conf" 2>>"$WORK/broker.log" &
            ;;
    esac
    BROKER_PID=$!
    for i in $(seq 1 1000); do
        port_in_use "$PORT" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.01
    done
    log "$name did not start:"; tail -20 "$WORK/broker.log" >&2; exit 1
}

stop_broker() {
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

broker_cpu_s() {
    awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$BROKER_PID/stat"
}

# --- scenarios: name|persistence|midge bench pubsub arguments (%D = seconds) ----------------
# The load runs WARMUP + DURATION + 2 s, so sampling sees steady state only.
SCENARIOS=(
    "fanin_q0|0|--pubs 8 --subs 1 --pub-topic bench/%i --sub-topic bench/# -q 0 -s 64 --duration %D"
    "fanin_q1|0|--pubs 8 --subs 1 --pub-topic bench/%i --sub-topic bench/# -q 1 -s 64 --duration %D"
    "fanout_q0|0|--pubs 1 --subs 1000 --pub-topic bench/fan --sub-topic bench/fan -q 0 -s 64 --rate 2000 --duration %D"
    "latency_q1_10k|0|--pubs 100 --subs 100 --pub-topic bench/%i --sub-topic bench/%i -q 1 -s 64 --rate 100 --duration %D"
    # `midge bench` connects with clean start, and a clean session never touches the store:
    # the store's share needs a persistent subscriber (`midge sub -c`, QoS 1), so this one
    # is `midge bench pub` (8 publishers) with that subscriber beside it.
    "fanin_q1_store|1|pub -c 8 -t bench/%i -q 1 -s 64 --duration %D"
)

# Folded stacks (weights in ns of cpu-clock) -> CPU share by category. Time inside the kernel
# goes to the system call it serves (from the root side: read, write, epoll_wait, futex, ...);
# user time goes to the first frame from the leaf up that matches a rule (memcpy, bytes and
# std frames match none, so they count for their caller). Two extra lines: the share of
# samples inside a wake-up of a socket reader (sock_def_readable, try_to_wake_up) and inside
# a context switch.
categorize() {
    python3 - "$1" <<'EOF'
import re, sys
syscalls = [
    ("syscall: write/writev/send", r"write|send"),
    ("syscall: read/recv", r"read|recv"),
    ("syscall: epoll_wait (tokio I/O driver parked)", r"epoll"),
    ("syscall: futex (thread park/unpark)", r"futex"),
]
user = [
    ("store (midge-store writer, fjall)", r"midge_store|fjall|lsm_tree|value_log"),
    ("thread park/unpark (user side)", r"parking_lot_core|std::sys::sync|Parker|::park"),
    ("allocation (malloc/free)", r"^(malloc|free|realloc|calloc|cfree|_int_malloc|_int_free|_int_realloc|malloc_consolidate|unlink_chunk|__libc_malloc|__libc_free|tcache\w*|__rust_alloc|__rust_dealloc|__rust_realloc)$|alloc::raw_vec|RawVec"),
    ("codec: decode", r"midge_proto::decode"),
    ("codec: encode", r"midge_proto::encode"),
    ("routing (trie match, merge)", r"midge_broker::router"),
    ("session lock + queue (enqueue, drain, acks)", r"midge_broker::session|drain_queue|release_held_acks|complete_outgoing|lock_api|parking_lot::raw_(rw)?mutex"),
    ("tokio scheduling (tasks, wakers, timers, Notify)", r"tokio::runtime|tokio::sync|tokio::time|tokio::loom"),
    ("tokio/mio I/O readiness", r"tokio::io|tokio::net|mio::"),
    ("connection loop (select, stats, other broker code)", r"midge_broker"),
]
syscalls = [(n, re.compile(p)) for n, p in syscalls]
user = [(n, re.compile(p)) for n, p in user]
totals, total, woke, switched = {}, 0, 0, 0
for line in open(sys.argv[1]):
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not count.isdigit():
        continue
    n = int(count)
    total += n
    frames = stack.split(";")
    if any(f.startswith(("try_to_wake_up", "sock_def_readable", "__wake_up")) for f in frames):
        woke += n
    if any(f.startswith(("__schedule", "finish_task_switch")) for f in frames):
        switched += n
    cat = None
    kernel = [f[:-4] for f in frames if f.endswith("_[k]")]
    # The frame after do_syscall_64 names the call (__x64_sys_* is often inlined away).
    entry = None
    if "do_syscall_64" in kernel:
        rest = kernel[kernel.index("do_syscall_64") + 1:]
        entry = rest[0] if rest else "do_syscall_64"
    if entry:
        cat = next((name for name, rx in syscalls if rx.search(entry)), None)
        cat = cat or "syscall: other (" + re.sub(r"^__(x64|se)_sys_", "", entry) + ")"
    else:
        for frame in reversed(frames):
            if frame.endswith("_[k]"):
                continue
            cat = next((name for name, rx in user if rx.search(frame)), None)
            if cat:
                break
        if cat is None and kernel:
            cat = "kernel, not a system call (interrupts, page faults)"
    cat = cat or "other user code (std, bytes, libc)"
    totals[cat] = totals.get(cat, 0) + n
t = max(total, 1)
print(f"{'category':52} {'CPU ms':>9} {'share':>7}")
for name, n in sorted(totals.items(), key=lambda kv: -kv[1]):
    print(f"{name:52} {n / 1e6:9.0f} {100.0 * n / t:6.1f}%")
print(f"{'total':52} {total / 1e6:9.0f}")
print(f"{'(overlapping) waking a reader (sock_def_readable, try_to_wake_up)':52} {woke / 1e6:9.0f} {100.0 * woke / t:6.1f}%")
print(f"{'(overlapping) inside __schedule/finish_task_switch':52} {switched / 1e6:9.0f} {100.0 * switched / t:6.1f}%")
EOF
}

profile_one() {
    local name=$1 persist=$2 args=$3
    local load_s=$((WARMUP + DURATION + 2))
    args=${args//%D/$load_s}
    start_broker midge "$persist"
    local cpu_start sub_pid=""
    cpu_start=$(broker_cpu_s)
    if [ "$persist" = 1 ]; then
        # A persistent QoS 1 subscriber: `-E` makes the session and its subscription and
        # exits once subscribed; the second `midge sub` resumes it and receives.
        "$MIDGE" sub -p "$PORT" -c -i profile-sub -q 1 -t 'bench/#' -E
        taskset -c 1 "$MIDGE" sub -p "$PORT" -c -i profile-sub -q 1 -t 'bench/#' >/dev/null 2>&1 &
        sub_pid=$!
        log "$name: broker pid $BROKER_PID port $PORT; load: midge bench $args"
        # shellcheck disable=SC2086
        taskset -c 1 "$MIDGE" bench $args -p "$PORT" --grace 3 --json --no-progress \
            >"$OUT/$name.bench.json" 2>>"$WORK/load.log" &
    else
        log "$name: broker pid $BROKER_PID port $PORT; load: midge bench pubsub $args"
        # shellcheck disable=SC2086
        taskset -c 1 "$MIDGE" bench pubsub $args -p "$PORT" --drain-max 3 --grace 3 --json \
            --no-progress >"$OUT/$name.bench.json" 2>>"$WORK/load.log" &
    fi
    LOAD_PID=$!
    sleep "$WARMUP"
    perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p "$BROKER_PID" \
        -o "$OUT/$name.stat.txt" -- sleep 1 >/dev/null 2>&1 || true
    perf record -q -e cpu-clock -F "$FREQ" -g --call-graph dwarf,16384 -p "$BROKER_PID" \
        -o "$WORK/perf.data" -- sleep "$((DURATION - 1))" >/dev/null 2>&1
    wait "$LOAD_PID" || true
    LOAD_PID=""
    if [ -n "$sub_pid" ]; then kill "$sub_pid" 2>/dev/null || true; wait "$sub_pid" 2>/dev/null || true; fi
    local cpu_end
    cpu_end=$(broker_cpu_s)
    if [ "$STRACE" = 1 ] && [ "$name" = latency_q1_10k ]; then strace_window midge "$args"; fi
    stop_broker
    {
        echo "scenario: $name (persistence $persist)"
        echo "load: midge bench $args (taskset -c 1); broker taskset -c 0"
        python3 - "$OUT/$name.bench.json" "$cpu_start" "$cpu_end" <<'EOF' || true
import json, sys
r = json.load(open(sys.argv[1]))
cpu = float(sys.argv[3]) - float(sys.argv[2])
n = r.get("received") or r.get("completed") or r.get("sent") or 0
keys = ("sent", "completed", "received", "lost", "send_rate", "recv_rate", "latency_us")
print("messages:", {k: r.get(k) for k in keys})
print(f"broker CPU for the whole run (perf overhead included): {cpu:.2f} s, "
      f"{1e6 * cpu / max(n, 1):.2f} us per message")
EOF
        grep -E 'task-clock|context-switches|cpu-migrations' "$OUT/$name.stat.txt" || true
    } >"$OUT/$name.summary.txt"
    perf script -i "$WORK/perf.data" 2>/dev/null >"$WORK/perf.script"
    if command -v inferno-collapse-perf >/dev/null; then
        inferno-collapse-perf --all <"$WORK/perf.script" >"$OUT/$name.folded"
    else
        perf script -i "$WORK/perf.data" -F comm,ip,sym 2>/dev/null | awk '
            /^\S/ { if (s != "") c[s]++; s = "" ; next }
            NF >= 2 { s = (s == "" ? $2 : $2 ";" s) }
            END { if (s != "") c[s]++; for (k in c) print k, c[k] }' >"$OUT/$name.folded"
    fi
    categorize "$OUT/$name.folded" >"$OUT/$name.categories.txt"
    perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -g none --percent-limit 0.7 \
        2>/dev/null | grep -v '^#' | grep -v '^$' >"$OUT/$name.top.txt" || true
    if [ "$SVG" = 1 ]; then
        inferno-flamegraph --title "midge $name (cpu-clock, broker on CPU 0)" --minwidth 0.2 \
            <"$OUT/$name.folded" >"$OUT/$name.svg"
    fi
    rm -f "$WORK/perf.data" "$WORK/perf.script"
    log "$name: $(sed -n 3,5p "$OUT/$name.summary.txt" | tr '\n' ' ')"
}

# strace_window BROKER ARGS: the latency load again, with `strace -c -f` on the broker for
# 10 s of it. strace slows the broker, so the counts matter, not the times.
strace_window() {
    local broker=$1 args=$2
    command -v strace >/dev/null || { log "strace is missing (apt-get install strace)"; return; }
    [ "$broker" = midge ] || start_broker mosquitto 0
    # shellcheck disable=SC2086
    taskset -c 1 "$MIDGE" bench pubsub $args -p "$PORT" --drain-max 3 --grace 3 --json --no-progress \
        >"$OUT/latency_strace_$broker.bench.json" 2>>"$WORK/load.log" &
    LOAD_PID=$!
    sleep "$WARMUP"
    timeout -s INT 10 strace -c -f -p "$BROKER_PID" -o "$OUT/latency_strace_$broker.txt" || true
    wait "$LOAD_PID" || true
    LOAD_PID=""
    [ "$broker" = midge ] || stop_broker
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc); cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); kernel: $(uname -r)"
    echo "midge: $("$MIDGE" --version); $(perf --version)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"

for entry in "${SCENARIOS[@]}"; do
    IFS='|' read -r name persist args <<<"$entry"
    [[ "$name" =~ $ONLY ]] || continue
    profile_one "$name" "$persist" "$args"
done
if [ "$STRACE" = 1 ] && [[ latency_q1_10k =~ $ONLY ]]; then
    args="--pubs 100 --subs 100 --pub-topic bench/%i --sub-topic bench/%i -q 1 -s 64 --rate 100 --duration 16"
    strace_window mosquitto "$args"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"
log "done: $OUT"
