#!/usr/bin/env bash
# One stuck subscriber must not slow anybody else: Midge against Mosquitto, same run.
#
# Usage: bench/slow-consumer.sh [--runs N] [--duration SECS] [--midge BIN] [--no-write]
#
# The scenario of issue 11, tried as a new user would: a publisher sends 1 KB messages to
# `slow/t` as fast as it can for SECS seconds (15), a healthy subscriber reads `slow/t`,
# and in the `stuck` case a second subscriber of `slow/t` stops reading once subscribed
# (bench/stuck_subscriber.py: a 4 KiB receive buffer, keep-alive 0, never reads). Each case
# runs on a fresh broker with the same mosquitto.conf for both brokers, at QoS 0 and QoS 1;
# `alone` is the same load without the stuck subscriber. The medians go to bench/RESULTS.md
# between this script's markers. Every load is bounded in time and stops by itself.
set -euo pipefail
set -f

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
DURATION=15
WRITE=1
MIDGE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --midge) MIDGE=$(realpath "$2"); shift ;;
        --no-write) WRITE=0 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "slow-consumer.sh: $*" >&2; }

command -v jq >/dev/null || { log "needs jq (apt-get install jq)"; exit 1; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
[ -x "$MOSQUITTO" ] || { log "needs mosquitto (apt-get install mosquitto)"; exit 1; }
if [ -z "$MIDGE" ]; then
    log "building midge (release)"
    (cd "$ROOT" && cargo build --release -q -p midge --bin midge)
    MIDGE="$ROOT/target/release/midge"
fi

WORK=$(mktemp -d /tmp/midge-slow.XXXXXX)
STUCK_PID=""
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
cleanup() {
    [ -z "$STUCK_PID" ] || kill "$STUCK_PID" 2>/dev/null || true
    [ -z "$BROKER_PID" ] || kill "$BROKER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_stuck QOS: a subscriber of slow/t that stops reading; returns once it subscribed.
start_stuck() {
    local fifo="$WORK/stuck.out" i
    python3 "$ROOT/bench/stuck_subscriber.py" "$PORT" slow/t "$1" $((DURATION + 60)) >"$fifo" 2>&1 &
    STUCK_PID=$!
    for i in $(seq 1 500); do
        grep -q subscribed "$fifo" 2>/dev/null && return 0
        kill -0 "$STUCK_PID" 2>/dev/null || break
        sleep 0.01
    done
    log "the stuck subscriber did not subscribe:"; cat "$fifo" >&2; exit 1
}

RAW="$WORK/raw.tsv"
: >"$RAW"
run_one() {
    local broker=$1 qos=$2 case=$3 out cpu0 cpu1 rc=0
    start_broker "$broker" 0
    [ "$case" = stuck ] && start_stuck "$qos"
    cpu0=$(broker_cpu)
    out=$(timeout $((DURATION + 60)) "$MIDGE" bench pubsub --pubs 1 --subs 1 \
        --pub-topic slow/t --sub-topic slow/t -q "$qos" -s 1024 --duration "$DURATION" \
        --drain-max 5 --grace 5 -p "$PORT" --json --no-progress 2>>"$WORK/load.log") || rc=$?
    cpu1=$(broker_cpu)
    if [ -n "$STUCK_PID" ]; then kill "$STUCK_PID" 2>/dev/null || true; wait "$STUCK_PID" 2>/dev/null || true; STUCK_PID=""; fi
    stop_broker
    [ -n "$out" ] || { log "$broker q$qos $case: no result (exit $rc)"; tail -5 "$WORK/load.log" >&2; return; }
    echo "$out" | jq -r --arg b "$broker" --arg c "q${qos}_$case" \
        --argjson cpu "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.2f", b - a }')" '
        def row(m; v): [$c, $b, m, (v | tostring)] | @tsv;
        row("published"; .sent),
        row("healthy_received"; .received),
        row("send_rate"; .send_rate),
        row("healthy_recv_rate"; .recv_rate),
        row("healthy_lost_pct"; (if (.expected // 0) > 0 then 100 * (.lost // 0) / .expected else 0 end)),
        row("broker_cpu_s"; $cpu)' >>"$RAW"
}

START=$(date +%s)
for run in $(seq 1 "$RUNS"); do
    for qos in 0 1; do
        for case in alone stuck; do
            # Alternate which broker goes first.
            if [ $((run % 2)) = 1 ]; then order="midge mosquitto"; else order="mosquitto midge"; fi
            for broker in $order; do
                log "run $run q$qos $case $broker"
                run_one "$broker" "$qos" "$case"
            done
        done
    done
done
ELAPSED=$(( $(date +%s) - START ))

# Medians per case, broker and metric; then one row per case and metric.
TABLE=$(sort -k1,1 -k3,3 -k2,2 "$RAW" | awk -F'\t' '
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { key = $1 "\t" $3; vals[key "\t" $2] = vals[key "\t" $2] " " $4; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
    END {
        for (i = 1; i <= k; i++) {
            split(order[i], p, "\t")
            m = median(vals[order[i] "\tmidge"]); q = median(vals[order[i] "\tmosquitto"])
            printf "| %s | %s | %.6g | %.6g |\n", p[1], p[2], m, q
        }
    }')

SECTION="$WORK/section.md"
{
    echo "<!-- slow-consumer begin (written by bench/slow-consumer.sh; edits here are overwritten) -->"
    echo "## One stuck subscriber (\`bench/slow-consumer.sh\`)"
    echo
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). $(machine_line)"
    echo "Versions: $("$MIDGE" --version) (commit $(cd "$ROOT" && git rev-parse --short HEAD))," \
         "$("$MOSQUITTO" -h 2>/dev/null | head -1 | sed 's/ is an MQTT.*//')."
    echo "Runs: $RUNS per broker and case (medians), ${DURATION} s of publishing each, unpinned, a fresh" \
         "broker per run; script time ${ELAPSED} s. Load: \`midge bench pubsub --pubs 1 --subs 1" \
         "--pub-topic slow/t --sub-topic slow/t -q QOS -s 1024 --duration $DURATION --drain-max 5 --grace 5\`;" \
         "\`stuck\` adds \`bench/stuck_subscriber.py\` on \`slow/t\` (subscribes, then never reads)." \
         "Broker defaults otherwise (\`max_queued_messages 1000\` for both)."
    echo
    echo "| case | metric | Midge | Mosquitto |"
    echo "| --- | --- | ---: | ---: |"
    echo "$TABLE"
    echo "<!-- slow-consumer end -->"
} >"$SECTION"
cat "$SECTION"
if [ "$WRITE" = 1 ]; then
    write_section slow-consumer "$SECTION" "$ROOT/bench/RESULTS.md"
    log "wrote bench/RESULTS.md (slow-consumer section)"
fi
