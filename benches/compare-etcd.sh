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
source benches/lib.sh
clients=${1:-64}
total=${2:-50000}
bench_prepare

declare -A result
for system in mnemo etcd; do
  client=$(free_port); peer=$(free_port)
  start_server "$system" "$bench_work/$system.log" \
    --name bench --data-dir "$bench_work/$system" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer"
  wait_ready "http://127.0.0.1:$client" "$bench_work/$system.log"
  for op in put range; do
    line=$(run_load "$system" "http://127.0.0.1:$client" "$op" "$clients" "$total")
    echo "$line"
    result[$system.$op]=$(ops_per_sec "$line")
  done
  stop_servers
done
for op in put range; do
  awk -v m="${result[mnemo.$op]}" -v e="${result[etcd.$op]}" -v op="$op" \
    'BEGIN { printf "ratio op=%s mnemo/etcd=%.2f\n", op, m / e }'
done
