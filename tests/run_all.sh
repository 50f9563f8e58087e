#!/bin/sh
# Runs every C unit test binary (or test script) given as arguments, then every busted spec
# under LuaJIT, and prints one summary line of its own: "N passed, N failed".
# Exits non-zero if anything failed or a runner crashed.
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for t in "$@"; do
    # a test script (tests/layers.sh) reports like a test binary
    case $t in *.sh) run="sh $t" ;; *) run=$t ;; esac
    if $run >"$log" 2>&1; then rc=0; else rc=$?; fi
    cat "$log"
    line=$(grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    if [ -z "$line" ]; then
        echo "$t: crashed (exit $rc) before reporting"
        failed=$((failed + 1))
        continue
    fi
    p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed$/\1/')
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$rc" = 0 ] || [ "$f" != 0 ] || failed=$((failed + 1))
done

if [ -n "$(ls spec/*_spec.lua 2>/dev/null)" ]; then
    luajit /usr/bin/busted -o utfTerminal "${BUSTED_ARGS:-spec}" 2>&1 | tee "$log"
    summary=$(grep -E '[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' "$log" | tail -1)
    if [ -z "$summary" ]; then
        echo "busted: no summary (crashed?)"
        failed=$((failed + 1))
    else
        s=$(echo "$summary" | sed -E 's/^[^0-9]*([0-9]+) success.*/\1/')
        f=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
        e=$(echo "$summary" | sed -E 's/.* ([0-9]+) errors?.*/\1/')
        passed=$((passed + s))
        failed=$((failed + f + e))
    fi
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
