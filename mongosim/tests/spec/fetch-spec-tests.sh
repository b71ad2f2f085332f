#!/usr/bin/env bash
# Downloads MongoDB's unified-format spec tests (change streams, CRUD, transactions) that
# mongosim's conformance suite (mongosim/tests/spec.rs) runs, at the commit the suite was
# checked against, into DEST (default: ../shared/spec-tests beside the workspace, where the
# suite looks; or point MONGOSIM_SPEC_TESTS at DEST).
#
#   bash mongosim/tests/spec/fetch-spec-tests.sh [DEST]
#
# The files are MongoDB's (mongodb/specifications, CC BY-NC-SA 3.0): they are read from
# outside the repository and never committed to it. Needs curl and tar, and internet access.
set -euo pipefail
COMMIT=92b3c0b9287bfba1b0ec4084300858d05c654f8c
SUITES=(change-streams crud transactions)
workspace=$(cd "$(dirname "$0")/../../.." && pwd)
dest=${1:-$workspace/../shared/spec-tests}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "downloading mongodb/specifications@$COMMIT"
curl -fsSL "https://codeload.github.com/mongodb/specifications/tar.gz/$COMMIT" -o "$tmp/specs.tgz"
tar -xzf "$tmp/specs.tgz" -C "$tmp"
src="$tmp/specifications-$COMMIT/source"

mkdir -p "$dest"
for suite in "${SUITES[@]}"; do
    mkdir -p "$dest/$suite"
    cp "$src/$suite/tests/unified/"*.json "$dest/$suite/"
    if [ -f "$src/$suite/tests/README.md" ]; then
        cp "$src/$suite/tests/README.md" "$dest/$suite/README.md"
    fi
done
cp "$src/unified-test-format/unified-test-format.md" "$dest/"
cp "$(ls "$src/unified-test-format/"schema-*.json | sort -V | tail -n 1)" "$dest/"
cat > "$dest/NOTICE.md" <<NOTICE
# MongoDB specification tests (data)

Copied unchanged from the public repository mongodb/specifications at commit $COMMIT:
the unified-format tests of source/change-streams, source/crud and source/transactions, the
unified test format description and its newest schema. License: Creative Commons
Attribution-NonCommercial-ShareAlike 3.0 (see that repository's LICENSE.md).
NOTICE
echo "spec tests in $dest: $(find "$dest" -name '*.json' | wc -l) files"
