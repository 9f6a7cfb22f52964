#!/usr/bin/env bash
# Puts and ranges against mnemo and etcd 3.4, one member each, same machine, same run, same
# load tool (examples/load.rs over gRPC). Prints each system's figures and mnemo/etcd ratios.
#
#   benches/compare-etcd.sh [CLIENTS] [TOTAL]      (defaults: 64 clients, 50000 ops per phase)
#
# Both servers listen on loopback only, with fresh data dirs that are removed afterwards;
# the script stops exactly the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-64}
total=${2:-50000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mnemo/target}"
scripts/setup
cargo build --release --locked --bin mnemo --example load >&2
command -v etcd >/dev/null || { echo "etcd not found: scripts/setup installs etcd-server" >&2; exit 1; }
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() {
  for _ in $(seq 1 300); do
    if ETCDCTL_API=3 etcdctl --endpoints="$1" endpoint health >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "server at $1 did not become ready" >&2
  exit 1
}

run_phase() { # system endpoint op
  "$bin/examples/load" --endpoint "$2" --op "$3" --clients "$clients" --total "$total" --max-seconds 120 | sed "s/^/system=$1 /"
}

declare -A result
for system in mnemo etcd; do
  client=$(free_port); peer=$(free_port)
  dir="$work/$system"
  args=(--name bench --data-dir "$dir" --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client"
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer"
        --initial-cluster "bench=http://127.0.0.1:$peer")
  if [[ $system == mnemo ]]; then
    "$bin/mnemo" "${args[@]}" --log-level warn >"$work/$system.log" 2>&1 &
  else
    etcd "${args[@]}" >"$work/$system.log" 2>&1 &
  fi
  pids+=($!)
  wait_ready "http://127.0.0.1:$client"
  for op in put range; do
    line=$(run_phase "$system" "http://127.0.0.1:$client" "$op")
    echo "$line"
    result[$system.$op]=$(sed -n 's/.*ops_per_sec=\([0-9]*\).*/\1/p' <<<"$line")
  done
  kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
done
for op in put range; do
  awk -v m="${result[mnemo.$op]}" -v e="${result[etcd.$op]}" -v op="$op" \
    'BEGIN { printf "ratio op=%s mnemo/etcd=%.2f\n", op, m / e }'
done
