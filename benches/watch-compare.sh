#!/usr/bin/env bash
# Watch delivery on a 3-member mnemo cluster against a 3-member etcd 3.4 cluster, same
# machine, same run, same load tool (examples/load.rs --op watch): WATCHERS watch streams
# spread over the members, 8 writers putting TOTAL keys at RATE puts/s in all. Prints each
# system's delivered events/s and send-to-delivery delay (p50, p99, max), whether every
# watcher got every acknowledged put, and the mnemo/etcd ratios.
#
#   benches/watch-compare.sh [WATCHERS] [TOTAL] [RATE]   (defaults: 100 watchers, 20000 puts, 1000/s)
#   RATE=0 runs the writers flat out (throughput rather than delay).
#
# Loopback only, fresh data dirs removed afterwards; stops exactly the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
watchers=${1:-100}
total=${2:-20000}
rate=${3:-1000}
systems=${SYSTEMS:-mnemo etcd}
bench_prepare

declare -A events p99
for system in $systems; do
  start_cluster "$system" 3
  line=$("$bench_bin/examples/load" --endpoint "$cluster_endpoints" --op watch \
    --watchers "$watchers" --clients 8 --total "$total" --rate "$rate" --max-seconds 120 | sed "s/^/system=$system /")
  echo "members=3 $line"
  events[$system]=$(sed -n 's/.*events_per_sec=\([0-9]*\).*/\1/p' <<<"$line")
  p99[$system]=$(sed -n 's/.* p99_ms=\([0-9.]*\).*/\1/p' <<<"$line")
  stop_servers
done
if [[ -n ${events[mnemo]:-} && -n ${events[etcd]:-} ]]; then
  awk -v me="${events[mnemo]}" -v ee="${events[etcd]}" -v mp="${p99[mnemo]}" -v ep="${p99[etcd]}" \
    'BEGIN { printf "ratio op=watch members=3 events_per_sec mnemo/etcd=%.2f p99 mnemo/etcd=%.2f\n", me / ee, mp / ep }'
fi
