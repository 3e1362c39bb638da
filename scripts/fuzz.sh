#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 2m). New failing inputs
# land in the package's testdata/fuzz/ and fail `go test` until fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-2m}
# Go minimizes every new interesting input for up to 60 s by default, and
# each try snapshots the whole coverage map: for FuzzReader (18 KiB
# bundles, a large dependency graph) that left 34 executions in 16 s and
# no new input. Capped at 1 s it ran 25,800 and found 44.
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-1s}
# Every fuzz target in the module, found rather than listed: a list went
# stale once (a renamed package, four targets never added).
mapfile -t targets < <(git grep -o -E '^func Fuzz[A-Za-z0-9_]*' -- '*_test.go' |
  sed -E 's#^(.*)/[^/]*:func (Fuzz.*)$#./\1 \2#' | sort -u)
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
if [ -n "${FUZZ_LIST:-}" ]; then
  printf '%s\n' "${targets[@]}"
  exit 0
fi
for t in "${targets[@]}"; do
  read -r pkg name <<< "$t"
  echo "fuzz: $name ($pkg) for $FUZZTIME" >&2
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$pkg"
done
