#!/bin/sh
# Runs libFuzzer harnesses one after the other (`make fuzz`; docs/fuzzing.md):
#
#   sh fuzz/run.sh SECONDS HARNESS...
#
# Each harness starts from its committed corpus (fuzz/corpus/<h>/), its
# regressions (fuzz/regressions/<h>/) and what earlier runs found
# (fuzz/found/<h>/, where new inputs go). Crashes, leaks, hangs and
# out-of-memory inputs go to fuzz/crashes/<h>/; fuzz/found and fuzz/crashes
# are not in git. FUZZ_FLAGS adds libFuzzer flags, e.g. "-fork=1
# -ignore_crashes=1" to go on past a known crash. The full log of a run is
# build-fuzz/<h>.log. Prints one line of figures per harness; exits 1 if any
# harness left a new file in fuzz/crashes/.
set -u
cd "$(dirname "$0")/.."
secs=$1
shift

# A number from the log: the last "key: N" of a libFuzzer status line, or
# the value of a final "stat::key: N" line.
last_status() { grep -E "^#[0-9]+" "$1" | tail -1 | sed -nE "s/.* $2: ([0-9]+).*/\\1/p"; }
final_stat() { sed -nE "s/^stat::$2: *([0-9]+).*/\\1/p" "$1" | tail -1; }

status=0
printf '%-8s %8s %12s %8s %7s %7s %7s %s\n' harness seconds executions exec/s cov ft rss_mb "new crash files"
for h in "$@"; do
    mkdir -p "fuzz/found/$h" "fuzz/crashes/$h" build-fuzz
    log="build-fuzz/$h.log"
    dict=""
    [ -f "fuzz/$h.dict" ] && dict="-dict=fuzz/$h.dict"
    regressions=""
    [ -d "fuzz/regressions/$h" ] && regressions="fuzz/regressions/$h"
    before=$(ls "fuzz/crashes/$h" | wc -l)
    start=$(date +%s)
    # shellcheck disable=SC2086  # FUZZ_FLAGS, dict and regressions are word lists
    "build-fuzz/fuzz_$h" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 -artifact_prefix="fuzz/crashes/$h/" $dict ${FUZZ_FLAGS:-} \
        "fuzz/found/$h" "fuzz/corpus/$h" $regressions >"$log" 2>&1
    took=$(( $(date +%s) - start ))
    execs=$(final_stat "$log" number_of_executed_units)
    [ -n "$execs" ] || execs=$(grep -E "^#[0-9]+" "$log" | tail -1 | sed -nE 's/^#([0-9]+).*/\1/p')
    rate=$(( ${execs:-0} / (took > 0 ? took : 1) ))
    rss=$(final_stat "$log" peak_rss_mb)
    crashes=$(( $(ls "fuzz/crashes/$h" | wc -l) - before ))
    printf '%-8s %8s %12s %8s %7s %7s %7s %s\n' "$h" "$took" "${execs:-?}" "$rate" \
        "$(last_status "$log" cov)" "$(last_status "$log" ft)" "${rss:-?}" "$crashes"
    if [ "$crashes" -gt 0 ]; then
        status=1
        grep -E "^(==[0-9]+==ERROR|SUMMARY|[^ ]*runtime error)" "$log" | head -5 | sed 's/^/    /'
        ls -t "fuzz/crashes/$h" | head -"$crashes" | sed "s|^|    fuzz/crashes/$h/|"
    fi
done
exit $status
