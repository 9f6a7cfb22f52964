#!/usr/bin/env bash
# One load case against a 3-member mnemo cluster and a 3-member etcd 3.4 cluster, same machine,
# same run, same load tool (mnemo-bench, its clients spread over the three members): a narrower
# benches/compare-etcd.sh, without the memory and restart cases.
#
#   benches/cluster-compare.sh [CLIENTS] [TOTAL]      (defaults: 64 clients, 50000 ops)
#   SYSTEMS=etcd benches/cluster-compare.sh           (one system only; no ratio)
#   OP=lease benches/cluster-compare.sh 16 20000      (another op: range, txn-cas, lease, mixed)
#   ROUNDS=3 benches/cluster-compare.sh               (repeat, alternating which system goes first)
#
# The three members of a cluster share the machine's cores and disk, so the figures say how the
# systems compare here, not how a cluster of separate machines would perform.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-64}
total=${2:-50000}
op=${OP:-put}
conns=$((clients < 8 ? clients : 8))
MEMBERS=3 ROUNDS=${ROUNDS:-1} MEMORY_KEYS=0 RESTART_KEYS=0 \
  CASES="$op-c$clients|$op --clients $clients --conns $conns --total $total" \
  exec benches/compare-etcd.sh
