#!/usr/bin/env bash
# Put throughput of a 3-member mnemo cluster against a 3-member etcd 3.4 cluster, same
# machine, same run, same load tool (examples/load.rs over gRPC, its clients spread over the
# three members). Prints each system's figures and the mnemo/etcd ratio.
#
#   benches/cluster-compare.sh [CLIENTS] [TOTAL]   (defaults: 64 clients, 50000 puts)
#   SYSTEMS=etcd benches/cluster-compare.sh        (one system only; no ratio)
#   OP=keepalive benches/cluster-compare.sh 64 20000  (another load tool op: range, keepalive)
#
# All members listen on loopback only, with fresh data dirs that are removed afterwards; the
# script stops exactly the processes it started. The three members of a cluster share the
# machine's cores and disk, so the figures say how the systems compare here, not how a
# cluster of separate machines would perform.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
clients=${1:-64}
op=${OP:-put}
total=${2:-50000}
systems=${SYSTEMS:-mnemo etcd}
members=3
bench_prepare

declare -A result
for system in $systems; do
  start_cluster "$system" "$members"
  endpoints=$cluster_endpoints
  line=$(run_load "$system" "$endpoints" "$op" "$clients" "$total")
  echo "members=$members $line"
  result[$system]=$(ops_per_sec "$line")
  stop_servers
done
if [[ -n ${result[mnemo]:-} && -n ${result[etcd]:-} ]]; then
  awk -v m="${result[mnemo]}" -v e="${result[etcd]}" \
    -v op="$op" 'BEGIN { printf "ratio op=%s members=3 mnemo/etcd=%.2f\n", op, m / e }'
fi
