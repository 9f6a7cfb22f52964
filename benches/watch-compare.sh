#!/usr/bin/env bash
# Watch delivery on a 3-member mnemo cluster against a 3-member etcd 3.4 cluster, same machine,
# same run, same load tool (mnemo-bench watch): WATCHERS watch streams spread over the members,
# 8 writers putting TOTAL keys at RATE puts/s in all, each value carrying its send time. Prints
# send-to-delivery latency, missing events and the mnemo/etcd ratios (a narrower
# benches/compare-etcd.sh).
#
#   benches/watch-compare.sh [WATCHERS] [TOTAL] [RATE]   (defaults: 100 watchers, 20000 puts, 1000/s)
#   RATE=0 runs the writers flat out (throughput rather than delay).
set -euo pipefail
cd "$(dirname "$0")/.."
watchers=${1:-100}
total=${2:-20000}
rate=${3:-1000}
MEMBERS=3 ROUNDS=${ROUNDS:-1} MEMORY_KEYS=0 RESTART_KEYS=0 \
  CASES="watch-w$watchers-r$rate|watch --watchers $watchers --rate $rate --clients 8 --conns 8 --total $total" \
  exec benches/compare-etcd.sh
