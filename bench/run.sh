#!/bin/sh
# bench/run.sh - runs the benchmark scenario set and appends a dated markdown
# table (command, git revision, machine) to docs/benchmarks.md. It does not
# commit. Every scenario gets a fresh server (bench/configs/bench.lua on a free
# 127.0.0.1 port) so memory and channel state do not leak between rows.
#
#   sh bench/run.sh                 full set (~5 minutes), appends
#   sh bench/run.sh --quick         the <1 minute set (what bench/quick runs), prints only
#   sh bench/run.sh --no-append     full set, prints only
#   sh bench/run.sh --append        (with --quick) append as well
#   sh bench/run.sh --only NAME     only scenarios whose name contains NAME
#   sh bench/run.sh --rev REV       benchmark a committed revision (git archive into a
#                                   temporary tree, built there) instead of the work tree
#
# Environment: BENCH_OUT (default docs/benchmarks.md), BENCH_KEEP=1 keeps the
# per-scenario logs directory, BENCH_DURATION overrides every duration.
#
# A row with more connections than one process may hold open files (the hard
# limit, 20,000 here) runs several independent servers, each on its own port
# with the same config, and the load generator spreads the connections over
# them (--ports) and sums their RSS (--server-pid A,B,..). They are separate
# nodes that share nothing: one node above ~19.9k connections needs the
# cluster work that is not built yet. Before such rows the kernel settings
# that many sockets need are checked (and set when run as root, see
# docs/operations.md, "Holding many connections"); a row whose settings are
# missing is skipped with the reason.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LG="$ROOT/bench/loadgen"
CONFIG="$ROOT/bench/configs/bench.lua"
OUT="${BENCH_OUT:-$ROOT/docs/benchmarks.md}"

quick=0
rev_arg=""
append=1
append_set=0
only=""
cmdline="sh bench/run.sh $*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --append) append=1; append_set=1 ;;
    --no-append) append=0; append_set=1 ;;
    --only) shift; only="$1" ;;
    --rev) shift; rev_arg="$1" ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ] && [ "$append_set" = 0 ]; then append=0; fi

work=$(mktemp -d /tmp/moonpush-bench.XXXXXX)
server_pids=""
cleanup() {
  for p in $server_pids; do kill -TERM "$p" 2>/dev/null || true; done
  if [ -n "$server_pids" ]; then
    sleep 1
    for p in $server_pids; do kill -KILL "$p" 2>/dev/null || true; done
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "run.sh: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

# ---- build -----------------------------------------------------------------
if ! make -s -C bench >/dev/null; then echo "run.sh: building bench/loadgen failed" >&2; exit 1; fi
tree="$ROOT"
if [ -n "$rev_arg" ]; then
  tree="$work/tree"
  mkdir -p "$tree"
  git archive --format=tar "$rev_arg" | tar -x -C "$tree" || { echo "run.sh: cannot export $rev_arg" >&2; exit 1; }
  rev=$(git rev-parse --short "$rev_arg")
else
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo "no-commit")
  if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then rev="$rev (+uncommitted changes)"; fi
fi
if ! make -s -C "$tree" >"$work/build.log" 2>&1; then
  echo "run.sh: building moonpush in $tree failed:" >&2; tail -5 "$work/build.log" >&2; exit 1
fi

# ---- limits ----------------------------------------------------------------
# The servers inherit our soft limit: raise it to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fd_soft=$(ulimit -n)
fd_hard=$(ulimit -Hn)
[ "$fd_hard" = unlimited ] && fd_hard=1048576
per_server=$((fd_hard - 100))   # connections one server process may hold (fds for the listener, logs, Lua)
ports=$(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null | tr -s '\t ' ' ' || echo "?")
echo "run.sh: open files soft $fd_soft hard $fd_hard per process; ephemeral ports $ports"
echo "run.sh: a server holds one fd per connection: rows above $per_server connections run several independent servers"

# Kernel settings for N connections with both ends on this machine (2N
# sockets). Prints what is missing (setting it first when we are root and
# sysctl -w works); returns 1 if something is still short.
sysctl_get() { cat "/proc/sys/$(echo "$1" | tr . /)" 2>/dev/null; }
need_at_least() {   # NAME MIN WHY
  cur=$(sysctl_get "$1")
  [ -n "$cur" ] || return 0                 # not on this kernel (e.g. no conntrack module): nothing to check
  cur=$(echo "$cur" | awk '{print $1}')
  [ "$cur" -ge "$2" ] && return 0
  if [ "$(id -u)" = 0 ] && sysctl -q -w "$1=$2" >/dev/null 2>&1; then
    echo "run.sh: set $1 = $2 (was $cur): $3"
    return 0
  fi
  echo "run.sh: NEED $1 >= $2 (is $cur): $3 -> sysctl -w $1=$2"
  return 1
}
check_kernel_for() {   # N
  short=0
  need_at_least net.core.somaxconn 4096 "accept queue of each server during the connect burst" || short=1
  need_at_least net.ipv4.tcp_max_syn_backlog 4096 "half-open connections during the connect burst" || short=1
  need_at_least fs.file-max $((2 * $1 + 65536)) "system-wide open files: one per socket, both ends" || short=1
  need_at_least fs.nr_open "$fd_hard" "ceiling of the per-process open-files limit" || short=1
  need_at_least net.netfilter.nf_conntrack_max $(($1 + $1 / 4)) "one conntrack entry per connection while netfilter tracks loopback" || short=1
  range=$(sysctl_get net.ipv4.ip_local_port_range | awk '{print $2 - $1 + 1}')
  if [ -n "$range" ] && [ "$range" -lt 10000 ]; then
    echo "run.sh: NEED net.ipv4.ip_local_port_range at least 10000 ports wide (is $range): loadgen spreads connections over 127.0.0.x source addresses and server ports, but each pair takes ports from this range"
    short=1
  fi
  return $short
}

# ---- scenarios: name|loadgen arguments|server environment --------------------
if [ "$quick" = 1 ]; then
  scenarios="idle-2k|--mode idle --conns 2000 --duration 3|
broadcast-2k-20ps|--mode broadcast --conns 2000 --rate 20 --duration 5 --warmup 1|
unicast-2k-2000ps|--mode unicast --conns 2000 --users 2000 --rate 2000 --duration 5 --warmup 1|
unicast-2k-acks-2000ps|--mode unicast --conns 2000 --users 2000 --rate 2000 --duration 5 --warmup 1 --path /ws/ack|"
else
  scenarios="idle-10k|--mode idle --conns 10000 --duration 10|
idle-19k-2procs|--mode idle --conns 19000 --procs 2 --duration 10|
idle-50k-3nodes|--mode idle --conns 50000 --duration 5|
idle-100k-6nodes|--mode idle --conns 100000 --duration 5|
broadcast-10k-10ps|--mode broadcast --conns 10000 --rate 10 --duration 10 --warmup 1|
broadcast-10k-max-lag4|--mode broadcast --conns 10000 --rate 0 --max-lag 4 --duration 10 --warmup 1|
broadcast-10k-max|--mode broadcast --conns 10000 --rate 0 --max-lag 32 --duration 10 --warmup 1|
unicast-10k-10000ps|--mode unicast --conns 10000 --users 10000 --rate 10000 --duration 10 --warmup 1|
unicast-10k-20000ps-r1|--mode unicast --conns 10000 --users 10000 --rate 20000 --duration 8 --warmup 1|
unicast-10k-20000ps-r2|--mode unicast --conns 10000 --users 10000 --rate 20000 --duration 8 --warmup 1|
unicast-10k-20000ps-r3|--mode unicast --conns 10000 --users 10000 --rate 20000 --duration 8 --warmup 1|
unicast-10k-max|--mode unicast --conns 10000 --users 10000 --rate 0 --duration 10 --warmup 1|
unicast-10k-acks-10000ps|--mode unicast --conns 10000 --users 10000 --rate 10000 --duration 10 --warmup 1 --path /ws/ack|
unicast-10k-acks-max|--mode unicast --conns 10000 --users 10000 --rate 0 --duration 10 --warmup 1 --path /ws/ack|
slow-2k-baseline|--mode broadcast --conns 2000 --stall 0 --rate 20 --size 4000 --duration 20 --warmup 1|
slow-2k-10pct-stalled|--mode broadcast --conns 2000 --stall 10 --rate 20 --size 4000 --duration 20 --warmup 1|
unicast-10k-bare-max-r1|--mode unicast --conns 10000 --users 10000 --rate 0 --duration 8 --warmup 1 --path /ws --pub-path /publish|
unicast-10k-lua-max-r1|--mode unicast --conns 10000 --users 10000 --rate 0 --duration 8 --warmup 1 --path /ws/lua --pub-path /publish/lua|
unicast-10k-bare-max-r2|--mode unicast --conns 10000 --users 10000 --rate 0 --duration 8 --warmup 1 --path /ws --pub-path /publish|
unicast-10k-lua-max-r2|--mode unicast --conns 10000 --users 10000 --rate 0 --duration 8 --warmup 1 --path /ws/lua --pub-path /publish/lua|
unicast-10k-bare-max-r3|--mode unicast --conns 10000 --users 10000 --rate 0 --duration 8 --warmup 1 --path /ws --pub-path /publish|
unicast-10k-lua-max-r3|--mode unicast --conns 10000 --users 10000 --rate 0 --duration 8 --warmup 1 --path /ws/lua --pub-path /publish/lua|
broadcast-2k-json1k-plain|--mode broadcast --conns 2000 --rate 25 --duration 8 --warmup 1 --json --size 1000 --deflate --path /ws|
broadcast-2k-json1k-deflate|--mode broadcast --conns 2000 --rate 25 --duration 8 --warmup 1 --json --size 1000 --deflate --path /ws/deflate|"
fi

# Snapshot what the server runs (binary, lua/, plugins/, the config) so edits or
# rebuilds in the work tree during the run cannot change it half-way: the binary
# finds lua/ beside itself, and the config's plugin_path ("../plugins" =
# bench/plugins, "../../plugins") resolves inside the snapshot too.
snap="$work/snap"
mkdir -p "$snap/bench/configs" "$snap/bench/plugins"
cp "$tree/moonpush" "$snap/moonpush"
cp -R "$tree/lua" "$tree/plugins" "$snap/"
# A --rev runs with its own bench config and plugins: today's config may name
# options an older server refuses.
cp "$tree/bench/configs/bench.lua" "$snap/bench/configs/bench.lua"
cp "$tree"/bench/plugins/*.lua "$snap/bench/plugins/"   # the config's plugin_path: ../plugins first
SERVER="$snap/moonpush"
CONFIG="$snap/bench/configs/bench.lua"
unset MOONPUSH_LUA_DIR
results="$work/results"
: > "$results"

conns_of() { echo "$1" | sed -n 's/.*--conns \([0-9]*\).*/\1/p'; }

# alive PID: running and not a zombie (a crashed child stays a zombie until waited)
alive() {
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
  [ -n "$st" ] && [ "$st" != Z ]
}

while IFS='|' read -r name args env; do
  [ -n "$name" ] || continue
  case "$name" in *"$only"*) ;; *) continue ;; esac
  n=$(conns_of "$args")
  nsrv=1
  if [ -n "$n" ] && [ "$n" -gt "$per_server" ]; then
    nsrv=$(( (n + per_server - 1) / per_server ))
    if ! check_kernel_for "$n"; then
      echo "run.sh: skip $name: the kernel settings above are missing (run as root, or set them: docs/operations.md)"
      echo "RESULT label=$name failed=kernel_settings_missing args=$(echo "$args" | tr ' ' '~')" >> "$results"
      continue
    fi
  fi
  if [ -n "${BENCH_DURATION:-}" ]; then
    args=$(echo "$args" | sed "s/--duration [0-9.]*/--duration $BENCH_DURATION/")
  fi
  # nsrv independent servers, same config, one port each
  port_list=""; pid_list=""; server_pids=""; up=1
  i=0
  while [ $i -lt "$nsrv" ]; do
    port=$("$LG" --free-port)
    log="$work/$name.server$i.log"
    # shellcheck disable=SC2086
    env MOONPUSH_BENCH_LISTEN="127.0.0.1:$port" $env "$SERVER" -c "$CONFIG" >"$log" 2>&1 &
    server_pids="$server_pids $!"
    port_list="${port_list:+$port_list,}$port"
    pid_list="${pid_list:+$pid_list,}$!"
    i=$((i + 1))
  done
  for port in $(echo "$port_list" | tr ',' ' '); do
    "$LG" --port "$port" --wait-health 10 || up=0
  done
  if [ "$up" = 0 ]; then
    echo "run.sh: $name: a server did not come up; log tails:"; tail -n 5 "$work/$name".server*.log
    echo "RESULT label=$name failed=server_did_not_start" >> "$results"
    for p in $server_pids; do kill -KILL "$p" 2>/dev/null || true; done
    server_pids=""
    continue
  fi
  echo "run.sh: === $name: loadgen $args ($nsrv server(s): pid $pid_list, port $port_list)"
  # shellcheck disable=SC2086
  if "$LG" --ports "$port_list" --server-pid "$pid_list" --label "$name" --quiet $args > "$work/$name.out" 2>&1; then
    rc=0
  else
    rc=$?
  fi
  cat "$work/$name.out"
  alive=1
  for p in $server_pids; do alive "$p" || alive=0; done
  line=$(grep '^RESULT ' "$work/$name.out" || true)
  [ -n "$line" ] || line="RESULT label=$name loadgen_exit=$rc"
  if [ "$alive" = 0 ]; then
    line="$line server=crashed"
    echo "run.sh: $name: A SERVER DIED during the run; log tails:"; tail -n 5 "$work/$name".server*.log
  fi
  echo "$line args=$(echo "$args" | tr ' ' '~')" >> "$results"
  for p in $server_pids; do kill -TERM "$p" 2>/dev/null || true; done
  i=0
  for p in $server_pids; do
    while alive "$p" && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  server_pids=""
  for log in "$work/$name".server*.log; do
    lines=$(wc -l < "$log")
    if [ "$lines" -gt 1000 ]; then
      echo "run.sh: $name: NOTE a server wrote $lines log lines ($log)"
    fi
  done
done <<EOF_SCENARIOS
$scenarios
EOF_SCENARIOS

# ---- table -----------------------------------------------------------------
model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
machine="nproc $(nproc), ${model:-unknown CPU}, kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GB RAM", $2/1048576}' /proc/meminfo), open files $fd_hard/process"

# Paired rows, run one after the other with the same parameters, compared in
# one line each: NAME-baseline vs NAME-10pct-stalled (slow consumers: latency
# of the healthy subscribers), NAME-bare-max vs NAME-lua-max (plugin cost).
compare() {
  awk '
  /^RESULT / {
    split("", f)
    for (i = 2; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
    if (!("mode" in f)) next
    l = f["label"]; seen[++n] = l
    for (k in f) r[l, k] = f[k]
  }
  function ms(v) { return sprintf("%.2f", v / 1000) }
  function disturbed(a, b) {
    if (r[a, "other_cpu_pct"] + 0 >= 15 || r[b, "other_cpu_pct"] + 0 >= 15 || r[a, "steal_pct"] + 0 >= 10 || r[b, "steal_pct"] + 0 >= 10)
      return " NOTE: a row of this pair was disturbed by other processes (see its row): rerun the pair before trusting the comparison."
    return ""
  }
  END {
    for (i = 1; i <= n; i++) {
      b = seen[i]
      if (b ~ /-baseline$/) {
        s = b; sub(/-baseline$/, "-10pct-stalled", s)
        if (!((s, "p50_us") in r)) continue
        printf "\nSlow consumers (%s vs %s, same broadcast, %s%% of subscribers stalled in the second): healthy subscribers p50 %s ms / p99 %s ms / p99.9 %s ms with stalled clients vs %s / %s / %s ms without; deliveries/s %s vs %s; stalled %s, closed by the server %s (close frame 4001 seen by %s; the rest end without one, see bench/README.md); server RSS at end %.0f MB vs %.0f MB.%s\n",
          s, b, r[s, "stall_pct"] + 0, ms(r[s, "p50_us"]), ms(r[s, "p99_us"]), ms(r[s, "p999_us"]),
          ms(r[b, "p50_us"]), ms(r[b, "p99_us"]), ms(r[b, "p999_us"]),
          r[s, "deliveries_per_s"], r[b, "deliveries_per_s"], r[s, "stalled"], r[s, "stalled_closed"],
          r[s, "stalled_closed_4001"], r[s, "rss_end_kb"] / 1024, r[b, "rss_end_kb"] / 1024, disturbed(s, b)
      }
      if (b ~ /-bare-max(-r[0-9]+)?$/) {
        s = b; sub(/-bare-max/, "-lua-max", s)
        if (!((s, "deliveries_per_s") in r) || r[b, "deliveries_per_s"] + 0 <= 0) continue
        ratio = r[s, "deliveries_per_s"] / r[b, "deliveries_per_s"]
        cb = r[b, "srv_cpu_s_per_M"] + 0; cl = r[s, "srv_cpu_s_per_M"] + 0
        word = "costs "; pct = (1 - ratio) * 100
        if (ratio > 1) { word = "gains "; pct = (ratio - 1) * 100 }
        cpct = 0
        if (cb > 0) cpct = (cl / cb - 1) * 100
        npairs++; ratios[npairs] = ratio; cpcts[npairs] = cpct
        printf "\nPlugin cost (%s vs %s, max rate): the Lua chain (auth + route hook route_default + format hook format_json) delivers %s/s vs %s/s on the bare routes = %.2f of bare throughput (%s%.0f%%; target: costs under 10%%); server cpu-s per M deliveries %.2f vs %.2f (%+.0f%%); p50 %s vs %s ms.%s\n",
          s, b, r[s, "deliveries_per_s"], r[b, "deliveries_per_s"], ratio,
          word, pct, cl, cb, cpct, ms(r[s, "p50_us"]), ms(r[b, "p50_us"]), disturbed(s, b)
      }
    }
    if (npairs > 1) {
      # the pairs ran alternately (bare, lua, bare, lua ...): the median ratio
      # is the figure to quote on this noisy machine
      mr = median(ratios, npairs); mc = median(cpcts, npairs)
      printf "\nPlugin cost, median of %d alternating pairs: the Lua chain keeps %.2f of bare throughput (costs %.0f%%; target under 10%%); server CPU per delivery %+.0f%%.\n", npairs, mr, (1 - mr) * 100, mc
    }
    for (i = 1; i <= n; i++) {
      b = seen[i]
      if (b !~ /-json1k-plain$/) continue
      s = b; sub(/-plain$/, "-deflate", s)
      if (!((s, "wire_bytes_per_text_frame") in r) || r[b, "wire_bytes_per_text_frame"] + 0 <= 0) continue
      cb = r[b, "srv_cpu_s_per_M"] + 0; cl = r[s, "srv_cpu_s_per_M"] + 0
      cpct = 0
      if (cb > 0) cpct = (cl / cb - 1) * 100
      printf "\nCompression (%s vs %s, the same ~1 KB JSON order broadcast; both clients offer permessage-deflate, only the second route takes it): %s vs %s wire bytes per text frame = %.2f of plain; %s of %s frames compressed; server cpu-s per M deliveries %.2f vs %.2f (%+.0f%%).%s\n",
        s, b, r[s, "wire_bytes_per_text_frame"], r[b, "wire_bytes_per_text_frame"],
        r[s, "wire_bytes_per_text_frame"] / r[b, "wire_bytes_per_text_frame"], r[s, "compressed_frames"], r[s, "text_frames"],
        cl, cb, cpct, disturbed(s, b)
    }
    target("idle-100k-6nodes", "rss_per_conn_bytes", "server RSS per idle connection at 100k", " B", "at most 1024 B", "<=", 1024)
    target("idle-100k-6nodes", "welcomed", "connections held", "", "100000, no failed handshake", ">=", 100000)
    target("broadcast-10k-max", "deliveries_per_s", "broadcast deliveries/s to 10k subscribers", "/s", "at least 1000000/s", ">=", 1000000)
    # the tail moves by a millisecond between runs on this machine: three runs, the median
    nm = 0
    for (i = 1; i <= n; i++)
      if (seen[i] ~ /^unicast-10k-20000ps-r[0-9]+$/ && r[seen[i], "deliveries_per_s"] + 0 >= 19000) p99s[++nm] = r[seen[i], "p99_us"] + 0
    if (nm > 0) {
      r["unicast-20k-median", "p99_us"] = median(p99s, nm)
      printf "\nUnicast at 20k msg/s, %d runs: p99 %s us.", nm, joined(p99s, nm)
      target("unicast-20k-median", "p99_us", "unicast p99 publish-to-deliver at 20k msg/s, median of the runs", " us", "under 2000 us", "<", 2000)
    }
  }
  function target(row, key, what, unit, goal, op, limit,    v, met, note) {
    if (!((row, key) in r)) return
    v = r[row, key] + 0
    met = op == "<=" ? v <= limit : op == ">=" ? v >= limit : v < limit
    if (r[row, "failed"] + 0 > 0) met = 0
    note = ""
    if (r[row, "other_cpu_pct"] + 0 >= 15 || r[row, "steal_pct"] + 0 >= 10) note = " NOTE: other processes used the machine during this row: rerun it before trusting the figure."
    printf "\nTarget: %s = %s%s (%s): %s.%s\n", what, r[row, key], unit, goal, met ? "met" : "NOT met", note
  }
  function joined(a, n,    i, t) {
    t = a[1]
    for (i = 2; i <= n; i++) t = t ", " a[i]
    return t
  }
  function median(a, n,    i, j, t, b) {
    for (i = 1; i <= n; i++) b[i] = a[i]
    for (i = 2; i <= n; i++) for (j = i; j > 1 && b[j - 1] > b[j]; j--) { t = b[j]; b[j] = b[j - 1]; b[j - 1] = t }
    return n % 2 ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
  }' "$results"
}

table() {
  echo ""
  echo "## $(date -u '+%Y-%m-%d %H:%M UTC') - $rev"
  echo ""
  echo "Command: \`$cmdline\` (each row: a fresh \`moonpush -c bench/configs/bench.lua\` built from $rev, then \`bench/loadgen\` with the arguments shown)."
  echo "Machine: $machine. Server and load generator share the machine."
  echo ""
  echo "| scenario | loadgen arguments | conns ok | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | published/s | server CPU | server cpu-s per M deliveries | server RSS per conn | loadgen busiest proc | closes / errors | limited by |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  awk '
  /^RESULT / {
    split("", f)
    for (i = 2; i <= NF; i++) { k = $i; sub(/=.*/, "", k); v = $i; sub(/^[^=]*=/, "", v); f[k] = v }
    args = f["args"]; gsub(/~/, " ", args)
    if (!("mode" in f)) {
      printf "| %s | `%s` | run failed (%s%s) | | | | | | | | | | | | |\n", f["label"], args, f["failed"], f["loadgen_exit"] != "" ? "loadgen exit " f["loadgen_exit"] : ""
      next
    }
    idle = (f["mode"] == "idle")
    ms = "%.2f"
    notes = ""
    if (f["failed"] + 0 > 0) notes = notes f["failed"] " failed to open; "
    if (f["server_closes"] + 0 > 0) notes = notes f["server_closes"] " closed by server (" f["close_codes"] "); "
    if (f["eof_closes"] + 0 > 0) notes = notes f["eof_closes"] " EOF without close frame; "
    if (f["stalled"] + 0 > 0) notes = notes f["stalled"] " stalled, " f["stalled_closed"] " of them closed; "
    if (f["gaps"] + 0 > 0 || f["reorders"] + 0 > 0) notes = notes "gaps " f["gaps"] " reorders " f["reorders"] "; "
    if (f["behind_msgs"] + 0 > 0) notes = notes f["behind_msgs"] " msgs never delivered; "
    if (f["pub_errors"] + 0 > 0) notes = notes f["pub_errors"] " publish errors; "
    if (f["ack_conns"] + 0 > 0) notes = notes "ack route: " f["acks"] " acks sent (every " f["ack_every"] " msgs), " f["dups"] " resends received; "
    else if (f["dups"] + 0 > 0) notes = notes f["dups"] " duplicate frames; "
    if (f["stalled"] + 0 > 0) notes = notes "kernel TCP mem at end " sprintf("%.0f", f["tcp_mem_kb_end"] / 1024) " MB; "
    if (f["other_cpu_pct"] + 0 >= 15) notes = notes "other processes used " f["other_cpu_pct"] "% cpu: disturbed; "
    if (f["steal_pct"] + 0 >= 10) notes = notes "hypervisor steal " f["steal_pct"] "%: disturbed; "
    if (f["servers"] + 0 > 1) notes = notes f["servers"] " independent servers (separate nodes, RSS summed); "
    if (idle && f["handshakes_per_s"] != "") notes = notes f["handshakes_per_s"] " handshakes/s while connecting; "
    if (idle && f["ksock_slab_kb_delta"] != "" && f["ksock_slab_kb_delta"] + 0 >= 0)
      notes = notes "kernel socket objects " f["ksock_bytes_per_conn"] " B/conn (both ends), buffers " f["tcp_buf_bytes_per_conn"] " B/conn; "
    if (f["server"] == "crashed" || f["server_exited"] == "1") notes = notes "SERVER EXITED DURING THE RUN; "
    sub(/; $/, "", notes)
    if (notes == "") notes = "-"
    printf "| %s | `%s` | %s | %s | %s | %s | %s | %s | %s | %s%% | %s | %s B | %s%% | %s | %s |\n",
      f["label"], args, f["welcomed"],
      idle ? "-" : f["deliveries_per_s"],
      idle ? "-" : sprintf(ms, f["p50_us"] / 1000), idle ? "-" : sprintf(ms, f["p99_us"] / 1000),
      idle ? "-" : sprintf(ms, f["p999_us"] / 1000), idle ? "-" : sprintf(ms, f["max_us"] / 1000),
      idle ? "-" : f["pub_per_s"], f["srv_cpu_pct"],
      idle ? "-" : f["srv_cpu_s_per_M"], f["rss_per_conn_bytes"], f["lg_max_proc_pct"], notes, f["bottleneck"]
  }' "$results"
  compare
  echo ""
  echo "Server RSS per connection = (RSS after all connections opened - RSS before) / connections (idle rows: after the idle period; rows with several servers: the sum of their RSS deltas / connections)."
  echo "Kernel socket objects = growth of the TCP, sock_inode_cache, filp, dentry and eventpoll_epi slabs (/proc/slabinfo, whole machine) / connections: both ends of each connection live on this machine, so about half of it is the server's; buffers = growth of /proc/net/sockstat TCP mem (pages of queued data, ~0 when idle)."
  echo "Rows noting other processes' CPU were disturbed by other work on the machine; rerun them."
  echo "Latency = publish (request written) to delivery (frame read by the generator); \`limited by\`: server = it used >= 90% of a core; loadgen = a generator process >= 85%; machine = server + generator + softirq + other processes filled every core."
  echo ""
  echo "<details><summary>raw RESULT lines</summary>"
  echo ""
  echo '```'
  sed 's/ args=.*//' "$results"
  echo '```'
  echo "</details>"
}

table > "$work/table.md"
cat "$work/table.md"
if [ "$append" = 1 ]; then
  if [ ! -f "$OUT" ]; then
    printf '# moonpush benchmarks\n\nEvery table below was appended by `sh bench/run.sh` (see bench/); rerun it to reproduce.\n' > "$OUT"
  fi
  cat "$work/table.md" >> "$OUT"
  echo "run.sh: appended to $OUT (not committed)"
fi
