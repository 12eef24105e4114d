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
# shellcheck source=cluster/bench/three-nodes.sh
source cluster/bench/three-nodes.sh
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
  local name=$1
  start_three "$3" "$2"
  local healthy dead
  healthy=$(sets 16480 20000)
  kill -9 "${PIDS[2]}"
  wait "${PIDS[2]}" 2>/dev/null || true
  sets 16480 "$KEYS" > /dev/null
  dead=$(sets 16480 20000)
  sleep 1
  local a0 a1 b0 b1
  a0=$(ticks "${PIDS[0]}"); a1=$(ticks "${PIDS[1]}")
  sleep 5
  b0=$(ticks "${PIDS[0]}"); b1=$(ticks "${PIDS[1]}")
  printf '%-34s SET/s healthy %8s  node 2 dead %8s  idle CPU over 5 s: node 0 %4d ticks, node 1 %4d ticks\n' \
    "$name" "$healthy" "$dead" "$((b0 - a0))" "$((b1 - a1))"
  stop_three
}

echo "dead-peer: $KEYS keys written while node 2 is dead; 500 ticks = two cores busy for 5 s"
run "every key every tick (before)" "$BEFORE" before
run "batched, backoff (defaults)" "" after
