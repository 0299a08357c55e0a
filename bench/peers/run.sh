#!/usr/bin/env bash
# vigil, etcd and Redis side by side on this machine: the same workload (N agents refreshing
# every interval x 0.8 over C connections; 1% stop 2 s into the measured window), one run of
# each, one table with the ratios. See docs/benchmarks.md ("Side by side with etcd and Redis").
#
#   bench/peers/run.sh                 # 20,000 agents over 100 connections, 12 s measured
#   bench/peers/run.sh --quick         # 1,000 agents over 10 connections (CI); checks invariants
#   bench/peers/run.sh --agents 100000 --connections 1000
#
# Installs etcd-server and redis-server with apt-get when missing, starts them on loopback
# ports of their own in a temporary directory, and stops them (by PID) when done. Environment:
# VIGIL (the vigil binary; default: built here with cargo, release), PROFILE (release|debug,
# for both builds), OUT (where the JSON and the table go; default target/peers).
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0 AGENTS=20000 CONNS=100 INTERVAL=2s WARMUP=3s MEASURE=12s STOP=0.01 EXPIRY_WAIT=60s
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 AGENTS=1000 CONNS=10 WARMUP=2s MEASURE=11s EXPIRY_WAIT=20s ;;
        --agents) AGENTS="$2"; shift ;;
        --connections) CONNS="$2"; shift ;;
        --interval) INTERVAL="$2"; shift ;;
        --measure) MEASURE="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
PROFILE="${PROFILE:-release}"
OUT="${OUT:-target/peers}"
mkdir -p "$OUT"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
PEERS_TARGET="${PEERS_TARGET_DIR:-$HOME/.cache/vigil-peers-target}"
flag=""; [ "$PROFILE" = release ] && flag="--release"

# etcd and Redis themselves, and protoc (the etcd client compiles etcd's protobuf files).
if ! command -v etcd >/dev/null 2>&1 || ! command -v redis-server >/dev/null 2>&1 \
    || ! command -v protoc >/dev/null 2>&1; then
    echo "== installing etcd-server, redis-server and protobuf-compiler (apt-get)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q etcd-server redis-server protobuf-compiler
fi

echo "== building vigil and the peers' adapter ($PROFILE)"
if [ -z "${VIGIL:-}" ]; then
    cargo build --quiet $flag
    VIGIL="$TARGET/$PROFILE/vigil"
fi
(cd bench/peers && CARGO_TARGET_DIR="$PEERS_TARGET" cargo build --quiet $flag)
PEERS="$PEERS_TARGET/$PROFILE/vigil-peers"

WORK="$(mktemp -d)"
ETCD_PID="" REDIS_PID=""
cleanup() {
    [ -n "$ETCD_PID" ] && kill "$ETCD_PID" 2>/dev/null || true
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting etcd (127.0.0.1:23790) and redis-server (127.0.0.1:63790) in $WORK"
etcd --name bench --data-dir "$WORK/etcd" \
    --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 \
    --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 \
    --initial-cluster bench=http://127.0.0.1:23800 --log-level error >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
redis-server --port 63790 --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
for port in 23790 63790; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

common=(--agents "$AGENTS" --connections "$CONNS" --interval "$INTERVAL" --warmup "$WARMUP" --measure "$MEASURE" --stop-share "$STOP")
echo "== vigil"
"$VIGIL" bench ingest "${common[@]}" --json "$OUT/vigil.json"
echo "== etcd $(etcd --version | head -1)"
"$PEERS" etcd --endpoint 127.0.0.1:23790 --server-pid "$ETCD_PID" "${common[@]}" --expiry-wait "$EXPIRY_WAIT" --json "$OUT/etcd.json"
echo "== redis $(redis-server --version)"
"$PEERS" redis --endpoint redis://127.0.0.1:63790/ --server-pid "$REDIS_PID" "${common[@]}" --expiry-wait "$EXPIRY_WAIT" --json "$OUT/redis.json"

check=""; [ "$QUICK" = 1 ] && check="--check"
python3 bench/peers/table.py $check "$OUT/vigil.json" "$OUT/etcd.json" "$OUT/redis.json" | tee "$OUT/table.md"
