#!/usr/bin/env bash
# Midge against Mosquitto 2 on this machine, same `midge bench` load, same run.
#
# Usage: bench/compare.sh [--quick] [--runs N] [--duration SECS] [--only REGEX]
#                         [--modes "unpinned pinned hog"] [--midge BIN] [--no-write]
#
# For each scenario, mode (unpinned: both cores for everyone; pinned: broker on CPU 0 with
# `taskset -c 0`, load on CPU 1; hog: pinned, and a busy loop on CPU 0 beside the broker)
# and run, a fresh broker is started on a free loopback port with a config file written
# here (the same mosquitto.conf for both: Midge reads Mosquitto's format), the load runs,
# and the broker is stopped. Each scenario says which modes it runs in (`--modes` narrows). The medians of the runs and the
# Midge/Mosquitto ratios are written to bench/RESULTS.md between this script's markers
# (other sections of the file are left alone). Every load is bounded in count and time.
#
# --quick: one run of 2 s per scenario, 10,000 idle connections only (about 3 minutes).
# COMPARE_EXTRA_CONF (environment): mosquitto.conf lines added for both brokers, e.g.
# `set_tcp_nodelay true` (Mosquitto's Nagle off; Midge always sets TCP_NODELAY).
# --midge BIN: use this midge binary (broker and load) instead of building the work tree.
set -euo pipefail
set -f  # scenario arguments hold `#` and `%i`, never globs

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
DURATION=8
QUICK=0
WRITE=1
ONLY=.
MIDGE=""
MODES="unpinned pinned hog"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --runs) RUNS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --modes) MODES=$2; shift ;;
        --midge) MIDGE=$(realpath "$2"); shift ;;
        --no-write) WRITE=0 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    RUNS=1
    DURATION=2
fi
# After the publishers stop, wait this long at most for queued messages (then they count as
# lost): a broker with a deep queue would otherwise stretch each run.
DRAIN_MAX=$((DURATION < 5 ? 3 : 5))

log() { echo "compare.sh: $*" >&2; }

# --- tools -----------------------------------------------------------------------------
need_apt=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v jq >/dev/null || need_apt+=(jq)
command -v taskset >/dev/null || need_apt+=(util-linux)
command -v openssl >/dev/null || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
    # Debian starts a system mosquitto on 1883; we start our own on free ports.
    $SUDO systemctl stop mosquitto 2>/dev/null || true
fi
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

if [ -z "$MIDGE" ]; then
    log "building midge (release)"
    (cd "$ROOT" && cargo build --release -q -p midge --bin midge)
    MIDGE="$ROOT/target/release/midge"
fi
# The commit the binary was built from: a snapshot directory may say it in COMMIT.
MIDGE_COMMIT=$(cat "$(dirname "$MIDGE")/../../COMMIT" 2>/dev/null || (cd "$ROOT" && git rev-parse --short HEAD))

# Brokers and load get the hard open-files limit (20,000 here) as their soft one.
ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/midge-compare.XXXXXX)
HOG_PID=""
cleanup() {
    if [ -n "$BROKER_PID" ]; then kill "$BROKER_PID" 2>/dev/null || true; fi
    if [ -n "$HOG_PID" ]; then kill "$HOG_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# TLS scenarios: a CA and a server certificate for 127.0.0.1, readable by Mosquitto once it
# has dropped root for its own user.
chmod 755 "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=compare.sh CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$WORK/server.ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/server.ext" -out "$WORK/server.pem" 2>/dev/null
chmod 644 "$WORK/server.key" "$WORK/server.pem" "$WORK/ca.pem"
TLS_CONF="certfile $WORK/server.pem
keyfile $WORK/server.key"

# --- scenarios ---------------------------------------------------------------------------
# name|kind|modes|midge bench arguments (%D = duration, %P = broker pid, %CA = CA file)
# kind: msg (throughput), lat (fixed moderate rate: latency; also run beside a CPU hog),
# conn (idle connections held 20 s: memory once parked), storm (a burst of handshakes:
# rate, handshake time, memory 1 s after), tls (a storm over TLS).
# QoS 0 with many unthrottled publishers fills megabytes of socket buffers per connection,
# which a broker then drains for tens of seconds after the end: fan-out and pairs therefore
# offer a fixed load above what either broker delivers here (2,000,000 and 1,000,000 msg/s).
# Storms come from 39 source addresses (127.0.0.2-40, about 500 connections each at 19,000).
D=$DURATION
BOTH="unpinned pinned"
STORM="-k 60 --hold 1 --ifaddr 127.0.0.2-127.0.0.40 --broker-pid %P"
SCENARIOS=(
    "fanin_q0|msg|$BOTH|pubsub --pubs 8 --subs 1 --pub-topic bench/%i --sub-topic bench/# -q 0 -s 64 --duration %D"
    "fanin_q1|msg|$BOTH|pubsub --pubs 8 --subs 1 --pub-topic bench/%i --sub-topic bench/# -q 1 -s 64 --duration %D"
    "fanin_q2|msg|$BOTH|pubsub --pubs 8 --subs 1 --pub-topic bench/%i --sub-topic bench/# -q 2 -s 64 --duration %D"
    "fanout_q0|msg|$BOTH|pubsub --pubs 1 --subs 1000 --pub-topic bench/fan --sub-topic bench/fan -q 0 -s 64 --rate 2000 --duration %D"
    "fanout_q1|msg|$BOTH|pubsub --pubs 1 --subs 1000 --pub-topic bench/fan --sub-topic bench/fan -q 1 -s 64 --duration %D"
    "pairs_q0|msg|$BOTH|pubsub --pubs 1000 --subs 1000 --pub-topic bench/%i --sub-topic bench/%i -q 0 -s 64 --rate 1000 --duration %D"
    "lat_fanin|lat|$BOTH hog|pubsub --pubs 8 --subs 1 --pub-topic bench/%i --sub-topic bench/# -q 0 -s 64 --rate 2500 --duration %D"
    "lat_fanout|lat|$BOTH hog|pubsub --pubs 1 --subs 100 --pub-topic bench/fan --sub-topic bench/fan -q 0 -s 64 --rate 500 --duration %D"
    "lat_pairs|lat|$BOTH hog|pubsub --pubs 100 --subs 100 --pub-topic bench/%i --sub-topic bench/%i -q 0 -s 64 --rate 200 --duration %D"
    "latency_q1_10k|lat|$BOTH hog|pubsub --pubs 100 --subs 100 --pub-topic bench/%i --sub-topic bench/%i -q 1 -s 64 --rate 100 --duration %D"
    "storm_10k_c64|storm|pinned|conn -c 10000 --connect-concurrency 64 $STORM"
    "storm_10k_c512|storm|pinned|conn -c 10000 --connect-concurrency 512 $STORM"
    "tls_10k_c64|tls|pinned|conn -c 10000 --connect-concurrency 64 --cafile %CA $STORM"
    "tls_10k_c512|tls|pinned|conn -c 10000 --connect-concurrency 512 --cafile %CA $STORM"
    "idle_10k|conn|$BOTH|conn -c 10000 --hold 20 --connect-concurrency 200 --broker-pid %P"
)
if [ "$QUICK" = 0 ]; then
    SCENARIOS+=(
        "storm_19k_c64|storm|pinned|conn -c 19000 --connect-concurrency 64 $STORM"
        "storm_19k_c512|storm|pinned|conn -c 19000 --connect-concurrency 512 $STORM"
        "tls_19k_c64|tls|pinned|conn -c 19000 --connect-concurrency 64 --cafile %CA $STORM"
        "tls_19k_c512|tls|pinned|conn -c 19000 --connect-concurrency 512 --cafile %CA $STORM"
        "idle_19k|conn|$BOTH|conn -c 19000 --hold 20 --connect-concurrency 200 --broker-pid %P"
    )
fi

RAW="$WORK/raw.tsv"
: >"$RAW"

run_one() {
    local scenario=$1 kind=$2 args=$3 broker=$4 mode=$5 run=$6
    local pinned=0 load_pin=()
    if [ "$mode" != unpinned ]; then pinned=1; load_pin=(taskset -c 1); fi
    BROKER_EXTRA_CONF=${COMPARE_EXTRA_CONF:-}
    [ "$kind" = tls ] && BROKER_EXTRA_CONF="$BROKER_EXTRA_CONF
$TLS_CONF"
    start_broker "$broker" "$pinned"
    if [ "$mode" = hog ]; then
        # The same CPU-bound neighbour for both brokers, on the broker's core.
        taskset -c 0 sh -c 'while :; do :; done' &
        HOG_PID=$!
    fi
    args=${args//%D/$DURATION}
    args=${args//%P/$BROKER_PID}
    args=${args//%CA/$WORK/ca.pem}
    case "$kind" in msg|lat) args="$args --drain-max $DRAIN_MAX --grace $DRAIN_MAX" ;; esac
    local cpu0 cpu1 out rc=0
    cpu0=$(broker_cpu)
    # shellcheck disable=SC2086
    out=$(timeout $((DURATION + 120)) "${load_pin[@]}" "$MIDGE" bench $args -p "$PORT" --json --no-progress \
        2>>"$WORK/load.log") || rc=$?
    cpu1=$(broker_cpu)
    if [ -n "$HOG_PID" ]; then kill "$HOG_PID" 2>/dev/null || true; wait "$HOG_PID" 2>/dev/null || true; HOG_PID=""; fi
    stop_broker
    if [ -z "$out" ]; then
        log "$scenario $broker $mode run $run: no result (exit $rc); see load log:"
        tail -5 "$WORK/load.log" >&2
        return
    fi
    [ "$rc" = 0 ] || log "$scenario $broker $mode run $run: exit $rc (failures counted in the result)"
    echo "$out" >>"$WORK/results.jsonl"
    local cpu_s
    cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')
    echo "$out" | jq -r --arg s "$scenario" --arg b "$broker" --arg m "$mode" --arg k "$kind" \
        --argjson cpu "$cpu_s" '
        def row(metric; v): [$s, $m, $b, metric, (v | tostring)] | @tsv;
        if $k == "conn" then
            row("connected"; .connected),
            row("connect_rate"; .connect_rate),
            row("rss_per_conn_B"; (.rss_per_connection_bytes // 0)),
            row("closed_early"; .closed_early)
        elif $k == "storm" or $k == "tls" then
            row("connected"; .connected),
            row("connect_rate"; .connect_rate),
            row("handshake_p50_us"; (.handshake_us.p50 // 0)),
            row("handshake_p99_us"; (.handshake_us.p99 // 0)),
            row("rss_per_conn_B"; (.rss_per_connection_bytes // 0)),
            row("cpu_us_per_conn"; (if .connected > 0 then 1e6 * $cpu / .connected else 0 end))
        else
            row("recv_rate"; .recv_rate),
            row("send_rate"; .send_rate),
            row("lost_pct"; (if .expected > 0 then 100 * .lost / .expected else 0 end)),
            row("p50_us"; (.latency_us.p50 // 0)),
            row("p99_us"; (.latency_us.p99 // 0)),
            (if $k == "lat" then row("p999_us"; (.latency_us.p999 // 0)) else empty end),
            row("cpu_us_per_msg"; (if .received > 0 then 1e6 * $cpu / .received else 0 end)),
            row("stalled"; .stalled_unacked)
        end' >>"$RAW"
    log "$scenario $broker $mode run $run: $(echo "$out" | jq -c '{connected, rate: ((if .connections > 0 and .publishers == 0 then .connect_rate else .recv_rate end)|floor), lost, p99: (.latency_us.p99 // .handshake_us.p99), rss: .rss_per_connection_bytes, closed_early, stalled_unacked}')"
}

START=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for entry in "${SCENARIOS[@]}"; do
    IFS='|' read -r scenario kind modes args <<<"$entry"
    [[ "$scenario" =~ $ONLY ]] || continue
    for mode in $MODES; do
        [[ " $modes " == *" $mode "* ]] || continue
        for run in $(seq 1 "$RUNS"); do
            # Alternate the order so neither broker always runs on a warmer machine.
            if [ $((run % 2)) = 1 ]; then order="midge mosquitto"; else order="mosquitto midge"; fi
            for broker in $order; do
                run_one "$scenario" "$kind" "$args" "$broker" "$mode" "$run"
            done
        done
    done
done
ELAPSED=$(($(date +%s) - START))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------
# Median of each (scenario, mode, broker, metric), then one row per (scenario, mode, metric).
TABLE=$(sort -t$'\t' -k1,1 -k2,2 -k4,4 -k3,3 "$RAW" | awk -F'\t' '
    function median(arr, n,    i, j, t) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && arr[j-1] > arr[j]; j--) { t = arr[j]; arr[j] = arr[j-1]; arr[j-1] = t }
        return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    function fmt(v) { return (v >= 100 || v == int(v)) ? sprintf("%.0f", v) : sprintf("%.2f", v) }
    {
        key = $1 SUBSEP $2 SUBSEP $4
        if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
        n[key, $3]++; vals[key, $3, n[key, $3]] = $5 + 0
    }
    END {
        lower["p50_us"] = lower["p99_us"] = lower["p999_us"] = lower["rss_per_conn_B"] = lower["cpu_us_per_msg"] = lower["lost_pct"] = 1
        lower["handshake_p50_us"] = lower["handshake_p99_us"] = lower["cpu_us_per_conn"] = 1
        for (k = 1; k <= nk; k++) {
            key = order[k]; split(key, p, SUBSEP)
            for (b = 1; b <= 2; b++) {
                br = (b == 1) ? "midge" : "mosquitto"
                m[b] = "-"
                c = n[key, br]
                if (c > 0) { delete a; for (i = 1; i <= c; i++) a[i] = vals[key, br, i]; m[b] = median(a, c) }
            }
            ratio = (m[1] != "-" && m[2] != "-" && m[2] != 0) ? sprintf("%.2f", m[1] / m[2]) : "-"
            better = (p[3] in lower) ? " (lower is better)" : ""
            printf "| %s | %s | %s%s | %s | %s | %s |\n", p[1], p[2], p[3], better, \
                (m[1] == "-") ? "-" : fmt(m[1]), (m[2] == "-") ? "-" : fmt(m[2]), ratio
        }
    }')

MARK=$([ "$QUICK" = 1 ] && echo "compare-quick" || echo "compare-full")
SECTION="$WORK/section.md"
{
    echo "<!-- $MARK begin (written by bench/compare.sh; edits here are overwritten) -->"
    if [ "$QUICK" = 1 ]; then echo "## Midge vs Mosquitto: quick smoke run (\`bench/compare.sh --quick\`)"
    else echo "## Midge vs Mosquitto (\`bench/compare.sh\`)"; fi
    echo
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: \`nproc\` = $(nproc)," \
         "\`lscpu\` model = \`$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)\`," \
         "kernel $(uname -r), open files hard limit $(ulimit -Hn)."
    echo "Versions: $("$MIDGE" --version) (commit $MIDGE_COMMIT)," \
         "$("$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/ is an MQTT.*//')."
    echo "Runs: $RUNS per broker, mode and scenario, ${DURATION} s of publishing each (medians shown);" \
         "a fresh broker per run; script time ${ELAPSED} s. Modes: \`unpinned\` (broker and load share" \
         "both cores), \`pinned\` (broker \`taskset -c 0\`, load \`taskset -c 1\`), \`hog\` (pinned, and a" \
         "shell busy loop \`taskset -c 0\` beside the broker, the same for both)."
    echo "Load average (1, 5, 15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER (other work on the" \
         "machine during the run shows here; the load itself adds about 2)."
    echo "Broker config (both): \`listener PORT 127.0.0.1\`, \`allow_anonymous true\`, warnings and errors" \
         "logged only${COMPARE_EXTRA_CONF:+, and \`${COMPARE_EXTRA_CONF//$'\n'/\`, \`}\`}; Midge started with \`RUST_LOG=warn\`." \
         "Payload 64 B (its first 16 B are the stamp)."
    echo
    echo "Metrics: \`recv_rate\` = messages delivered to subscribers per second (from the publishers'" \
         "start to the last message received); \`send_rate\` = PUBLISH per second written by the" \
         "publishers; \`lost_pct\` = expected deliveries never received; \`p50_us\`/\`p99_us\` =" \
         "end-to-end latency (\`p999_us\`: p99.9); \`handshake_p50_us\`/\`handshake_p99_us\` = TCP connect" \
         "(and TLS) to CONNACK per connection; \`cpu_us_per_conn\` = broker CPU per connection of a storm" \
         "(its 1 s hold and the disconnects included); \`cpu_us_per_msg\` = broker CPU time (user+system, /proc) per delivered" \
         "message; \`rss_per_conn_B\` = broker VmRSS growth per idle connection (storms: 1 s after the last" \
         "CONNACK; \`idle_*\`: after 20 s); \`stalled\` = publications" \
         "left unacknowledged when the broker made no progress for 10 s. After the publishers stop," \
         "the load waits at most ${DRAIN_MAX} s for queued messages; later ones count as lost."
    echo
    echo "| scenario | mode | metric | Midge | Mosquitto | Midge/Mosquitto |"
    echo "| --- | --- | --- | ---: | ---: | ---: |"
    echo "$TABLE"
    echo
    echo "Load commands (\`midge bench\`, plus \`-p PORT --json --no-progress\`):"
    echo
    for entry in "${SCENARIOS[@]}"; do
        IFS='|' read -r scenario kind modes args <<<"$entry"
        [[ "$scenario" =~ $ONLY ]] || continue
        args=${args//%D/$DURATION}
        args=${args//%CA/ca.pem}
        case "$kind" in msg|lat) args="$args --drain-max $DRAIN_MAX --grace $DRAIN_MAX" ;; esac
        echo "- \`$scenario\` ($modes): \`midge bench ${args//%P/BROKER_PID}\`"
    done
    echo "<!-- $MARK end -->"
} >"$SECTION"

cat "$SECTION"
if [ "$WRITE" = 1 ]; then
    write_section "$MARK" "$SECTION" "$ROOT/bench/RESULTS.md"
    log "wrote $ROOT/bench/RESULTS.md ($MARK section)"
fi
