#!/usr/bin/env bash
# Runs every Fuzz* target in the module for a short time (FUZZTIME, default 10s each) to catch regressions in
# the parsers' invariants. Failures leave their input under the package's testdata/fuzz/ for a regression test.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-10s}"
status=0
while IFS= read -r file; do
	pkg="./$(dirname "$file")"
	for fn in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
		echo "== $pkg $fn ($fuzztime)"
		if ! CGO_ENABLED=1 go test -tags goolm -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$pkg"; then
			status=1
		fi
	done
done < <(grep -rlE '^func Fuzz' --include='*_test.go' . | sed 's#^\./##' | sort)
exit $status
