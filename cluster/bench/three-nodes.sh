# Shared by dead-peer.sh and paused-peer.sh (sourced, from the repository root): builds
# `squall`, and starts three `squall node` processes of the embedded configuration on ports
# 17700-17702 (RPC) and 16480-16482 (RESP), each run in a directory of its own under $WORK.
#   start_three DIR OVERRIDES   OVERRIDES: lines `field = value` replacing the default's
# sets PIDS to the three nodes' process ids; stop_three kills them (also on exit).
command -v redis-benchmark >/dev/null || { echo "$0: redis-benchmark not found" >&2; exit 2; }
cargo build --release -q -p squall-cluster
SQ=${CARGO_TARGET_DIR:-$PWD/target}/release/squall
WORK=$(mktemp -d)
PIDS=()
cleanup() { stop_three; rm -rf "$WORK"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

start_three() {
  local dir="$WORK/$1" overrides=$2
  mkdir -p "$dir"
  "$SQ" config | sed -e "s|data_dir = \"squall-data\"|data_dir = \"$dir/data\"|" \
    -e 's|127.0.0.1:77|127.0.0.1:177|' -e 's|127.0.0.1:638|127.0.0.1:1648|' > "$dir/cluster.toml"
  printf '%s\n' "$overrides" | while IFS= read -r line; do
    if [ -n "$line" ]; then sed -i "s|^${line%% =*} = .*|$line|" "$dir/cluster.toml"; fi
  done
  PIDS=()
  for id in 0 1 2; do
    "$SQ" node --config "$dir/cluster.toml" --id "$id" > "$dir/node-$id.log" 2>&1 &
    PIDS+=($!)
  done
  for port in 16480 16481 16482; do wait_port "$port"; done
}

# Kills the three nodes of the last start_three.
stop_three() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}

# SETs per second of N pipelined SETs of random keys through the RESP port PORT: sets PORT N
sets() {
  redis-benchmark -p "$1" -t set -n "$2" -r 100000000 -P 16 -c 8 --csv 2>/dev/null |
    awk -F'"' '$2 == "SET" {printf "%d", $4}'
}

# The configuration the protocol behaved as before batched gossip: every lagging key to every
# lagging replica on every tick.
BEFORE=$'gossip_backoff = 1\ngossip_batch_keys = 100000000'
