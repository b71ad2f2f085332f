#!/usr/bin/env bash
# End-to-end check of the README's first command: `cargo run --release --example tail`
# on the embedded mongosim. It must print the demo workload (one JSON line per op, every
# kind of event, the transaction's ops) and exit 0 on its own, and `--count N` must stop
# after exactly N ops.
#
# Usage: .ci/tail-check.sh            (TAIL_CHECK_TIMEOUT=seconds per run, default 120)
set -euo pipefail
cd "$(dirname "$0")/.."

timeout_s="${TAIL_CHECK_TIMEOUT:-120}"
unset MONGODB_URI # the demo runs on the embedded server
export RUST_LOG="${RUST_LOG:-warn,tail=info}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

fail() {
    echo "tail-check: FAIL: $*" >&2
    for f in "$work"/*.log; do
        [ -s "$f" ] || continue
        echo "---- $(basename "$f") (last 20 lines)" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}

# Runs the example with the given arguments; stdout to $work/$name.jsonl.
run_tail() {
    local name="$1"
    shift
    local rc=0
    timeout "$timeout_s" "$tail_bin" "$@" \
        >"$work/$name.jsonl" 2>"$work/$name.log" || rc=$?
    if [ "$rc" -eq 124 ]; then
        fail "tail $* did not exit within ${timeout_s}s"
    elif [ "$rc" -ne 0 ]; then
        fail "tail $* exited with status $rc"
    fi
}

# Every line is one JSON object with the documented fields in order, and its braces,
# brackets and strings balance (a small JSON well-formedness check in awk).
check_lines() {
    local file="$1" source="$2"
    local shape='^\{"op":"[a-zA-Z_]+","ns":"[^"]+","id":.+,"source":"'"$source"'","ts":\{"t":[0-9]+,"i":[0-9]+\},"data":.+,"update":.+\}$'
    local bad
    bad="$(grep -Evn "$shape" "$file" | head -n 3 || true)"
    [ -z "$bad" ] || fail "$file: lines without the expected shape:"$'\n'"$bad"
    awk '
        {
            depth = 0; in_str = 0; esc = 0; ok = 1
            n = length($0)
            for (i = 1; i <= n; i++) {
                c = substr($0, i, 1)
                if (in_str) {
                    if (esc) esc = 0
                    else if (c == "\\") esc = 1
                    else if (c == "\"") in_str = 0
                    continue
                }
                if (c == "\"") in_str = 1
                else if (c == "{" || c == "[") depth++
                else if (c == "}" || c == "]") { depth--; if (depth < 0) ok = 0 }
                if (depth == 0 && i < n) ok = 0 # one value per line
            }
            if (!ok || depth != 0 || in_str) { print "line " NR ": unbalanced JSON: " $0; bad = 1 }
        }
        END { exit bad }
    ' "$file" >"$work/awk.out" || fail "$(head -n 3 "$work/awk.out")"
}

# The op kinds every demo run must show.
check_kinds() {
    local file="$1"
    shift
    local kind
    for kind in "$@"; do
        grep -q "^{\"op\":\"$kind\"," "$file" || fail "$file: no \"$kind\" op"
    done
    local txn_ops
    txn_ops="$(grep -c '"txn":{' "$file" || true)"
    [ "$txn_ops" -ge 2 ] || fail "$file: expected the transaction's ops (with \"txn\"), found $txn_ops"
    if grep '^{"op":"update",' "$file" | grep -q '"data":null'; then
        fail "$file: an update without its document (batch_fetch / updateLookup)"
    fi
}

echo "== build the tail example (release)"
cargo build --release --quiet --example tail
# Run the built binary itself, so no rebuild happens under the timeout.
tail_bin="$(cargo build --release --quiet --example tail --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*examples/tail[^"]*"' | tail -n 1 | cut -d'"' -f4)"
[ -x "$tail_bin" ] || fail "cannot find the built tail example (got '$tail_bin')"

echo "== tail: demo run ends on its own"
run_tail demo
total="$(wc -l <"$work/demo.jsonl")"
[ "$total" -ge 10 ] || fail "the demo printed only $total ops"
check_lines "$work/demo.jsonl" oplog
check_kinds "$work/demo.jsonl" insert update replace delete drop rename drop_database
echo "   $total ops"

echo "== tail --count $total"
run_tail count --count "$total"
lines="$(wc -l <"$work/count.jsonl")"
[ "$lines" -eq "$total" ] || fail "--count $total printed $lines lines"
check_lines "$work/count.jsonl" oplog
check_kinds "$work/count.jsonl" insert update replace delete drop rename drop_database

echo "== tail --count 3 stops early"
run_tail three --count 3
lines="$(wc -l <"$work/three.jsonl")"
[ "$lines" -eq 3 ] || fail "--count 3 printed $lines lines"

echo "== tail --source change-stream"
run_tail cs --source change-stream
check_lines "$work/cs.jsonl" change_stream
check_kinds "$work/cs.jsonl" insert update replace delete drop rename drop_database

echo "== tail --source direct"
run_tail direct --source direct
check_lines "$work/direct.jsonl" direct
grep -q '^{"op":"insert",' "$work/direct.jsonl" || fail "direct read printed no documents"
if grep -qv '^{"op":"insert",' "$work/direct.jsonl"; then
    fail "direct read printed something other than inserts"
fi

echo "== usage errors exit 2"
rc=0
"$tail_bin" --count zero >/dev/null 2>"$work/usage.log" || rc=$?
[ "$rc" -eq 2 ] || fail "--count zero exited with $rc, expected 2"
grep -qiE "usage:|--help" "$work/usage.log" || fail "--count zero printed no usage hint"

echo "tail-check: OK"
