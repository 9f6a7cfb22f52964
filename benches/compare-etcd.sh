#!/usr/bin/env bash
# mnemo against etcd 3.4 on the same machine in the same run, with the same load tool
# (mnemo-bench, plain etcd v3 gRPC): for each cluster size in MEMBERS, a cluster of each system
# with the same layout (loopback, fresh data dirs, etcd's default flags: fsync on, no unsafe
# flags), both running while the cases run; each case runs against each system in turn, the
# first system alternating from round to round, for ROUNDS rounds. The load tool's first
# connection goes to the leader, the others round-robin over the members, in both systems.
# Then, per cluster size and system on fresh clusters: the resident memory and disk use after
# loading MEMORY_KEYS keys of 1 KiB, and the time a restart takes to be ready again with
# RESTART_KEYS keys.
#
# Prints progress on stderr and, at the end, markdown tables on stdout (medians, min–max
# spread, and mnemo/etcd ratios) to paste into benches/RESULTS.md.
#
#   benches/compare-etcd.sh                                   (the full run; long)
#   MEMBERS=1 ROUNDS=1 TOTAL=200 RANGE_KEYS=500 MEMORY_KEYS=500 RESTART_KEYS=500 BENCH_PROFILE=debug \
#     benches/compare-etcd.sh                                 (a smoke run of the script)
#
# Settings (environment):
#   MEMBERS       cluster sizes, default "1 3"
#   ROUNDS        rounds of every case, default 3
#   TOTAL         ops per case run, default 20000 (watch: TOTAL/4 puts, at 500/s)
#   SYSTEMS       default "mnemo etcd"
#   CASES         newline-separated "name|mnemo-bench arguments" (default: the list below)
#   RANGE_KEYS    keys loaded for the range and mixed cases, default 10000
#   MEMORY_KEYS   keys of 1 KiB loaded before reading RSS, default 100000 (0: skip)
#   RESTART_KEYS  keys loaded before the restart is timed, default 1000000 (0: skip)
#   SWEEP         client counts for a put and linearizable range sweep, e.g. "1 8 32 128 512"
#   PLOTS         directory for SVG plots of the sweep: ops/s and p99 against clients
#   RAW           file to keep every result as a JSON line (default: discarded)
#   BENCH_PROFILE release (default) or debug
#
# The script stops exactly the processes it started and removes its data dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
members_list=${MEMBERS:-1 3}
rounds=${ROUNDS:-3}
total=${TOTAL:-20000}
systems=(${SYSTEMS:-mnemo etcd})
memory_keys=${MEMORY_KEYS:-100000}
restart_keys=${RESTART_KEYS:-1000000}
watch_total=$((total / 4 > 0 ? total / 4 : 1))
# Range and mixed cases read the keys the set-up step loads under range/.
range_keys=${RANGE_KEYS:-10000}
default_cases="put-c64|put --clients 64 --conns 8 --total $total
put-c1|put --clients 1 --conns 1 --total $total
range-l-c64|range --consistency l --clients 64 --conns 8 --prefix range/ --key-space $range_keys --preload 0 --total $total
range-s-c64|range --consistency s --clients 64 --conns 8 --prefix range/ --key-space $range_keys --preload 0 --total $total
txn-cas-c16|txn-cas --clients 16 --conns 4 --key-space 1000 --prefix cas/ --total $total
watch-w100-r500|watch --watchers 100 --rate 500 --clients 8 --conns 8 --prefix watch/ --total $watch_total
lease-c16|lease --clients 16 --conns 4 --total $total
mixed-r90-c64|mixed --read-ratio 0.9 --clients 64 --conns 8 --prefix range/ --key-space $range_keys --preload 0 --total $total"
cases=${CASES:-$default_cases}
# The concurrency sweep: put and linearizable range at each client count, for the plots.
for clients in ${SWEEP:-}; do
  conns=$((clients < 8 ? clients : 8))
  cases+="
sweep-put-c$clients|put --clients $clients --conns $conns --total $total
sweep-range-l-c$clients|range --consistency l --clients $clients --conns $conns --prefix range/ --key-space $range_keys --preload 0 --total $total"
done
if [[ -n ${PLOTS:-} ]]; then mkdir -p "$PLOTS"; fi
bench_prepare

raw="$bench_work/results.jsonl"
: >"$raw"

# record KIND MEMBERS SYSTEM CASE ROUND JSON: appends JSON with the run's coordinates to $raw.
record() {
  python3 -c '
import json, sys
kind, members, system, case, round_, line = sys.argv[1:]
result = json.loads(line)
result.update(kind=kind, members=int(members), system=system, case=case, round=int(round_))
print(json.dumps(result))' "$@" >>"$raw"
}

# summary JSON: the figures a progress line shows.
summary() {
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
extra = " missing=%d" % r["missing"] if "missing" in r else ""
print("ops/s=%.0f p99=%.2fms errors=%d%s" % (r["ops_per_sec"], r["p99_us"] / 1000, r["errors"], extra))' "$1"
}

# Per system: the client URLs the load goes to, leader first.
declare -A load_endpoints
for members in $members_list; do
  for system in "${systems[@]}"; do
    start_cluster "$system" "$members"
    load_endpoints[$system]=$(leader_first "$system")
    echo "members=$members system=$system endpoints (leader first): ${load_endpoints[$system]}" >&2
    # The keys the range and mixed cases read, loaded once per cluster if a case reads them.
    if grep -q -- '--prefix range/' <<<"$cases"; then
      run_bench "${load_endpoints[$system]}" put --sequential --prefix range/ \
        --key-space "$range_keys" --total "$range_keys" --clients 16 --conns 4 >/dev/null
    fi
  done
  for round in $(seq 1 "$rounds"); do
    order=("${systems[@]}")
    if ((round % 2 == 0)); then
      order=()
      for ((index = ${#systems[@]} - 1; index >= 0; index--)); do order+=("${systems[$index]}"); done
    fi
    while IFS='|' read -r case args; do
      [[ -z $case ]] && continue
      for system in "${order[@]}"; do
        # shellcheck disable=SC2086 # the case's arguments are words
        cpu_before=$(cpu_ms "$system")
        line=$(run_bench "${load_endpoints[$system]}" $args)
        cpu_after=$(cpu_ms "$system")
        line=$(python3 -c '
import json, sys
result = json.loads(sys.argv[1])
ops = result.get("ops") or 0
result["server_cpu_us_per_op"] = (int(sys.argv[3]) - int(sys.argv[2])) * 1000 / ops if ops else None
print(json.dumps(result))' "$line" "$cpu_before" "$cpu_after")
        record case "$members" "$system" "$case" "$round" "$line"
        echo "members=$members round=$round case=$case system=$system $(summary "$line")" >&2
      done
    done <<<"$cases"
  done
  for system in "${systems[@]}"; do stop_cluster "$system"; done

  # Memory and disk after MEMORY_KEYS keys of 1 KiB, on a fresh cluster of each system.
  if ((memory_keys > 0)); then
    for system in "${systems[@]}"; do
      start_cluster "$system" "$members"
      run_bench "${cluster_endpoints[$system]}" put --sequential --prefix mem/ --key-space "$memory_keys" \
        --total "$memory_keys" --val-size 1024 --clients 64 --conns 8 >/dev/null
      rss=$(rss_kib "$system") disk=$(disk_kib "$system")
      record memory "$members" "$system" memory 1 "{\"rss_kib\": $rss, \"disk_kib\": $disk}"
      echo "members=$members case=memory system=$system keys=$memory_keys rss=${rss}KiB disk=${disk}KiB" >&2
      stop_cluster "$system"
    done
  fi

  # Restart-to-ready with RESTART_KEYS keys, on a fresh cluster of each system, ROUNDS times.
  if ((restart_keys > 0)); then
    for system in "${systems[@]}"; do
      start_cluster "$system" "$members"
      run_bench "${cluster_endpoints[$system]}" put --sequential --prefix restart/ --key-space "$restart_keys" \
        --total "$restart_keys" --clients 64 --conns 8 >/dev/null
      for round in $(seq 1 "$rounds"); do
        restart_cluster "$system"
        secs=$restart_secs
        record restart "$members" "$system" restart "$round" "{\"restart_secs\": $secs}"
        echo "members=$members round=$round case=restart system=$system keys=$restart_keys secs=$secs" >&2
      done
      stop_cluster "$system"
    done
  fi
done

if [[ -n ${RAW:-} ]]; then cp "$raw" "$RAW"; fi

# The tables: per cluster size and case, each system's median and min–max over the rounds,
# and the ratio of the medians (mnemo/etcd).
python3 - "$raw" "$memory_keys" "$restart_keys" "${PLOTS:-}" <<'EOF'
import json, math, os, statistics, sys
from collections import defaultdict

path, memory_keys, restart_keys, plots = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = [json.loads(line) for line in open(path)]
runs = defaultdict(list)
for row in rows:
    runs[(row["members"], row["case"], row["system"])].append(row)
systems = sorted({row["system"] for row in rows}, key=lambda s: (s != "mnemo", s))

def stat(values, scale=1.0, digits=0):
    if not values:
        return "–", None
    values = [value * scale for value in values]
    median = statistics.median(values)
    fmt = "%%.%df" % digits
    text = fmt % median
    if len(values) > 1:
        text += " (" + fmt % min(values) + "–" + fmt % max(values) + ")"
    return text, median

def ratio(figures):
    if len(systems) == 2 and "mnemo" in figures and "etcd" in figures and figures["etcd"]:
        return "%.2f" % (figures["mnemo"] / figures["etcd"])
    return "–"

def table(title, metrics, kind, with_errors=True):
    members_cases = []
    for row in rows:
        key = (row["members"], row["case"])
        if row["kind"] == kind and key not in members_cases:
            members_cases.append(key)
    if not members_cases:
        return
    print("### " + title + "\n")
    columns = ["members", "case"]
    for label, _, _, _ in metrics:
        columns += ["%s %s" % (system, label) for system in systems] + ["%s mnemo/etcd" % label]
    if kind == "case" and with_errors:
        columns.append("errors (watch: errors / missing), " + ", ".join(systems))
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for members, case in members_cases:
        cells = [str(members), case]
        for label, field, scale, digits in metrics:
            medians = {}
            for system in systems:
                text, median = stat([r[field] for r in runs[(members, case, system)] if r.get(field) is not None], scale, digits)
                cells.append(text)
                medians[system] = median
            cells.append(ratio(medians))
        if kind == "case" and with_errors:
            bad = []
            for system in systems:
                errors = sum(r["errors"] for r in runs[(members, case, system)])
                missing = sum(r.get("missing", 0) for r in runs[(members, case, system)])
                bad.append("%d / %d" % (errors, missing) if "watch" in case else str(errors))
            cells.append(", ".join(bad))
        print("| " + " | ".join(cells) + " |")
    print()

rounds = max((row["round"] for row in rows), default=0)
print("Medians over %d round(s), min–max in parentheses; latencies are p99 in ms (watch: send-to-delivery of events)." % rounds)
print("A ratio above 1 is better for mnemo in ops/s, worse in latency, CPU, memory, disk and restart time.")
print("CPU µs/op is the CPU time all members of the cluster used during the run, per op.")
print()
table("Throughput and p99 latency",
      [("ops/s", "ops_per_sec", 1.0, 0), ("p99 ms", "p99_us", 0.001, 2)], "case")
table("Server CPU per op",
      [("CPU µs/op", "server_cpu_us_per_op", 1.0, 0)], "case", with_errors=False)
table("Memory and disk after %d keys of 1 KiB (largest member)" % memory_keys,
      [("RSS MiB", "rss_kib", 1 / 1024, 1), ("disk MiB", "disk_kib", 1 / 1024, 1)], "memory")
table("Restart to ready with %d keys" % restart_keys,
      [("secs", "restart_secs", 1.0, 2)], "restart")

# The sweep's plots: one SVG per op and metric, x = clients (log scale), one line per system
# and cluster size, at the medians over the rounds.
def plot(file, title, unit, series):
    width, height, left, right, top, bottom = 640, 400, 70, 170, 40, 50
    xs = sorted({x for points in series.values() for x, _ in points})
    top_y = max(y for points in series.values() for _, y in points) * 1.1 or 1
    span = (math.log2(xs[-1]) - math.log2(xs[0])) or 1

    def px(x):
        return left + (math.log2(x) - math.log2(xs[0])) / span * (width - left - right)

    def py(y):
        return height - bottom - y / top_y * (height - top - bottom)

    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (width, height),
           '<text x="%d" y="20" font-size="14">%s</text>' % (left, title),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, height - bottom, width - right, height - bottom),
           '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, top, left, height - bottom)]
    for x in xs:
        out.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (px(x), height - bottom + 16, x))
    out.append('<text x="%d" y="%d" text-anchor="middle">clients</text>' % ((left + width - right) / 2, height - 10))
    for tick in range(6):
        y = top_y * tick / 5
        out.append('<text x="%d" y="%.1f" text-anchor="end">%.4g</text>' % (left - 6, py(y) + 4, y))
    out.append('<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">%s</text>' % (height / 2, height / 2, unit))
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for index, (name, points) in enumerate(sorted(series.items())):
        color = colors[index % len(colors)]
        line = " ".join("%.1f,%.1f" % (px(x), py(y)) for x, y in sorted(points))
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (color, line))
        out.append('<text x="%d" y="%d" fill="%s">%s</text>' % (width - right + 10, top + 16 * index, color, name))
    out.append("</svg>")
    with open(os.path.join(plots, file), "w") as handle:
        handle.write("\n".join(out) + "\n")

if plots:
    for op in ("put", "range-l"):
        prefix = "sweep-%s-c" % op
        for metric, field, scale, unit in (("ops", "ops_per_sec", 1.0, "ops/s"), ("p99", "p99_us", 0.001, "p99 ms")):
            series = defaultdict(list)
            for (members, case, system), found in runs.items():
                if case.startswith(prefix):
                    median = statistics.median(r[field] * scale for r in found)
                    label = "%s, %d member%s" % (system, members, "" if members == 1 else "s")
                    series[label].append((int(case[len(prefix):]), median))
            if series:
                file = "%s-%s.svg" % (op, metric)
                plot(file, "%s: %s against clients" % (op, unit), unit, series)
                print("plot: %s" % os.path.join(plots, file), file=sys.stderr)
EOF
