#!/bin/sh
# bench/tls.sh - TLS against plain on one server: the same loadgen scenarios
# with the device connections on the plain port and on the TLS port
# (loadgen --tls-port; publishing stays plain HTTP). A self-signed P-256
# certificate is made in a temp dir. Prints a markdown table; --append adds
# it (dated, with the git revision) to docs/benchmarks.md.
#
#   sh bench/tls.sh [--append]        ~1 minute
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
LG="$ROOT/bench/loadgen"
OUT="${BENCH_OUT:-$ROOT/docs/benchmarks.md}"
append=0
[ "${1:-}" = "--append" ] && append=1
make -s -C bench >/dev/null
make -s >/dev/null
work=$(mktemp -d /tmp/moonpush-tlsbench.XXXXXX)
srv=""
cleanup() {
  [ -n "$srv" ] && kill -TERM "$srv" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

start_server() {
  P=$("$LG" --free-port)
  T=$("$LG" --free-port)
  MOONPUSH_BENCH_LISTEN=127.0.0.1:$P MOONPUSH_BENCH_TLS_LISTEN=127.0.0.1:$T \
  MOONPUSH_BENCH_TLS_CERT="$work/cert.pem" MOONPUSH_BENCH_TLS_KEY="$work/key.pem" \
    ./moonpush -c bench/configs/bench.lua >"$work/server.log" 2>&1 &
  srv=$!
  "$LG" --port "$P" --wait-health 10 >/dev/null
}
stop_server() { kill -TERM "$srv"; wait "$srv" 2>/dev/null || true; srv=""; }

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

rows=""
run() {   # name, transport (plain|tls), loadgen args...
  name=$1; tr=$2; shift 2
  start_server
  extra=""
  [ "$tr" = tls ] && extra="--tls-port $T"
  # shellcheck disable=SC2086
  res=$("$LG" --port "$P" --server-pid "$srv" --quiet $extra "$@" | grep '^RESULT')
  stop_server
  row="| $name | $tr | $(field "$res" welcomed) | $(field "$res" handshakes_per_s) | $(field "$res" rss_per_conn_bytes) | $(field "$res" deliveries_per_s) | $(field "$res" p50_us) | $(field "$res" p99_us) | $(field "$res" srv_cpu_s_per_M) | $(field "$res" bottleneck) |"
  echo "$row"
  rows="$rows$row
"
}

header="| scenario | transport | conns | handshakes/s | server RSS/conn (B) | deliveries/s | p50 us | p99 us | server cpu s per M deliveries | bottleneck |
|---|---|---|---|---|---|---|---|---|---|"
echo "$header"
for tr in plain tls; do run "idle-2k" "$tr" --mode idle --conns 2000 --duration 3; done
for tr in plain tls; do run "broadcast-2k-max" "$tr" --mode broadcast --conns 2000 --rate 0 --duration 5 --warmup 1; done
for tr in plain tls; do run "unicast-2k-max" "$tr" --mode unicast --conns 2000 --users 2000 --rate 0 --duration 5 --warmup 1; done

if [ "$append" = 1 ]; then
  rev=$(git rev-parse --short HEAD)
  {
    echo
    echo "## TLS against plain ($(date -u +%Y-%m-%d), $rev, \`sh bench/tls.sh\`)"
    echo
    echo "One server, device connections on its plain or its TLS port (ECDSA P-256, TLS 1.3; loadgen --tls-port), publisher on plain HTTP; $(nproc) cpus, loadgen on the same machine."
    echo
    echo "$header"
    printf "%s" "$rows"
  } >>"$OUT"
  echo "appended to $OUT"
fi
