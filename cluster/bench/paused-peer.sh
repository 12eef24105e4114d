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
# shellcheck source=cluster/bench/three-nodes.sh
source cluster/bench/three-nodes.sh
mem() { awk -v k="$2" '$1 == k":" {print int($2/1024)}' "/proc/$1/status"; }
run() {
  local name=$1 pause=$4
  start_three "$3" "$2"
  sets 16480 20000 > /dev/null
  local before; before=$(mem "${PIDS[2]}" VmRSS)
  kill -STOP "${PIDS[2]}"
  timeout "$pause" redis-benchmark -p 16480 -t set -n 100000000 -r 100000000 -c 4 -q > /dev/null 2>&1 || true
  kill -CONT "${PIDS[2]}"
  sleep 5
  local t; t=$(sets 16482 20000)
  printf '%-30s pause %ss: node 2 RSS %s MB before, peak %s MB, now %s MB; SET/s through node 2 5 s after resume %s; connections to node 2 rpc: %s\n' \
    "$name" "$pause" "$before" "$(mem "${PIDS[2]}" VmHWM)" "$(mem "${PIDS[2]}" VmRSS)" "$t" "$(ss -tn state established '( dport = :17702 )' | tail -n +2 | wc -l)"
  stop_three
}
echo "paused-peer: node 2 stopped for $PAUSE s under an unpipelined SET load (4 clients) through node 0"
run "every key every tick (before)" "$BEFORE" before "$PAUSE"
run "batched, backoff (defaults)" "" after "$PAUSE"
