# Shared by the comparison scripts in benches/ (sourced, not run): building mnemo and the load
# tool (mnemo-bench), free loopback ports, starting clusters of mnemo or etcd with etcd's flags,
# restarting them, reading their memory and disk use, and stopping exactly the processes
# started here when the script exits.
#
# A script sources it from the repository root, then calls bench_prepare once.
# BENCH_PROFILE=debug uses the debug build (a quick smoke run of a script, never figures to keep).

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mnemo/target}"
bench_profile="${BENCH_PROFILE:-release}"
bench_bin="$CARGO_TARGET_DIR/$bench_profile"
bench_work=$(mktemp -d)
# Every server process started here, for the exit trap.
bench_pids=()
# Per system: its members' PIDs, client URLs (comma separated) and member names.
declare -A cluster_pids cluster_endpoints cluster_names

bench_cleanup() {
  for pid in "${bench_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$bench_work"
}
trap bench_cleanup EXIT

# Installs what is missing, builds mnemo and mnemo-bench, and checks for etcd and python3.
bench_prepare() {
  scripts/setup
  local profile_flag=()
  if [[ $bench_profile == release ]]; then profile_flag=(--release); fi
  cargo build "${profile_flag[@]}" --locked --bin mnemo --bin mnemo-bench >&2
  command -v etcd >/dev/null || { echo "etcd not found: scripts/setup installs etcd-server" >&2; exit 1; }
  command -v python3 >/dev/null || { echo "python3 not found: the scripts use it for JSON and statistics" >&2; exit 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_ready ENDPOINT [LOG]: until etcdctl finds the server healthy (it needs a leader), for
# 60 s at most; each check is bounded too, so a server that accepts connections but never
# answers cannot stretch the wait. On failure, prints the end of LOG.
wait_ready() {
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    if ETCDCTL_API=3 etcdctl --endpoints="$1" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
  echo "server at $1 did not become ready" >&2
  if [[ -n ${2:-} ]]; then tail -n 20 "$2" >&2; fi
  exit 1
}

# start_server SYSTEM LOG ARGS...: starts mnemo (quiet) or etcd with ARGS in the background,
# logging to LOG; sets started_pid and remembers it for the exit trap.
start_server() {
  local system=$1 log=$2
  shift 2
  if [[ $system == mnemo ]]; then
    "$bench_bin/mnemo" "$@" --log-level warn >>"$log" 2>&1 &
  else
    etcd "$@" >>"$log" 2>&1 &
  fi
  started_pid=$!
  bench_pids+=("$started_pid")
}

# start_cluster SYSTEM MEMBERS: starts a MEMBERS-member cluster of SYSTEM on fresh loopback
# ports and data dirs (both systems get the same layout and flags: etcd's defaults, so fsync on
# for both), waits until every member is healthy, and records its PIDs, endpoints and names.
# A member's command line is kept in $bench_work/NAME.args for restart_cluster.
start_cluster() {
  local system=$1 members=$2 index name client peer initial_cluster=""
  local names=() client_urls=() peer_urls=()
  for index in $(seq 0 $((members - 1))); do
    names+=("$system$index")
    client_urls+=("http://127.0.0.1:$(free_port)")
    peer_urls+=("http://127.0.0.1:$(free_port)")
  done
  for index in "${!names[@]}"; do
    initial_cluster+="${initial_cluster:+,}${names[$index]}=${peer_urls[$index]}"
  done
  for index in "${!names[@]}"; do
    name=${names[$index]} client=${client_urls[$index]} peer=${peer_urls[$index]}
    rm -rf "${bench_work:?}/$name"
    printf '%s\n' --name "$name" --data-dir "$bench_work/$name" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$initial_cluster" --initial-cluster-state new \
      --initial-cluster-token "bench-$system" >"$bench_work/$name.args"
  done
  cluster_names[$system]="${names[*]}"
  cluster_endpoints[$system]=$(IFS=,; echo "${client_urls[*]}")
  launch_cluster "$system"
}

# launch_cluster SYSTEM: starts every member of SYSTEM from its kept command line and waits
# until each is healthy.
launch_cluster() {
  local system=$1 name pids=() endpoints
  for name in ${cluster_names[$system]}; do
    mapfile -t args <"$bench_work/$name.args"
    start_server "$system" "$bench_work/$name.log" "${args[@]}"
    pids+=("$started_pid")
  done
  cluster_pids[$system]="${pids[*]}"
  IFS=, read -ra endpoints <<<"${cluster_endpoints[$system]}"
  local index=0
  for name in ${cluster_names[$system]}; do
    wait_ready "${endpoints[$index]}" "$bench_work/$name.log"
    index=$((index + 1))
  done
}

# leader_first SYSTEM: SYSTEM's client URLs (comma separated) with the leader's first, so that
# connection 0 (and a one-connection case) goes to the leader in both systems, and the others
# are spread over the followers alike; clusters of the same layout then get the same load.
leader_first() {
  ETCDCTL_API=3 etcdctl --endpoints="${cluster_endpoints[$1]}" --dial-timeout=2s --command-timeout=5s \
    endpoint status --write-out=json | python3 -c '
import json, sys
statuses = json.load(sys.stdin)
leader = [s["Endpoint"] for s in statuses if s["Status"]["header"]["member_id"] == s["Status"]["leader"]]
others = [s["Endpoint"] for s in statuses if s["Endpoint"] not in leader]
if len(leader) != 1:
    sys.exit("expected one leader among %s" % [s["Endpoint"] for s in statuses])
print(",".join(leader + others))'
}

# stop_cluster SYSTEM: SIGTERM to each member of SYSTEM, then waits for it to exit.
stop_cluster() {
  local pid
  for pid in ${cluster_pids[$1]:-}; do kill "$pid" 2>/dev/null || true; done
  for pid in ${cluster_pids[$1]:-}; do wait "$pid" 2>/dev/null || true; done
  cluster_pids[$1]=""
}

# restart_cluster SYSTEM: stops SYSTEM's cluster, starts it again on the same data, and sets
# restart_secs to the seconds from the start of the processes until every member answered a
# health check (resolution: one etcdctl call, about 50 ms). It sets a variable rather than
# printing, because in a $(...) subshell the PIDs it starts would be lost to the exit trap.
restart_cluster() {
  stop_cluster "$1"
  local started=$EPOCHREALTIME
  launch_cluster "$1"
  restart_secs=$(python3 -c "print(round($EPOCHREALTIME - $started, 3))")
}

# rss_kib SYSTEM: the largest resident set (VmRSS, KiB) among SYSTEM's members.
rss_kib() {
  local pid largest=0 rss
  for pid in ${cluster_pids[$1]}; do
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    ((rss > largest)) && largest=$rss
  done
  echo "$largest"
}

# cpu_ms SYSTEM: the CPU time (user + system, ms) SYSTEM's running members have used so far.
# The difference across a run, divided by its ops, is a cost per op that depends far less on
# what else the shared machine runs than ops/s does.
cpu_ms() {
  local pid ticks=0 fields
  for pid in ${cluster_pids[$1]}; do
    # Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the ")" that ends the
    # command name, which may itself hold spaces.
    fields=$(sed 's/.*) //' "/proc/$pid/stat")
    read -r -a stat <<<"$fields"
    ticks=$((ticks + stat[11] + stat[12]))
  done
  echo $((ticks * 1000 / $(getconf CLK_TCK)))
}

# disk_kib SYSTEM: the largest data dir (KiB) among SYSTEM's members.
disk_kib() {
  local name largest=0 size
  for name in ${cluster_names[$1]}; do
    size=$(du -sk "$bench_work/$name" | cut -f1)
    ((size > largest)) && largest=$size
  done
  echo "$largest"
}

# run_bench ENDPOINTS ARGS...: one mnemo-bench run; prints its JSON line. The tool's table goes
# to $bench_work/bench.log; on failure the end of it is shown and the script stops.
run_bench() {
  local endpoints=$1
  shift
  if ! "$bench_bin/mnemo-bench" --endpoints "$endpoints" "$@" 2>>"$bench_work/bench.log"; then
    echo "mnemo-bench $* failed against $endpoints" >&2
    tail -n 20 "$bench_work/bench.log" >&2
    exit 1
  fi
}
