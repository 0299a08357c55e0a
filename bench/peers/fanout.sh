#!/usr/bin/env bash
# vigil, Redis pub/sub and NATS side by side on this machine: the fan-out workload of
# `vigil bench fanout` (a server making R events/s; M subscribers, each on a connection of its
# own and following one of K kinds or channels; the delay from each event to each subscriber),
# in two rows, each run once per system, one table per row with vigil's ratios to each peer:
#
#   row A: 1,000 subscribers over 100 channels, 10,000 events/s (100,000 deliveries/s)
#   row F: the firehose, 100 subscribers on 1 channel, 10,000 events/s (1,000,000 deliveries/s)
#
#   bench/peers/fanout.sh              # both rows, 10 s measured after 2 s of warm-up
#   bench/peers/fanout.sh --quick      # 40 subscribers / 10 channels and 10 / 1, 1,000 events/s,
#                                      # 2 s measured (CI); checks the invariants
#
# vigil runs twice per row: with its default store (SurrealKV, every event written durably
# before it is published) and with `--store mem`, nearer to the peers, which keep nothing.
# All of vigil's monitors are on TCP (`--ws-share 0`) and filtered (`--firehose 0`), as the
# peers' subscribers are.
#
# Installs redis-server and nats-server with apt-get when missing (and protobuf-compiler, which
# the peers' crate needs for its etcd client), starts them on loopback ports of their own
# (Redis 63791, NATS 14222 or the next free of two more) in a temporary directory, and stops them (by PID) when done.
# Environment: VIGIL (the vigil binary; default: built here with cargo), PROFILE
# (release|debug, for both builds), OUT (where the JSON and the tables go; default
# target/peers-fanout), PEERS_TARGET_DIR (the peers' build; default ~/.cache/vigil-peers-target).
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0 RATE=10000 WARMUP=2s MEASURE=10s
A_SUBS=1000 A_CHANNELS=100 F_SUBS=100 AGENTS=10000
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 RATE=1000 WARMUP=1s MEASURE=2s A_SUBS=40 A_CHANNELS=10 F_SUBS=10 AGENTS=1000 ;;
        --rate) RATE="$2"; shift ;;
        --measure) MEASURE="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
PROFILE="${PROFILE:-release}"
OUT="${OUT:-target/peers-fanout}"
mkdir -p "$OUT"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
PEERS_TARGET="${PEERS_TARGET_DIR:-$HOME/.cache/vigil-peers-target}"
flag=""; [ "$PROFILE" = release ] && flag="--release"

# Debian installs nats-server into /usr/sbin, which is not on every user's PATH.
nats_server() { command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; }; }
if ! command -v redis-server >/dev/null 2>&1 || [ -z "$(nats_server)" ] \
    || ! command -v protoc >/dev/null 2>&1; then
    echo "== installing redis-server, nats-server and protobuf-compiler (apt-get)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q redis-server nats-server protobuf-compiler
fi
NATS_SERVER="$(nats_server)"

echo "== building vigil and the peers' adapter ($PROFILE)"
if [ -z "${VIGIL:-}" ]; then
    cargo build --quiet $flag
    VIGIL="$TARGET/$PROFILE/vigil"
fi
(cd bench/peers && CARGO_TARGET_DIR="$PEERS_TARGET" cargo build --quiet $flag)
PEERS="$PEERS_TARGET/$PROFILE/vigil-peers-fanout"

WORK="$(mktemp -d)"
REDIS_PID="" NATS_PID=""
cleanup() {
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
    [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Waits until server $1 writes "$3" to its log $2 (it listens then: a connection that
# succeeds could be to another process holding the port), for at most 10 s; fails (status 1)
# if the server exits or the time runs out.
wait_ready() {
    local deadline=$((SECONDS + 10))
    until grep -q "$3" "$2" 2>/dev/null; do
        if ! kill -0 "$1" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 0.1
    done
}

# Starts NATS on the first of a few ports below the kernel's ephemeral range (32768 and up,
# where a client socket of an earlier step can hold a port) that it can listen on.
start_nats() {
    for port in 14222 14322 14422; do
        "$NATS_SERVER" --addr 127.0.0.1 --port "$port" >"$WORK/nats.log" 2>&1 &
        NATS_PID=$!
        if wait_ready "$NATS_PID" "$WORK/nats.log" "Server is ready"; then
            NATS_PORT=$port
            return 0
        fi
        kill "$NATS_PID" 2>/dev/null || true
        wait "$NATS_PID" 2>/dev/null || true
        NATS_PID=""
        echo "nats-server did not start on port $port; its log:" >&2
        cat "$WORK/nats.log" >&2
    done
    echo "nats-server did not start on any port" >&2
    exit 1
}

echo "== starting redis-server (127.0.0.1:63791) and nats-server in $WORK"
redis-server --port 63791 --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
if ! wait_ready "$REDIS_PID" "$WORK/redis.log" "Ready to accept connections"; then
    echo "redis-server did not start on port 63791; its log:" >&2
    cat "$WORK/redis.log" >&2
    exit 1
fi
start_nats
echo "== nats-server on 127.0.0.1:$NATS_PORT"

# One row: vigil (both stores), Redis, NATS, with M subscribers over K channels.
row() {
    local name="$1" subs="$2" channels="$3"
    local timing=(--rate "$RATE" --warmup "$WARMUP" --measure "$MEASURE")
    local peer=(--subscribers "$subs" --channels "$channels" "${timing[@]}")
    for store in surrealkv mem; do
        echo "== row $name: vigil, store $store"
        "$VIGIL" bench fanout --monitors "$subs" --kinds "$channels" --firehose 0 --ws-share 0 \
            --agents "$AGENTS" --store "$store" "${timing[@]}" --json "$OUT/$name-vigil-$store.json"
    done
    echo "== row $name: $(redis-server --version | cut -d' ' -f1-3)"
    "$PEERS" redis --endpoint redis://127.0.0.1:63791/ --server-pid "$REDIS_PID" "${peer[@]}" \
        --json "$OUT/$name-redis.json"
    echo "== row $name: $("$NATS_SERVER" --version)"
    "$PEERS" nats --endpoint "127.0.0.1:$NATS_PORT" --server-pid "$NATS_PID" "${peer[@]}" \
        --json "$OUT/$name-nats.json"
}
row A "$A_SUBS" "$A_CHANNELS"
row F "$F_SUBS" 1

check=""; [ "$QUICK" = 1 ] && check="--check"
: >"$OUT/table.md"
for name in A F; do
    python3 bench/peers/fanout_table.py $check --title "Row $name" "$OUT/$name-vigil-surrealkv.json" \
        "$OUT/$name-vigil-mem.json" "$OUT/$name-redis.json" "$OUT/$name-nats.json" | tee -a "$OUT/table.md"
done
