#!/usr/bin/env bash
# What pausing one storage node costs it when it resumes, in one run (docs/operations.md, "A
# lagging replica"): three `squall node` processes on loopback; node 2 is stopped (SIGSTOP)
# for PAUSE seconds while 4 clients write random keys through node 0 as fast as they can,
# then resumed (SIGCONT). Reported per configuration: node 2's RSS before the pause, its peak
# (VmHWM) and current RSS 5 s after resuming, pipelined SET throughput through node 2 then,
# and its established RPC connections. Two configurations of the same binary, as in
# dead-peer.sh: the defaults, and every lagging key to every lagging replica on every tick.
#
#   cluster/bench/paused-peer.sh [PAUSE]
#
# Needs redis-benchmark (Debian: apt-get install redis-tools).
set -euo pipefail
cd "$(dirname "$0")/../.."
PAUSE=${1:-20}
command -v redis-benchmark >/dev/null || { echo "paused-peer.sh: redis-benchmark not found" >&2; exit 2; }
cargo build --release -q -p squall-cluster
SQ=${CARGO_TARGET_DIR:-$PWD/target}/release/squall
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
mem() { awk -v k="$2" '$1 == k":" {print int($2/1024)}' "/proc/$1/status"; }
run() {
  local name=$1 extra=$2 dir="$WORK/$3" pause=$4
  mkdir -p "$dir"
  "$SQ" config | sed -e "s|data_dir = \"squall-data\"|data_dir = \"$dir/data\"|" \
    -e 's|127.0.0.1:77|127.0.0.1:177|' -e 's|127.0.0.1:638|127.0.0.1:1648|' > "$dir/cluster.toml"
  printf '%s\n' "$extra" | while IFS= read -r line; do
    if [ -n "$line" ]; then sed -i "s|^${line%% =*} = .*|$line|" "$dir/cluster.toml"; fi
  done
  PIDS=()
  for id in 0 1 2; do "$SQ" node --config "$dir/cluster.toml" --id "$id" > "$dir/node-$id.log" 2>&1 & PIDS+=($!); done
  for port in 16480 16481 16482; do wait_port "$port"; done
  redis-benchmark -p 16480 -t set -n 20000 -r 100000000 -P 16 -c 8 -q > /dev/null 2>&1
  local before; before=$(mem "${PIDS[2]}" VmRSS)
  kill -STOP "${PIDS[2]}"
  timeout "$pause" redis-benchmark -p 16480 -t set -n 100000000 -r 100000000 -c 4 -q > /dev/null 2>&1 || true
  kill -CONT "${PIDS[2]}"
  sleep 5
  local t; t=$(redis-benchmark -p 16482 -t set -n 20000 -r 100000000 -P 16 -c 8 --csv 2>/dev/null | awk -F'"' '$2 == "SET" {printf "%d", $4}')
  printf '%-30s pause %ss: node 2 RSS %s MB before, peak %s MB, now %s MB; SET/s through node 2 5 s after resume %s; connections to node 2 rpc: %s\n' \
    "$name" "$pause" "$before" "$(mem "${PIDS[2]}" VmHWM)" "$(mem "${PIDS[2]}" VmRSS)" "$t" "$(ss -tn state established '( dport = :17702 )' | tail -n +2 | wc -l)"
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
echo "paused-peer: node 2 stopped for $PAUSE s under an unpipelined SET load (4 clients) through node 0"
run "every key every tick (before)" $'gossip_backoff = 1\ngossip_batch_keys = 100000000' before "$PAUSE"
run "batched, backoff (defaults)" "" after "$PAUSE"
