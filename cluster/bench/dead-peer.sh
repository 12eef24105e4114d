#!/usr/bin/env bash
# What one dead storage node costs the two survivors, in one run (docs/operations.md, "A
# lagging replica"): three `squall node` processes on loopback; node 2 is killed (SIGKILL);
# a pipelined SET load writes KEYS random keys through node 0, so both survivors hold that
# many keys node 2 lacks. Reported per configuration:
#   - SET throughput through node 0 with all three up, then with node 2 dead;
#   - the survivors' CPU (clock ticks of 10 ms, user + system) over 5 s once the load stopped.
# Two configurations, same binary: the defaults (batched gossip with a backoff for silent
# replicas), and `timers.gossip_backoff = 1` with unbounded batches — every lagging key to
# every lagging replica on every gossip tick, which is what the protocol did before batching.
#
#   cluster/bench/dead-peer.sh [KEYS]
#
# Needs redis-benchmark (Debian: apt-get install redis-tools).
set -euo pipefail
cd "$(dirname "$0")/../.."
KEYS=${1:-40000}
command -v redis-benchmark >/dev/null || { echo "dead-peer.sh: redis-benchmark not found" >&2; exit 2; }
cargo build --release -q -p squall-cluster
SQ=${CARGO_TARGET_DIR:-$PWD/target}/release/squall
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sets() {
  redis-benchmark -p 16480 -t set -n "$1" -r 100000000 -P 16 -c 8 --csv 2>/dev/null |
    awk -F'"' '$2 == "SET" {printf "%d", $4}'
}

run() {
  local name=$1 extra=$2 dir="$WORK/$3"
  mkdir -p "$dir"
  "$SQ" config | sed -e "s|data_dir = \"squall-data\"|data_dir = \"$dir/data\"|" \
    -e 's|127.0.0.1:77|127.0.0.1:177|' -e 's|127.0.0.1:638|127.0.0.1:1648|' > "$dir/cluster.toml"
  printf '%s\n' "$extra" | while IFS= read -r line; do
    if [ -n "$line" ]; then sed -i "s|^${line%% =*} = .*|$line|" "$dir/cluster.toml"; fi
  done
  PIDS=()
  for id in 0 1 2; do
    "$SQ" node --config "$dir/cluster.toml" --id "$id" > "$dir/node-$id.log" 2>&1 &
    PIDS+=($!)
  done
  for port in 16480 16481 16482; do wait_port "$port"; done
  local healthy dead
  healthy=$(sets 20000)
  kill -9 "${PIDS[2]}"
  wait "${PIDS[2]}" 2>/dev/null || true
  sets "$KEYS" > /dev/null
  dead=$(sets 20000)
  sleep 1
  local a0 a1 b0 b1
  a0=$(ticks "${PIDS[0]}"); a1=$(ticks "${PIDS[1]}")
  sleep 5
  b0=$(ticks "${PIDS[0]}"); b1=$(ticks "${PIDS[1]}")
  printf '%-34s SET/s healthy %8s  node 2 dead %8s  idle CPU over 5 s: node 0 %4d ticks, node 1 %4d ticks\n' \
    "$name" "$healthy" "$dead" "$((b0 - a0))" "$((b1 - a1))"
  kill -9 "${PIDS[0]}" "${PIDS[1]}" 2>/dev/null || true
  wait 2>/dev/null || true
}

echo "dead-peer: $KEYS keys written while node 2 is dead; 500 ticks = two cores busy for 5 s"
run "every key every tick (before)" $'gossip_backoff = 1\ngossip_batch_keys = 100000000' before
run "batched, backoff (defaults)" "" after
