#!/usr/bin/env bash
# Run Complement (github.com/matrix-org/complement, the Matrix homeserver test suite) against Passerelle
# without Docker. Every complement.Deploy call starts a fresh bin/passerelle on a new temp data dir and a
# free loopback port, as server "hs1" with open m.login.dummy registration; the deployer lives in
# scripts/complement/deployer.go.in and is added to the Complement checkout with `go test -overlay`
# (the checkout itself is never modified). Tests that need two homeservers (federation) are skipped.
#
# Usage: scripts/complement.sh /path/to/complement-checkout [summary.md]
#
# Environment:
#   COMPLEMENT_PKGS      packages to run, relative to the checkout (default "./tests/csapi ./tests")
#   COMPLEMENT_RUN       -run regexp (default: all)
#   COMPLEMENT_TIMEOUT   go test -timeout per package binary (default 40m)
#   COMPLEMENT_PARALLEL  go test -parallel (default 2; the suite runs packages with -p 1)
#   COMPLEMENT_OUT_DIR   where run.json, the overlay and failing tests' server logs go (default: a new temp dir)
#   PASSERELLE_BIN       use this binary instead of building bin/passerelle with `make build`
#   PASSERELLE_LOG_LEVEL server log level (default info)
set -euo pipefail

if [[ $# -lt 1 || ! -d "$1" ]]; then
	echo "usage: $0 /path/to/complement-checkout [summary.md]" >&2
	exit 2
fi
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
checkout="$(cd "$1" && pwd)"
if [[ ! -f "$checkout/test_main.go" ]] || ! grep -q '^module github.com/matrix-org/complement' "$checkout/go.mod"; then
	echo "$checkout is not a Complement checkout (no test_main.go / go.mod)" >&2
	exit 2
fi
out_dir="${COMPLEMENT_OUT_DIR:-$(mktemp -d /tmp/passerelle-complement.XXXXXX)}"
mkdir -p "$out_dir/server-logs"
out_dir="$(cd "$out_dir" && pwd)"
summary="${2:-$out_dir/summary.md}"
pkgs="${COMPLEMENT_PKGS:-./tests/csapi ./tests}"

if [[ -z "${PASSERELLE_BIN:-}" ]]; then
	echo ">> make build" >&2
	make -C "$repo" build >&2
	PASSERELLE_BIN="$repo/bin/passerelle"
fi
PASSERELLE_BIN="$(cd "$(dirname "$PASSERELLE_BIN")" && pwd)/$(basename "$PASSERELLE_BIN")"
[[ -x "$PASSERELLE_BIN" ]] || { echo "PASSERELLE_BIN=$PASSERELLE_BIN is not executable" >&2; exit 2; }

# The overlay adds one file to Complement's root package; its init sets the custom deployer.
overlay="$out_dir/overlay.json"
printf '{"Replace":{"%s":"%s"}}\n' "$checkout/passerelle_deployer.go" "$repo/scripts/complement/deployer.go.in" >"$overlay"

run_args=()
[[ -n "${COMPLEMENT_RUN:-}" ]] && run_args=(-run "$COMPLEMENT_RUN")

echo ">> go test $pkgs in $checkout (json: $out_dir/run.json)" >&2
start=$(date +%s)
set +e
(
	cd "$checkout" &&
		PASSERELLE_BIN="$PASSERELLE_BIN" \
		PASSERELLE_LOG_DIR="$out_dir/server-logs" \
		PASSERELLE_LOG_LEVEL="${PASSERELLE_LOG_LEVEL:-info}" \
		COMPLEMENT_BASE_IMAGE="${COMPLEMENT_BASE_IMAGE:-passerelle-external-process}" \
		go test -overlay "$overlay" -json -count=1 -p 1 -parallel "${COMPLEMENT_PARALLEL:-2}" \
			-timeout "${COMPLEMENT_TIMEOUT:-40m}" "${run_args[@]}" $pkgs
) >"$out_dir/run.json" 2>"$out_dir/go-test.stderr"
rc=$?
set -e
elapsed=$(($(date +%s) - start))

(cd "$repo" && go run ./scripts/complement/summarize -in "$out_dir/run.json" -out "$summary")
{
	echo
	echo "Run: $(date -u +%FT%TZ), ${elapsed}s, go test exit $rc, complement $(git -C "$checkout" rev-parse --short HEAD 2>/dev/null || echo unknown), passerelle $("$PASSERELLE_BIN" version 2>/dev/null | head -1 || true)"
	echo "Raw output: $out_dir/run.json; server logs of failing tests: $out_dir/server-logs"
} >>"$summary"
head -8 "$summary" >&2
echo ">> summary: $summary" >&2
