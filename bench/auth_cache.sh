#!/bin/sh
# bench/auth_cache.sh - publishes/s over keep-alive connections with
# auth_token (/publish of bench/configs/bench.lua), this work tree's server
# against a committed revision's, in one run: the rounds alternate
# (before, after, before, ...) so both see the same machine load. It prints
# each round's RESULT figures and the median of each side; it writes
# nothing to docs/.
#
#   sh bench/auth_cache.sh REV [ROUNDS] [SECONDS]     e.g. sh bench/auth_cache.sh main 3 6
#
# Load: one subscriber, loadgen's publisher with 4 keep-alive connections
# and 16 pipelined requests each, max rate, no lag bound (--max-lag 100000):
# the server's cost per publish request decides the rate.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
REV=${1:?usage: sh bench/auth_cache.sh REV [ROUNDS] [SECONDS]}
ROUNDS=${2:-3}
SECS=${3:-6}
LG="$ROOT/bench/loadgen"
[ -x "$LG" ] || make -s bench/loadgen
[ -x "$ROOT/moonpush" ] || make -s moonpush

work=$(mktemp -d /tmp/moonpush-authbench.XXXXXX)
spid=""
cleanup() {
  [ -n "$spid" ] && kill -TERM "$spid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir "$work/before"
git archive --format=tar "$REV" | tar -x -C "$work/before"
(cd "$work/before" && make -s -j2 moonpush >"$work/build.log" 2>&1) ||
  { echo "auth_cache.sh: building $REV failed" >&2; tail -5 "$work/build.log" >&2; exit 1; }

# one round: $1 = label, $2 = tree (its moonpush finds lua/ beside itself)
round() {
  port=$("$LG" --free-port)
  MOONPUSH_BENCH_LISTEN="127.0.0.1:$port" "$2/moonpush" -c "$2/bench/configs/bench.lua" >"$work/$1.log" 2>&1 &
  spid=$!
  "$LG" --port "$port" --wait-health 10
  "$LG" --port "$port" --server-pid "$spid" --label "$1" --quiet --mode broadcast --conns 1 \
    --pub-conns 4 --window 16 --max-lag 100000 --rate 0 --duration "$SECS" --warmup 1 2>&1 |
    grep '^RESULT' | grep -o 'label=[a-z]*\|pub_per_s=[0-9.]*\|srv_cpu_s_per_M=[0-9.]*\|other_cpu_pct=[0-9]*\|pub_errors=[0-9]*' |
    tr '\n' ' ' | tee -a "$work/results"
  echo | tee -a "$work/results"
  kill -TERM "$spid"; wait "$spid" 2>/dev/null || true; spid=""
}

i=0
while [ $i -lt "$ROUNDS" ]; do
  round before "$work/before"
  round after "$ROOT"
  i=$((i + 1))
done
# median of field $2 over side $1's rounds
median() {
  grep "label=$1 " "$work/results" | sed "s/.*$2=\([0-9.]*\).*/\1/" | sort -n |
    awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}
for side in before after; do
  echo "$side median of $ROUNDS: pub_per_s=$(median $side pub_per_s) srv_cpu_s_per_M=$(median $side srv_cpu_s_per_M)"
done
