# Shared shell for the benchmark scripts: free loopback ports, starting and stopping a
# broker (Midge or Mosquitto) on a mosquitto.conf written here, and its CPU time.
# Source it after setting WORK (a scratch directory), MIDGE and MOSQUITTO (binaries); the
# broker's extra mosquitto.conf lines go in BROKER_EXTRA_CONF (default: none).

BROKER_PID=""
BROKER_EXTRA_CONF=${BROKER_EXTRA_CONF:-}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p
    while :; do
        # Below the ephemeral range (32768-60999), so no client socket holds it.
        p=$((20000 + RANDOM % 12000))
        port_in_use "$p" || { echo "$p"; return; }
    done
}

# start_broker NAME PINNED: starts the broker, sets BROKER_PID and PORT.
start_broker() {
    local name=$1 pinned=$2 conf="$WORK/broker.conf" i
    PORT=$(free_port)
    cat >"$conf" <<EOF
listener $PORT 127.0.0.1
allow_anonymous true
log_dest stderr
log_type error
log_type warning
connection_messages false
$BROKER_EXTRA_CONF
EOF
    local pin=()
    [ "$pinned" = 1 ] && pin=(taskset -c 0)
    case "$name" in
        midge) RUST_LOG=warn "${pin[@]}" "$MIDGE" -c "$conf" 2>>"$WORK/midge.log" & ;;
        mosquitto) "${pin[@]}" "$MOSQUITTO" -c "$conf" 2>>"$WORK/mosquitto.log" & ;;
    esac
    BROKER_PID=$!
    for i in $(seq 1 1000); do
        port_in_use "$PORT" && return 0
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.01
    done
    log "$name did not start; its log:"
    tail -20 "$WORK/$name.log" >&2
    exit 1
}

stop_broker() {
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 500); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.01
    done
    kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

# CPU seconds (user + system) the broker has used so far.
broker_cpu() {
    local tck
    tck=$(getconf CLK_TCK)
    awk -v t="$tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$BROKER_PID/stat"
}


# write_section MARK SECTION_FILE RESULTS: puts the file's text in RESULTS between the
# `<!-- MARK begin` and `<!-- MARK end` lines (the section file has both), replacing what
# was there, or appends it.
write_section() {
    local mark=$1 section=$2 results=$3
    touch "$results"
    if grep -q "<!-- $mark begin" "$results"; then
        awk -v mark="$mark" -v section="$section" '
            index($0, "<!-- " mark " begin") == 1 { while ((getline line < section) > 0) print line; skip = 1; next }
            index($0, "<!-- " mark " end") == 1 { skip = 0; next }
            !skip { print }' "$results" >"$WORK/results.new"
        cat "$WORK/results.new" >"$results"
    else
        { echo; cat "$section"; } >>"$results"
    fi
}

# machine_line: the machine a result was measured on, in one sentence.
machine_line() {
    echo "Machine: \`nproc\` = $(nproc)," \
         "\`lscpu\` model = \`$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -1)\`," \
         "kernel $(uname -r)."
}
