#!/bin/sh
# `make check-asan`: runs the C tests and fuzz replays given as arguments
# (built with ASan+UBSan in DIR) and every busted spec against DIR/moonpush,
# then fails on any sanitizer report, wherever it came from:
#
#   sh tests/sanitized.sh DIR TEST_BINARY...
#
# A server's report would otherwise be lost: the specs read its log only
# when a test fails, and a leak shows only at exit. So every sanitized
# process (servers, admin clients, tests, replay children) writes its
# reports to DIR/reports/, and each report counts as one failure, except
# leaks listed in tests/lsan-pending.supp (known, fix on its way). Ends with
# tests/run_all.sh's line, counts adjusted: "N passed, N failed".
set -u
dir=$1
shift
reports="$dir/reports"
rm -rf "$reports"
mkdir -p "$reports"
abs_reports="$(cd "$reports" && pwd)"

export ASAN_OPTIONS="detect_leaks=1:log_path=$abs_reports/asan:${ASAN_OPTIONS:-}"
# Known leaks with a fix on its way (each names its issue): see the file.
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan-pending.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$abs_reports/ubsan:${UBSAN_OPTIONS:-}"
export MOONPUSH_BIN="$(cd "$dir" && pwd)/moonpush"
export MOONPUSH_LUA_DIR="$(pwd)/lua"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
sh tests/run_all.sh "$@" 2>&1 | tee "$log"
took=$(( $(date +%s) - start ))

line=$(tail -1 "$log")
passed=$(echo "$line" | sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\1/p')
failed=$(echo "$line" | sed -nE 's/^([0-9]+) passed, ([0-9]+) failed$/\2/p')
if [ -z "$passed" ]; then
    echo "tests/run_all.sh ended without its summary line"
    passed=0
    failed=1
fi

found=$(ls "$reports" | wc -l)
if [ "$found" -gt 0 ]; then
    echo
    echo "== $found sanitizer report(s) in $reports:"
    for r in "$reports"/*; do
        echo "-- $r"
        grep -E "ERROR|SUMMARY|runtime error|^    #[0-9] " "$r" | head -12
    done
fi
echo "sanitized run: ${took}s"
echo "$passed passed, $((failed + found)) failed"
[ "$failed" = 0 ] && [ "$found" = 0 ]
