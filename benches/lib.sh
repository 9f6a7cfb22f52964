# Shared by the comparison scripts in benches/ (sourced, not run): building the release
# binaries, free loopback ports, starting servers with etcd's flags, waiting for them, and
# stopping exactly the processes started here when the script exits.
#
# A script sources it from the repository root, then calls bench_prepare once.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mnemo/target}"
bench_bin="$CARGO_TARGET_DIR/release"
bench_work=$(mktemp -d)
bench_pids=()

bench_cleanup() {
  for pid in "${bench_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$bench_work"
}
trap bench_cleanup EXIT

# Installs what is missing, builds mnemo and the load tool in release, and checks for etcd.
bench_prepare() {
  scripts/setup
  cargo build --release --locked --bin mnemo --example load >&2
  command -v etcd >/dev/null || { echo "etcd not found: scripts/setup installs etcd-server" >&2; exit 1; }
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_ready ENDPOINT [LOG]: until etcdctl finds the server healthy (it needs a leader), for
# 30 s at most; each check is bounded too, so a server that accepts connections but never
# answers cannot stretch the wait. On failure, prints the end of LOG.
wait_ready() {
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if ETCDCTL_API=3 etcdctl --endpoints="$1" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "server at $1 did not become ready" >&2
  if [[ -n ${2:-} ]]; then tail -n 20 "$2" >&2; fi
  exit 1
}

# start_server SYSTEM LOG ARGS...: starts mnemo (quiet) or etcd with ARGS in the background,
# logging to LOG, and remembers its PID for stop_servers and the exit trap.
start_server() {
  local system=$1 log=$2
  shift 2
  if [[ $system == mnemo ]]; then
    "$bench_bin/mnemo" "$@" --log-level warn >"$log" 2>&1 &
  else
    etcd "$@" >"$log" 2>&1 &
  fi
  bench_pids+=($!)
}

# Stops every server started so far and forgets them.
stop_servers() {
  for pid in "${bench_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  bench_pids=()
}

# run_load SYSTEM ENDPOINTS OP CLIENTS TOTAL: one load phase, its line prefixed with system=.
run_load() {
  "$bench_bin/examples/load" --endpoint "$2" --op "$3" --clients "$4" --total "$5" --max-seconds 120 | sed "s/^/system=$1 /"
}

# ops_per_sec LINE: the ops_per_sec figure of a load line.
ops_per_sec() { sed -n 's/.*ops_per_sec=\([0-9]*\).*/\1/p' <<<"$1"; }

# start_cluster SYSTEM MEMBERS: starts a MEMBERS-member cluster of SYSTEM on fresh loopback
# ports and data dirs, waits until every member is healthy, and sets cluster_endpoints to
# the comma-separated client URLs.
start_cluster() {
  local system=$1 members=$2 index
  local names=() clients_urls=() peer_urls=() initial_cluster=""
  for index in $(seq 0 $((members - 1))); do
    names+=("$system$index")
    clients_urls+=("http://127.0.0.1:$(free_port)")
    peer_urls+=("http://127.0.0.1:$(free_port)")
  done
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
  cluster_endpoints=$(IFS=,; echo "${clients_urls[*]}")
}
