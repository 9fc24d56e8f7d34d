#!/usr/bin/env bash
# Midge's durable store under load: QoS 1 throughput with persistence on and off, and
# start-up time with a large store (issue 4). Results: bench/RESULTS.md, "Persistence";
# details in docs/design/persistence-bench.md.
#
# Usage: bench/persistence.sh [--only "throughput restart breakdown memory retained-live"] [--duration SECS] [--runs N]
#                             [--online-rates "80000 120000 160000 open"] [--qos "1 2"]
#                             [--restart-runs N] [--retained N] [--sessions N]
#                             [--policies "always 1000 never off"] [--midge BIN]
#                             [--populate BIN] [--out DIR] [--sub-client midge|mosquitto]
#                             [--built-from REV]
#
# throughput: for each fsync policy (`always`, `1000` = the default periodic 1000 ms,
#   `never`, `off` = `persistence = false`), three loads, each on a fresh broker and data dir:
#   online  - `midge bench pubsub`: 8 publishers (QoS 1, or each QoS of --qos; 64 B, 20 in flight each) -> 1
#             subscriber with a persistent session (`--session-expiry 3600`, clean start 0),
#             connected throughout: every message is stored, then removed when
#             acknowledged. Once for each offered rate of --online-rates (msg/s for all
#             publishers; `open` = as fast as flow control allows): delivered rate, loss
#             (messages dropped at the subscriber's queue limit, max_queued_messages =
#             1000, when it falls behind), end-to-end latency, broker CPU per delivered
#             message. The highest rate without loss is the durable path's capacity.
#             Repeated --runs times, policies in alternating order.
#   offline - the same publishers while the persistent subscriber is disconnected, with
#             `max_queued_messages = 0` (no limit): everything is queued on disk (and, for
#             `off`, in memory); then the broker is restarted (not for `off`) and the
#             subscriber reconnects and drains the queue.
#   clean   - `midge bench pubsub` (clean-session subscriber, which nothing is stored for),
#             default and off only: what persistence costs when no session is persistent.
#   offline and clean run once.
# restart: fills a data dir with --retained retained messages and --sessions offline
#   sessions (crates/midge-store/examples/populate.rs, 1 subscription each, 1 queued message
#   per 10 sessions), then starts `midge` --restart-runs times: time until the port accepts,
#   time of the "state recovered" log line, VmRSS and VmHWM, shutdown time, data dir size.
#
# breakdown: one start with the retained messages only, one with the sessions only, and one
#   of the full store after the broker was killed with SIGKILL.
# memory: an offline queue filled for 5 s and drained, twice, on one broker (is memory given
#   back?), and 30 s of the online load with VmRSS every 3 s (does it level off?), for the
#   default policy and persistence off.
# retained-live: the --retained retained messages published over MQTT (QoS 1) instead, with
#   persistence off and on: VmRSS live, and for the latter after a restart.
#
# Every load is bounded in time; the whole script takes about 10 minutes with the defaults.
set -euo pipefail
set -f # topic filters hold `#`

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ONLY="throughput restart breakdown memory retained-live"
DURATION=15
OFFLINE_DURATION=10
ONLINE_RATES="80000 120000 160000 open"
QOS_LEVELS="1"
RUNS=1
RESTART_RUNS=3
RETAINED=1000000
SESSIONS=100000
POLICIES="always 1000 never off"
MIDGE=""
POPULATE=""
OUT=/tmp/midge-persistence-bench
SUB_CLIENT=midge
BUILT_FROM=""
while [ $# -gt 0 ]; do
    case "$1" in
        --only) ONLY=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --offline-duration) OFFLINE_DURATION=$2; shift ;;
        --online-rates) ONLINE_RATES=$2; shift ;;
        --qos) QOS_LEVELS=$2; shift ;;
        --runs) RUNS=$2; shift ;;
        --restart-runs) RESTART_RUNS=$2; shift ;;
        --retained) RETAINED=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --policies) POLICIES=$2; shift ;;
        --midge) MIDGE=$(realpath "$2"); shift ;;
        --populate) POPULATE=$(realpath "$2"); shift ;;
        --out) OUT=$2; shift ;;
        --sub-client) SUB_CLIENT=$2; shift ;;
        --built-from) BUILT_FROM=$2; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "persistence.sh: $(date -u +%H:%M:%S) $*" >&2; }
for tool in mosquitto_sub python3 jq bc; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install mosquitto-clients python3 jq bc)" >&2; exit 2; }
done
# mawk counts a few hundred thousand lines a second on one core; gawk is slower.
AWK=$(command -v mawk || command -v awk)

# --- build ------------------------------------------------------------------------------
if [ -z "$MIDGE" ] || [ -z "$POPULATE" ]; then
    TARGET=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
    log "building midge and the populate example (release)"
    (cd "$ROOT" && cargo build --release -q -p midge && cargo build --release -q -p midge-store --example populate)
    [ -n "$MIDGE" ] || MIDGE=$TARGET/release/midge
    [ -n "$POPULATE" ] || POPULATE=$TARGET/release/examples/populate
fi

mkdir -p "$OUT"
RES=$OUT/results.jsonl
: > "$RES"
SCRIPT_START=$(date +%s)
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc); model: $(lscpu | sed -n 's/^Model name: *//p'); kernel: $(uname -r)"
    echo "memory: $(free -g | awk '/^Mem/{print $2}') GiB; open files: $(ulimit -Hn)"
    if [ -n "$BUILT_FROM" ]; then
        echo "midge built from: $BUILT_FROM"
    else
        echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD)$(cd "$ROOT" && git diff --quiet HEAD -- crates || echo ' (crates/ modified in the work tree)')"
    fi
    echo "midge: $MIDGE; mosquitto_sub: $(mosquitto_sub --help 2>&1 | head -1)"
    echo "filesystem of $OUT: $(df -T "$OUT" | awk 'NR==2{print $2" on "$1}')"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

# --- helpers ----------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Polls 127.0.0.1:$1 every 2 ms until it accepts a TCP connection; prints the wall time
# (Unix seconds) it first did. Touches $2 once polling has begun (so that the broker is
# started only then, and Python's own start-up is not counted), reads the broker's pid from
# $3 to give up if it exits, and gives up after $4 seconds.
poll_port() {
    python3 - "$1" "$2" "$3" "$4" <<'EOF'
import os, socket, sys, time
port, ready, pidfile, limit = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
end = time.time() + limit
open(ready, "w").close()
while time.time() < end:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        print(f"{time.time():.6f}")
        sys.exit(0)
    except OSError:
        try:
            pid = open(pidfile).read().strip()
            if pid and not os.path.exists(f"/proc/{pid}"):
                sys.exit("broker exited")
        except FileNotFoundError:
            pass
        time.sleep(0.002)
sys.exit("port never opened")
EOF
}

# $1 config file, $2 port, $3 data dir, $4 policy, $5 max_queued_messages, $6 (optional)
# more lines of configuration
write_config() {
    {
        echo "max_queued_messages = $5"
        [ -z "${6:-}" ] || echo "$6"
        case "$4" in
            off) echo "persistence = false" ;;
            always|never) echo "data_dir = \"$3\""; echo "fsync = \"$4\"" ;;
            *) echo "data_dir = \"$3\""; echo "fsync = $4" ;;
        esac
        echo "[[listener]]"
        echo "port = $2"
        echo "bind_address = \"127.0.0.1\""
        echo "allow_anonymous = true"
    } > "$1"
}

BROKER_PID=""
# $1 config, $2 port, $3 log file. Sets BROKER_PID, STARTED_AT, ACCEPT_AT.
start_broker() {
    local ready=$OUT/.poll-ready pidfile=$OUT/.broker-pid poller
    rm -f "$ready" "$pidfile"
    poll_port "$2" "$ready" "$pidfile" 600 > "$OUT/.poll-out" &
    poller=$!
    while [ ! -e "$ready" ]; do sleep 0.005; done
    STARTED_AT=$(date +%s.%N)
    RUST_LOG=info "$MIDGE" -c "$1" >>"$3" 2>&1 &
    BROKER_PID=$!
    echo "$BROKER_PID" > "$pidfile"
    wait "$poller" || { echo "the broker did not open port $2 (log: $3)" >&2; exit 1; }
    ACCEPT_AT=$(cat "$OUT/.poll-out")
}

# SIGTERM, wait; sets STOP_SECS and STOP_RC.
stop_broker() {
    local t0
    t0=$(date +%s.%N)
    kill -TERM "$BROKER_PID"
    STOP_RC=0
    wait "$BROKER_PID" || STOP_RC=$?
    STOP_SECS=$(echo "$(date +%s.%N) - $t0" | bc)
    BROKER_PID=""
}
SUB_PID=""
cleanup() {
    [ -z "$SUB_PID" ] || kill -INT "$SUB_PID" 2>/dev/null || true
    [ -z "$BROKER_PID" ] || kill -TERM "$BROKER_PID" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# A persistent QoS 1 subscriber on bench/# that counts what it receives (mawk, in memory):
# $1 client id, $2 port, $3 file prefix. Progress every 5,000 messages in $3.prog, and
# "count first_ts last_ts" in $3.final once it stops. Sets SUB_PID.
start_counter() {
    : > "$3.prog"
    : > "$3.final"
    local sub=(mosquitto_sub)
    [ "$SUB_CLIENT" = mosquitto ] || sub=("$MIDGE" sub)
    "${sub[@]}" -h 127.0.0.1 -p "$2" -c -i "$1" -q 1 -t 'bench/#' -F '%U' \
        > >("$AWK" -v prog="$3.prog" 'NR == 1 {f = $1} {l = $1}
                 NR % 5000 == 0 {print NR, $1 > prog; fflush(prog)}
                 END {printf "%d %s %s\n", NR, f, l}' > "$3.final") &
    SUB_PID=$!
}
counter_progress() { tail -n 1 "$1.prog" 2>/dev/null | cut -d' ' -f1; }

# Waits until the counter reached $2 (to its 5,000 granularity), or received nothing for
# 3 s, or $3 s passed; then stops it (SIGINT: mosquitto_sub flushes and exits) and waits for
# the final line.
stop_counter_at() {
    local prefix=$1 target=$2 limit=$3 last=-1 same=0 n t0
    t0=$(date +%s)
    while [ $(( $(date +%s) - t0 )) -lt "$limit" ]; do
        n=$(counter_progress "$prefix"); n=${n:-0}
        [ "$n" -ge $(( target / 5000 * 5000 )) ] && { sleep 1; break; }
        [ -s "$prefix.final" ] && break # the subscriber is gone
        if [ "$n" = "$last" ]; then same=$((same + 1)); else same=0; last=$n; fi
        [ "$same" -ge 12 ] && break
        sleep 0.25
    done
    kill -INT "$SUB_PID" 2>/dev/null || true
    wait "$SUB_PID" 2>/dev/null || true
    for _ in $(seq 50); do [ -s "$prefix.final" ] && break; sleep 0.1; done
    SUB_PID=""
}

bench_pub() { # $1 port, $2 seconds, $3 json file
    "$MIDGE" bench pub -p "$1" -c 8 -t 'bench/%i' -q 1 -s 64 --duration "$2" \
        --id-prefix "pp$$-" --json --no-progress > "$3" 2>"$3.err" || true
}

# Apparent size (what the files hold, sparse or preallocated space counted) and allocated
# size, in bytes: "apparent/allocated".
dir_bytes() {
    [ -d "$1" ] || { echo '"0/0"'; return; }
    echo "\"$(du -sb "$1" | cut -f1)/$(( $(du -sk "$1" | cut -f1) * 1024 ))\""
}

broker_errors() { grep -cE ' (ERROR|WARN) ' "$1" || true; }

# --- throughput -------------------------------------------------------------------------
throughput_online() { # $1 policy, $2 run, $3 offered rate in msg/s for all publishers (open: as fast as they can), $4 QoS
    local dir=$OUT/data-online-$1 conf=$OUT/online-$1.toml lg=$OUT/online-$1-$2-$3-q$4.log port
    local p=$OUT/online-$1-$2-$3-q$4 rate=()
    rm -rf "$dir"; : > "$lg"
    port=$(free_port)
    write_config "$conf" "$port" "$dir" "$1" 1000
    start_broker "$conf" "$port" "$lg"
    [ "$3" = open ] || rate=(--rate "$(( $3 / 8 ))")
    local c0 c1
    c0=$(cpu_ticks "$BROKER_PID")
    "$MIDGE" bench pubsub -p "$port" --pubs 8 --subs 1 -q "$4" -s 64 --duration "$DURATION" \
        "${rate[@]}" --session-expiry 3600 --id-prefix "po$$-" --json --no-progress \
        > "$p.json" 2>"$p.err" || true
    c1=$(cpu_ticks "$BROKER_PID")
    local rss hwm size
    rss=$(status_kb "$BROKER_PID" VmRSS); hwm=$(status_kb "$BROKER_PID" VmHWM)
    size=$(dir_bytes "$dir")
    stop_broker
    jq -c --arg policy "$1" --argjson run "$2" --arg offered "$3" --argjson qos "$4" \
        --argjson cpu "$(( c1 - c0 ))" --argjson tick "$TICK" \
        --argjson rss "$rss" --argjson hwm "$hwm" --argjson size "$size" \
        --argjson errors "$(broker_errors "$lg")" --argjson stop "$STOP_SECS" --argjson rc "$STOP_RC" \
        '{load: "online", qos: $qos, policy: $policy, run: $run, offered: $offered, sent, received, lost,
          loss_pct: (if .sent > 0 then 100 * .lost / .sent else null end), recv_rate,
          p50_us: .latency_us.p50, p99_us: .latency_us.p99,
          cpu_us_per_msg: (if .received > 0 then $cpu / $tick * 1e6 / .received else null end),
          rss_kb: $rss, hwm_kb: $hwm, data_bytes: $size, broker_log_warn_error: $errors,
          stop_secs: $stop, stop_rc: $rc}' "$p.json" | tee -a "$RES" >&2
}

throughput_offline() { # $1 policy, $2 run
    local dir=$OUT/data-offline-$1 conf=$OUT/offline-$1.toml lg=$OUT/offline-$1-$2.log port p
    rm -rf "$dir"; : > "$lg"
    port=$(free_port)
    write_config "$conf" "$port" "$dir" "$1" 0
    start_broker "$conf" "$port" "$lg"
    p=$OUT/offline-$1-$2
    mosquitto_sub -h 127.0.0.1 -p "$port" -c -i "qsub$$" -q 1 -t 'bench/#' -E
    local rss0 c0 c1
    rss0=$(status_kb "$BROKER_PID" VmRSS)
    c0=$(cpu_ticks "$BROKER_PID")
    bench_pub "$port" "$OFFLINE_DURATION" "$p.pub.json"
    c1=$(cpu_ticks "$BROKER_PID")
    local rss1 size='"0/0"' acked
    rss1=$(status_kb "$BROKER_PID" VmRSS)
    acked=$(jq .completed "$p.pub.json")
    local restart_secs=null recovered_secs=null rss_restart=null hwm_restart=null stop1=null
    if [ "$1" != off ]; then
        stop_broker
        stop1=$STOP_SECS
        size=$(dir_bytes "$dir")
        start_broker "$conf" "$port" "$lg"
        restart_secs=$(echo "$ACCEPT_AT - $STARTED_AT" | bc)
        rss_restart=$(status_kb "$BROKER_PID" VmRSS); hwm_restart=$(status_kb "$BROKER_PID" VmHWM)
    fi
    local t0
    t0=$(date +%s.%N)
    start_counter "qsub$$" "$port" "$p.sub"
    stop_counter_at "$p.sub" "$acked" 45
    local rss2
    rss2=$(status_kb "$BROKER_PID" VmRSS)
    stop_broker
    local got=0 first=0 last=0
    read -r got first last < "$p.sub.final" || true
    jq -c -n --arg policy "$1" --argjson run "$2" --slurpfile pub "$p.pub.json" \
        --argjson got "${got:-0}" --argjson last "${last:-0}" --argjson t0 "$t0" \
        --argjson cpu "$(( c1 - c0 ))" --argjson tick "$TICK" \
        --argjson rss0 "$rss0" --argjson rss1 "$rss1" --argjson rss2 "$rss2" --argjson size "$size" \
        --argjson restart "$restart_secs" --argjson rssr "$rss_restart" --argjson hwmr "$hwm_restart" \
        --argjson stop1 "$stop1" --argjson errors "$(broker_errors "$lg")" \
        '{load: "offline", policy: $policy, run: $run, sent: $pub[0].sent, acked: $pub[0].completed,
          publish_secs: $pub[0].publish_secs, ack_rate: ($pub[0].completed / $pub[0].publish_secs),
          mean_ack_latency_ms: (8 * 20 / ($pub[0].completed / $pub[0].publish_secs) * 1000),
          cpu_us_per_msg: (if $pub[0].completed > 0 then $cpu / $tick * 1e6 / $pub[0].completed else null end),
          rss_kb_before: $rss0, rss_kb_queued: $rss1, data_bytes: $size, stop_secs: $stop1,
          restart_secs: $restart, rss_kb_after_restart: $rssr, hwm_kb_after_restart: $hwmr,
          drained: $got, drain_rate: (if $last > 0 then $got / ($last - $t0) else 0 end),
          lost: ($pub[0].completed - $got), rss_kb_after_drain: $rss2, broker_log_warn_error: $errors}' \
        | tee -a "$RES" >&2
}

throughput_clean() { # $1 policy, $2 run
    local dir=$OUT/data-clean-$1 conf=$OUT/clean-$1.toml lg=$OUT/clean-$1-$2.log port p=$OUT/clean-$1-$2
    rm -rf "$dir"; : > "$lg"
    port=$(free_port)
    write_config "$conf" "$port" "$dir" "$1" 1000
    start_broker "$conf" "$port" "$lg"
    "$MIDGE" bench pubsub -p "$port" --pubs 8 --subs 1 -q 1 -s 64 --duration "$DURATION" \
        --id-prefix "pc$$-" --json --no-progress > "$p.json" 2>"$p.err" || true
    stop_broker
    jq -c --arg policy "$1" --argjson run "$2" --argjson errors "$(broker_errors "$lg")" \
        '{load: "clean", policy: $policy, run: $run, sent, received, lost, recv_rate,
          p50_us: .latency_us.p50, p99_us: .latency_us.p99, broker_log_warn_error: $errors}' \
        "$p.json" | tee -a "$RES" >&2
}

if [[ " $ONLY " == *" throughput "* ]]; then
    for run in $(seq "$RUNS"); do
        order=$POLICIES
        [ $((run % 2)) = 1 ] || order=$(echo "$POLICIES" | tr ' ' '\n' | tac | tr '\n' ' ')
        for policy in $order; do
            for qos in $QOS_LEVELS; do
                for offered in $ONLINE_RATES; do
                    log "online, QoS $qos, fsync=$policy, offered $offered, run $run"
                    throughput_online "$policy" "$run" "$offered" "$qos"
                done
            done
        done
    done
    for run in 1; do
        for policy in $POLICIES; do
            log "offline, fsync=$policy, run $run"
            throughput_offline "$policy" "$run"
        done
        for policy in $POLICIES; do
            case "$policy" in 1000|off) ;; *) continue ;; esac
            log "clean session, fsync=$policy, run $run"
            throughput_clean "$policy" "$run"
        done
    done
fi

# --- restart ----------------------------------------------------------------------------
if [[ " $ONLY " == *" restart "* ]]; then
    dir=$OUT/data-restart
    rm -rf "$dir"
    log "populating $dir: $RETAINED retained, $SESSIONS sessions"
    t0=$(date +%s.%N)
    "$POPULATE" "$dir" "$RETAINED" "$SESSIONS" 10 | tee "$OUT/populate.txt" >&2
    populate_secs=$(echo "$(date +%s.%N) - $t0" | bc)
    size0=$(dir_bytes "$dir")
    port=$(free_port)
    conf=$OUT/restart.toml
    write_config "$conf" "$port" "$dir" 1000 1000
    for run in $(seq "$RESTART_RUNS"); do
        lg=$OUT/restart-$run.log
        : > "$lg"
        log "restart run $run"
        start_broker "$conf" "$port" "$lg"
        accept=$(echo "$ACCEPT_AT - $STARTED_AT" | bc)
        rss_accept=$(status_kb "$BROKER_PID" VmRSS)
        sleep 3
        rss=$(status_kb "$BROKER_PID" VmRSS); hwm=$(status_kb "$BROKER_PID" VmHWM)
        line=$(grep -m1 'state recovered' "$lg" || true)
        recovered=null
        if [ -n "$line" ]; then
            ts=$(echo "$line" | awk '{print $1}')
            recovered=$(echo "$(date -d "$ts" +%s.%N) - $STARTED_AT" | bc)
        fi
        # The retained messages of one subtree come back (1,000 expected).
        got_retained=$(timeout 20 mosquitto_sub -h 127.0.0.1 -p "$port" -t 'site/7/dev/+/state' \
            -C 1000 -W 10 -F '%t' 2>/dev/null | wc -l || true)
        got_queued=null
        if [ "$run" = "$RESTART_RUNS" ]; then
            # An offline session gets its queued message (and its session back).
            got_queued=$(timeout 10 mosquitto_sub -h 127.0.0.1 -p "$port" -V 5 -c -x 604800 \
                -i offline-0 -t 'cmd/offline-0/#' -q 1 -C 1 -W 5 -F '%t' 2>/dev/null | wc -l || true)
        fi
        stop_broker
        size=$(dir_bytes "$dir")
        jq -c -n --argjson run "$run" --argjson accept "$accept" --argjson recovered "$recovered" \
            --argjson rss_accept "$rss_accept" --argjson rss "$rss" --argjson hwm "$hwm" \
            --argjson stop "$STOP_SECS" --argjson rc "$STOP_RC" --argjson size "$size" \
            --argjson size0 "$size0" --argjson populate "$populate_secs" \
            --argjson retained_check "$got_retained" --argjson queued_check "$got_queued" \
            --argjson errors "$(broker_errors "$lg")" \
            '{load: "restart", run: $run, accept_secs: $accept, recovered_secs: $recovered,
              rss_kb_at_accept: $rss_accept, rss_kb: $rss, hwm_kb: $hwm, stop_secs: $stop, stop_rc: $rc,
              data_bytes_after: $size, data_bytes_populated: $size0, populate_secs: $populate,
              retained_check_1000: $retained_check, queued_check_1: $queued_check,
              broker_log_warn_error: $errors}' | tee -a "$RES" >&2
        grep -m1 'state recovered' "$lg" >&2 || true
    done
    # Baseline: the same start on an empty data dir.
    for run in $(seq "$RESTART_RUNS"); do
        rm -rf "$OUT/data-empty"
        write_config "$OUT/empty.toml" "$port" "$OUT/data-empty" 1000 1000
        start_broker "$OUT/empty.toml" "$port" "$OUT/empty.log"
        accept=$(echo "$ACCEPT_AT - $STARTED_AT" | bc)
        sleep 1
        rss=$(status_kb "$BROKER_PID" VmRSS)
        stop_broker
        jq -c -n --argjson run "$run" --argjson accept "$accept" --argjson rss "$rss" \
            '{load: "restart-empty", run: $run, accept_secs: $accept, rss_kb: $rss}' | tee -a "$RES" >&2
    done
fi

# --- breakdown: what the restart time and memory are made of -----------------------------
# One start each with the retained messages only, with the sessions only, and with the full
# store after the previous broker was killed with SIGKILL (journal replay, no clean close).
restart_once() { # $1 label, $2 data dir
    local port conf=$OUT/breakdown.toml lg=$OUT/breakdown-$1.log
    port=$(free_port)
    write_config "$conf" "$port" "$2" 1000 1000
    : > "$lg"
    start_broker "$conf" "$port" "$lg"
    local accept rss hwm
    accept=$(echo "$ACCEPT_AT - $STARTED_AT" | bc)
    sleep 2
    rss=$(status_kb "$BROKER_PID" VmRSS); hwm=$(status_kb "$BROKER_PID" VmHWM)
    if [ "${3:-}" = kill ]; then
        kill -KILL "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true; BROKER_PID=""
        STOP_SECS=null
    else
        stop_broker
    fi
    jq -c -n --arg what "$1" --argjson accept "$accept" --argjson rss "$rss" --argjson hwm "$hwm" \
        --argjson size "$(dir_bytes "$2")" --argjson stop "$STOP_SECS" \
        --argjson errors "$(broker_errors "$lg")" \
        '{load: "breakdown", what: $what, accept_secs: $accept, rss_kb: $rss, hwm_kb: $hwm,
          data_bytes: $size, stop_secs: $stop, broker_log_warn_error: $errors}' | tee -a "$RES" >&2
}

if [[ " $ONLY " == *" breakdown "* ]]; then
    rm -rf "$OUT/data-retained-only" "$OUT/data-sessions-only" "$OUT/data-kill"
    log "breakdown: $RETAINED retained only"
    "$POPULATE" "$OUT/data-retained-only" "$RETAINED" 0 0 >&2
    restart_once retained-only "$OUT/data-retained-only"
    log "breakdown: $SESSIONS sessions only"
    "$POPULATE" "$OUT/data-sessions-only" 0 "$SESSIONS" 10 >&2
    restart_once sessions-only "$OUT/data-sessions-only"
    log "breakdown: full store, start after SIGKILL"
    "$POPULATE" "$OUT/data-kill" "$RETAINED" "$SESSIONS" 10 >&2
    restart_once before-kill "$OUT/data-kill" kill
    restart_once after-kill "$OUT/data-kill"
fi

# --- memory: does the broker give memory back? ------------------------------------------
# Offline queue filled for 5 s then drained, twice, on one broker (max_queued_messages = 0);
# then an online persistent subscriber for 30 s with VmRSS sampled every 3 s.
memory_cycles() { # $1 policy
    local dir=$OUT/data-memory-$1 conf=$OUT/memory-$1.toml lg=$OUT/memory-$1.log port p=$OUT/memory-$1
    rm -rf "$dir"; : > "$lg"
    port=$(free_port)
    write_config "$conf" "$port" "$dir" "$1" 0
    start_broker "$conf" "$port" "$lg"
    "$MIDGE" sub -h 127.0.0.1 -p "$port" -c -i "msub$$" -q 1 -t 'bench/#' -E
    local samples="" cycle acked
    for cycle in 1 2; do
        bench_pub "$port" 5 "$p-$cycle.pub.json"
        acked=$(jq .completed "$p-$cycle.pub.json")
        samples="$samples{\"step\":\"filled $cycle\",\"queued\":$acked,\"rss_kb\":$(status_kb "$BROKER_PID" VmRSS)},"
        start_counter "msub$$" "$port" "$p-$cycle.sub"
        stop_counter_at "$p-$cycle.sub" "$acked" 45
        samples="$samples{\"step\":\"drained $cycle\",\"received\":$(cut -d' ' -f1 "$p-$cycle.sub.final"),\"rss_kb\":$(status_kb "$BROKER_PID" VmRSS)},"
    done
    sleep 5
    samples="$samples{\"step\":\"idle 5 s\",\"rss_kb\":$(status_kb "$BROKER_PID" VmRSS)}"
    stop_broker
    jq -c -n --arg policy "$1" --argjson s "[$samples]" --argjson errors "$(broker_errors "$lg")" \
        '{load: "memory-offline", policy: $policy, steps: $s, broker_log_warn_error: $errors}' \
        | tee -a "$RES" >&2
}

memory_online() { # $1 policy
    local dir=$OUT/data-memonline-$1 conf=$OUT/memonline-$1.toml lg=$OUT/memonline-$1.log port p=$OUT/memonline-$1
    rm -rf "$dir"; : > "$lg"
    port=$(free_port)
    write_config "$conf" "$port" "$dir" "$1" 1000
    start_broker "$conf" "$port" "$lg"
    start_counter "osub$$" "$port" "$p.sub"
    sleep 1.5
    bench_pub "$port" 30 "$p.pub.json" &
    local pubpid=$! rss=()
    for _ in $(seq 11); do sleep 3; rss+=("$(status_kb "$BROKER_PID" VmRSS)"); done
    wait "$pubpid" || true
    stop_counter_at "$p.sub" "$(jq .sent "$p.pub.json")" 30
    stop_broker
    jq -c -n --arg policy "$1" --argjson rss "[$(IFS=,; echo "${rss[*]}")]" --slurpfile pub "$p.pub.json" \
        --argjson errors "$(broker_errors "$lg")" \
        '{load: "memory-online", policy: $policy, acked: $pub[0].completed, ack_rate: ($pub[0].completed / $pub[0].publish_secs),
          rss_kb_every_3s: $rss, broker_log_warn_error: $errors}' | tee -a "$RES" >&2
}

if [[ " $ONLY " == *" memory "* ]]; then
    for policy in 1000 off; do
        log "memory: offline fill and drain twice, fsync=$policy"
        memory_cycles "$policy"
    done
    for policy in 1000 off; do
        log "memory: online 30 s, fsync=$policy"
        memory_online "$policy"
    done
fi

# --- retained-live: the same retained messages published over MQTT ----------------------
# --retained QoS 1 retained messages (same topics and payload size as populate) published over
# one MQTT 3.1.1 connection in windows of 10,000 (raw packets from Python), on a broker with
# persistence off and one with the default policy; VmRSS then, and for the latter after a
# restart: does recovery cost more memory than the live state it rebuilds?
publish_retained() { # $1 port, $2 count
    python3 - "$1" "$2" <<'EOF'
import socket, struct, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
def remaining(k):
    out = bytearray()
    while True:
        b, k = k % 128, k // 128
        out.append(b | (0x80 if k else 0))
        if not k:
            return bytes(out)
def packet(first, body):
    return bytes([first]) + remaining(len(body)) + body
def utf8(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b
s = socket.create_connection(("127.0.0.1", port))
s.sendall(packet(0x10, utf8("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 60) + utf8("retained-loader")))
assert s.recv(4)[:2] == b"\x20\x02", "no CONNACK"
payload = b"r" * 64
t0 = time.time()
window = 10000
for start in range(0, n, window):
    count = min(window, n - start)
    buf = bytearray()
    for j in range(count):
        i = start + j
        body = utf8(f"site/{i // 1000}/dev/{i % 1000}/state") + struct.pack(">H", j + 1) + payload
        buf += packet(0x33, body)  # PUBLISH, QoS 1, RETAIN
    s.sendall(buf)
    need, got = 4 * count, 0
    while got < need:
        chunk = s.recv(min(65536, need - got))
        if not chunk:
            sys.exit("connection closed")
        got += len(chunk)
s.sendall(b"\xe0\x00")
s.close()
print(f"{n / (time.time() - t0):.0f}")
EOF
}

retained_live() { # $1 policy
    local dir=$OUT/data-live-$1 conf=$OUT/live-$1.toml lg=$OUT/live-$1.log port rate rss0 rss hwm
    rm -rf "$dir"; : > "$lg"
    port=$(free_port)
    write_config "$conf" "$port" "$dir" "$1" 1000
    start_broker "$conf" "$port" "$lg"
    rss0=$(status_kb "$BROKER_PID" VmRSS)
    rate=$(publish_retained "$port" "$RETAINED")
    sleep 2
    rss=$(status_kb "$BROKER_PID" VmRSS); hwm=$(status_kb "$BROKER_PID" VmHWM)
    stop_broker
    local accept=null rss_r=null hwm_r=null size='"0/0"'
    if [ "$1" != off ]; then
        size=$(dir_bytes "$dir")
        start_broker "$conf" "$port" "$lg"
        accept=$(echo "$ACCEPT_AT - $STARTED_AT" | bc)
        sleep 2
        rss_r=$(status_kb "$BROKER_PID" VmRSS); hwm_r=$(status_kb "$BROKER_PID" VmHWM)
        stop_broker
    fi
    jq -c -n --arg policy "$1" --argjson rate "$rate" --argjson rss0 "$rss0" --argjson rss "$rss" \
        --argjson hwm "$hwm" --argjson size "$size" --argjson accept "$accept" --argjson rssr "$rss_r" \
        --argjson hwmr "$hwm_r" --argjson errors "$(broker_errors "$lg")" \
        '{load: "retained-live", policy: $policy, publish_rate: $rate, rss_kb_empty: $rss0,
          rss_kb_live: $rss, hwm_kb_live: $hwm, data_bytes: $size, restart_accept_secs: $accept,
          rss_kb_recovered: $rssr, hwm_kb_recovered: $hwmr, broker_log_warn_error: $errors}' \
        | tee -a "$RES" >&2
}

if [[ " $ONLY " == *" retained-live "* ]]; then
    for policy in off 1000; do
        log "retained-live: $RETAINED retained over MQTT, fsync=$policy"
        retained_live "$policy"
    done
fi

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); script time $(( $(date +%s) - SCRIPT_START )) s" \
    | tee -a "$OUT/machine.txt" >&2
log "results: $RES, logs and configs in $OUT"
