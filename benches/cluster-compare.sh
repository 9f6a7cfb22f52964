#!/usr/bin/env bash
# Put throughput of a 3-member mnemo cluster against a 3-member etcd 3.4 cluster, same
# machine, same run, same load tool (examples/load.rs over gRPC, its clients spread over the
# three members). Prints each system's figures and the mnemo/etcd ratio.
#
#   benches/cluster-compare.sh [CLIENTS] [TOTAL]   (defaults: 64 clients, 50000 puts)
#   SYSTEMS=etcd benches/cluster-compare.sh        (one system only; no ratio)
#
# All members listen on loopback only, with fresh data dirs that are removed afterwards; the
# script stops exactly the processes it started. The three members of a cluster share the
# machine's cores and disk, so the figures say how the systems compare here, not how a
# cluster of separate machines would perform.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
clients=${1:-64}
total=${2:-50000}
systems=${SYSTEMS:-mnemo etcd}
members=3
bench_prepare

declare -A result
for system in $systems; do
  names=(); clients_urls=(); peer_urls=()
  for index in $(seq 0 $((members - 1))); do
    names+=("$system$index")
    clients_urls+=("http://127.0.0.1:$(free_port)")
    peer_urls+=("http://127.0.0.1:$(free_port)")
  done
  initial_cluster=""
  for index in "${!names[@]}"; do
    initial_cluster+="${initial_cluster:+,}${names[$index]}=${peer_urls[$index]}"
  done
  for index in "${!names[@]}"; do
    start_server "$system" "$bench_work/${names[$index]}.log" \
      --name "${names[$index]}" --data-dir "$bench_work/${names[$index]}" \
      --listen-client-urls "${clients_urls[$index]}" --advertise-client-urls "${clients_urls[$index]}" \
      --listen-peer-urls "${peer_urls[$index]}" --initial-advertise-peer-urls "${peer_urls[$index]}" \
      --initial-cluster "$initial_cluster" --initial-cluster-state new \
      --initial-cluster-token "bench-$system"
  done
  for index in "${!names[@]}"; do
    wait_ready "${clients_urls[$index]}" "$bench_work/${names[$index]}.log"
  done
  endpoints=$(IFS=,; echo "${clients_urls[*]}")
  line=$(run_load "$system" "$endpoints" put "$clients" "$total")
  echo "members=$members $line"
  result[$system]=$(ops_per_sec "$line")
  stop_servers
done
if [[ -n ${result[mnemo]:-} && -n ${result[etcd]:-} ]]; then
  awk -v m="${result[mnemo]}" -v e="${result[etcd]}" \
    'BEGIN { printf "ratio op=put members=3 mnemo/etcd=%.2f\n", m / e }'
fi
