#!/bin/sh
# The layer check (issue 11): fails when a src/ file includes the header of
# a module in a higher layer than its own.
#
#   sh tests/layers.sh                   self-test, then check src/
#   sh tests/layers.sh DIR README ALLOW  check DIR only (used by the self-test)
#
# The layers are written down in one place: the ```layers block of
# src/README.md, one layer a line, lowest first ("name: module module ...").
# A file's module is its name without .c/.h; a module not listed is taken
# as the longest listed module it starts with followed by "_" (store_mem_ring.c
# belongs to store_mem, redis_int.h to redis). A file with no layer fails:
# add its module to the block (and a paragraph for it to the map).
#
# Including a header of a lower layer is fine; of the same layer too, unless
# the includes within the layer make a cycle. Known upward includes (and one
# include of each same-layer cycle) are listed in tests/layers-allowed.txt
# ("file -> header" a line): debt from issue 11, to be removed as the cycle
# is broken. A listed include that no longer occurs fails too, so the list
# only shrinks.
#
# Also checks that the map in src/README.md names every src/ file.
#
# Prints one line in the C tests' form, "layers: N passed, N failed", which
# tests/run_all.sh adds to make test's summary.
set -u

# check DIR README ALLOW: prints the problems, exits 1 if any.
check() {
    dir=$1 readme=$2 allow=$3
    [ -f "$allow" ] || allow=/dev/null
    for f in "$dir"/*.c "$dir"/*.h; do
        [ -f "$f" ] || continue
        grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" /dev/null |
            sed -E 's/^([^:]*):([0-9]+):.*#[[:space:]]*include[[:space:]]*"([^"]*)".*/\1 \2 \3/'
        echo "$f 0 -"   # every file is looked up, including one that includes nothing
    done | awk -v readme="$readme" -v allow="$allow" '
        function module_of(path,    m, best, k) {
            sub(/.*\//, "", path)
            sub(/\.[ch]$/, "", path)
            if (path in layer) return path
            best = ""
            for (k in layer)
                if (index(path, k "_") == 1 && length(k) > length(best)) best = k
            return best
        }
        BEGIN {
            n = 0; inblock = 0
            while ((getline line < readme) > 0) {
                if (line ~ /^```layers[[:space:]]*$/) { inblock = 1; continue }
                if (inblock && line ~ /^```/) { inblock = 0; continue }
                if (!inblock || line !~ /:/) continue
                name = line; sub(/:.*/, "", name); gsub(/[[:space:]]/, "", name)
                mods = line; sub(/^[^:]*:/, "", mods)
                n++
                lname[n] = name
                cnt = split(mods, ms, /[[:space:]]+/)
                for (i = 1; i <= cnt; i++) if (ms[i] != "") layer[ms[i]] = n
            }
            if (n == 0) { print readme ": no ```layers block"; bad = 1; exit 1 }
            while ((getline line < allow) > 0) {
                sub(/#.*/, "", line)
                if (line !~ /->/) continue
                gsub(/[[:space:]]/, "", line)
                allowed[line] = 1
            }
        }
        {
            file = $1; lineno = $2; hdr = $3
            base = file; sub(/.*\//, "", base)
            fm = module_of(file)
            if (fm == "") {
                if (!(base in nolayer)) print file ": no layer: add module " substr(base, 1, length(base) - 2) " to the layers block of " readme
                nolayer[base] = 1; bad = 1; next
            }
            if (hdr == "-") next
            hm = module_of(hdr)
            if (hm == "") {
                print file ":" lineno ": includes \"" hdr "\", which has no layer in " readme
                bad = 1; next
            }
            if (layer[hm] < layer[fm] || hm == fm) next
            key = base "->" hdr
            if (key in allowed) { used[key] = 1; next }
            if (layer[hm] == layer[fm]) {
                # same layer: fine unless it closes a cycle (found in END)
                if (!((fm, hm) in edge)) {
                    edge[fm, hm] = file ":" lineno
                    adj[fm, ++nadj[fm]] = hm
                    nodes[fm] = 1
                }
                next
            }
            print file ":" lineno ": " fm " (layer " lname[layer[fm]] ") includes " hdr " of " hm \
                  " (layer " lname[layer[hm]] ", higher): include only downward, see " readme
            bad = 1
        }
        # Depth-first search of the same-layer include graph; prints each
        # cycle it closes with the include that makes every step.
        function dfs(u,    i, v, k, msg) {
            state[u] = 1
            pos[u] = ++sp
            stk[sp] = u
            for (i = 1; i <= nadj[u]; i++) {
                v = adj[u, i]
                if (state[v] == 1) {
                    msg = "include cycle in layer " lname[layer[u]] ": "
                    for (k = pos[v]; k <= sp; k++) msg = msg stk[k] " -> "
                    msg = msg v " ("
                    for (k = pos[v]; k < sp; k++) msg = msg edge[stk[k], stk[k + 1]] ", "
                    print msg edge[u, v] "): include only downward, see " readme
                    bad = 1
                } else if (!state[v]) {
                    dfs(v)
                }
            }
            state[u] = 2
            sp--
        }
        END {
            if (bad && n == 0) exit 1
            sp = 0
            for (u in nodes) if (!state[u]) dfs(u)
            for (k in allowed) if (!(k in used)) {
                print allow ": \"" k "\" is not an upward or same-layer include any more: remove the line"
                bad = 1
            }
            exit bad
        }'
}

if [ $# -ge 3 ]; then
    check "$1" "$2" "$3"
    exit
fi

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; }

# Self-test on a made-up tree: the check must catch what it is for.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# expect pass NAME, or expect fail NAME [PATTERN its output must hold]:
# runs the check on $tmp and counts the outcome.
expect() {
    want=$1 name=$2 pattern=${3:-}
    if check "$tmp/src" "$tmp/README.md" "$tmp/allow" > "$tmp/out"; then got=pass; else got=fail; fi
    if [ "$got" = "$want" ] && { [ -z "$pattern" ] || grep -q "$pattern" "$tmp/out"; }; then
        ok "$name"
    else
        fail "$name"; cat "$tmp/out"
    fi
}

mkdir -p "$tmp/src"
printf '# map\n\n```layers\nlow: a\nhigh: b\n```\n' > "$tmp/README.md"
printf '/* a */\n' > "$tmp/src/a.h"
printf '#include "a.h"\n' > "$tmp/src/b.h"
printf '#include "b.h"\n#include "a.h"\n' > "$tmp/src/b_part.c"
: > "$tmp/allow"
expect pass "downward includes pass"
printf '#include "a.h"\n#include "b.h"\n' > "$tmp/src/a.c"
expect fail "an upward include fails, naming file:line and both layers" \
    'a.c:2: a (layer low) includes b.h of b (layer high'
echo 'a.c -> b.h   # debt' > "$tmp/allow"
expect pass "an allowed upward include passes"
printf '#include "a.h"\n' > "$tmp/src/a.c"
expect fail "a stale allowlist line fails" '"a.c->b.h" is not an upward'
: > "$tmp/allow"
printf '#include "a.h"\n' > "$tmp/src/c.c"
expect fail "a file with no layer fails" 'c.c: no layer'
rm "$tmp/src/c.c"
printf '# map\n\n```layers\nlow: a a2\nhigh: b\n```\n' > "$tmp/README.md"
printf '/* a2 */\n' > "$tmp/src/a2.h"
printf '#include "a2.h"\n' > "$tmp/src/a.c"
expect pass "an include within a layer passes"
printf '#include "a.h"\n' > "$tmp/src/a2.h"
expect fail "an include cycle within a layer fails" 'include cycle in layer low: a.* -> a.* -> a'

# The real tree.
if check src src/README.md tests/layers-allowed.txt; then
    ok "src/ includes only downward (tests/layers-allowed.txt aside)"
else
    fail "src/ includes only downward (tests/layers-allowed.txt aside)"
fi

# The map of src/README.md names every file (as `file.c`), so it stays true.
missing=""
for f in src/*.c src/*.h; do
    b=${f#src/}
    grep -qF "\`$b\`" src/README.md || missing="$missing $b"
done
if [ -z "$missing" ]; then
    ok "src/README.md maps every file of src/"
else
    fail "src/README.md maps every file of src/ (missing:$missing)"
fi

echo "layers: $passed passed, $failed failed"
[ "$failed" = 0 ]
