#!/usr/bin/env bash
# Squall vs redis-server on this machine, in one run (docs/performance.md).
#
#   cluster/bench/compare.sh [REQUESTS] [CLIENTS] [SECONDS]
#
# 1. `squall bench kv` (with its ping baseline) against a one-node and a three-node cluster.
# 2. `redis-benchmark -t set,get` without and with pipelining (-P 16; one key, then 100,000
#    random keys) against redis-server and
#    against Squall's RESP port (one node, then node 0 of three), printing throughput ratios.
# 3. Durable writes: a one-node Squall at each sync policy (always, batch, never) against
#    redis-server with the append-only file at the matching fsync policy (always, everysec,
#    no), SET only, unpipelined and pipelined over random keys.
# Needs redis-server and redis-benchmark (Debian: apt-get install redis-server).
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-100000}
C=${2:-50}
SECS=${3:-5}
for tool in redis-server redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool not found (apt-get install redis-server)" >&2; exit 2; }
done
cargo build --release -q -p squall-cluster
SQ=$PWD/target/release/squall
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/one.toml" <<TOML
[cluster]
replication = 1
data_dir = "$WORK/one-data"
[[node]]
id = 0
rpc = "127.0.0.1:7710"
resp = "127.0.0.1:6390"
TOML
"$SQ" config | sed "s|data_dir = \"squall-data\"|data_dir = \"$WORK/three-data\"|" > "$WORK/three.toml"

wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

# rb PORT [extra args]: redis-benchmark's CSV rows for SET and GET
# ("test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms").
rb() {
  local port=$1; shift
  redis-benchmark -p "$port" -t set,get -n "$N" -c "$C" --csv "$@" 2>/dev/null | tr -d '"' | grep -E '^(SET|GET),'
}
rps() { awk -F, -v t="$1" '$1==t {print $2}'; }
show() { awk -F, '{ printf "%s %.0f req/s p50 %s ms p99 %s ms; ", $1, $2, $5, $7 }'; }

# compare_redis PORT LABEL: redis-benchmark against redis-server and Squall's RESP port PORT,
# unpipelined, pipelined on one key, pipelined over random keys; throughput ratios.
compare_redis() {
  local port=$1 label=$2 P R S t
  for P in "-P 1" "-P 16" "-P 16 -r 100000"; do
    echo; echo "== redis-benchmark -t set,get $P: redis-server vs squall ($label) =="
    # shellcheck disable=SC2086
    R=$(rb 6399 $P); S=$(rb "$port" $P)
    echo "redis-server: $(echo "$R" | show)"
    echo "squall:       $(echo "$S" | show)"
    for t in SET GET; do
      awk -v t="$t" -v p="$P" -v r="$(echo "$R" | rps "$t")" -v s="$(echo "$S" | rps "$t")" \
        'BEGIN { printf "%s squall/redis throughput ratio (%s): %.2f\n", t, p, s / r }'
    done
  done
}

echo "== machine: $(nproc) cores; requests $N, clients $C =="
redis-server --port 6399 --save '' --appendonly no > "$WORK/redis.log" 2>&1 & PIDS+=($!)
"$SQ" --config "$WORK/one.toml" up > "$WORK/one.log" 2>&1 & ONE=$!; PIDS+=($ONE)
wait_port 6399; wait_port 6390

echo; echo "== squall bench kv, one node (replication 1), ${SECS}s per phase =="
"$SQ" --config "$WORK/one.toml" bench kv --quiet --duration "$SECS" --clients "$C" --read-ratio 0.5

compare_redis 6390 "one node"
kill -INT "$ONE"; wait "$ONE" || true

"$SQ" --config "$WORK/three.toml" up > "$WORK/three.log" 2>&1 & THREE=$!; PIDS+=($THREE)
wait_port 6380; wait_port 6381; wait_port 6382
echo; echo "== squall bench kv, three nodes (replication 3, majority writes), ${SECS}s per phase =="
"$SQ" --config "$WORK/three.toml" bench kv --quiet --duration "$SECS" --clients "$C" --read-ratio 0.5
compare_redis 6380 "node 0 of three"
kill -INT "$THREE"; wait "$THREE" || true

# Durable writes: SET throughput of a one-node Squall at each sync policy against redis-server
# with its append-only file at the matching fsync policy, in fresh data directories.
for pair in "always always" "batch everysec" "never no"; do
  set -- $pair
  rm -rf "$WORK/one-data" "$WORK/aof"; mkdir -p "$WORK/aof"
  redis-server --port 6398 --save '' --appendonly yes --appendfsync "$2" --dir "$WORK/aof" \
    > "$WORK/redis-aof.log" 2>&1 & AOF=$!; PIDS+=($AOF)
  "$SQ" --config "$WORK/one.toml" --sync "$1" up > "$WORK/one-$1.log" 2>&1 & ONE=$!; PIDS+=($ONE)
  wait_port 6398; wait_port 6390
  for P in "-P 1" "-P 16 -r 100000"; do
    # shellcheck disable=SC2086
    R=$(redis-benchmark -p 6398 -t set -n "$N" -c "$C" --csv $P 2>/dev/null | tr -d '"' | grep -E '^SET,')
    # shellcheck disable=SC2086
    S=$(redis-benchmark -p 6390 -t set -n "$N" -c "$C" --csv $P 2>/dev/null | tr -d '"' | grep -E '^SET,')
    echo; echo "== durable SET $P: squall --sync $1 vs redis-server appendfsync $2 =="
    echo "redis-server: $(echo "$R" | show)"
    echo "squall:       $(echo "$S" | show)"
    awk -v p="$P" -v a="$1" -v b="$2" -v r="$(echo "$R" | rps SET)" -v s="$(echo "$S" | rps SET)" \
      'BEGIN { printf "SET squall(%s)/redis(appendfsync %s) throughput ratio (%s): %.2f\n", a, b, p, s / r }'
  done
  kill -INT "$ONE" "$AOF"; wait "$ONE" "$AOF" || true
done
