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
targets=(
  "./internal/bundle FuzzReader"
  "./internal/chunkindex FuzzParse"
  "./internal/keys FuzzParsePKCS11URI"
  "./internal/release FuzzFromTarget"
  "./internal/bootenv FuzzParseUBoot"
  "./internal/bootenv FuzzParseGRUB"
  "./internal/logproof FuzzParseStatement"
  "./internal/logproof FuzzParseProof"
  "./internal/logproof FuzzParseEnvelope"
  "./internal/agent FuzzParseConfig"
  "./internal/agent FuzzLoadState"
  "./internal/pki FuzzVerifyManufacturerChain"
  "./internal/pki FuzzIssueDevice"
  "./internal/server FuzzUnsafePath"
  "./internal/install FuzzReadSpan"
  "./internal/repo FuzzAdoptable"
  "./internal/strictjson FuzzUnmarshal"
)
for t in "${targets[@]}"; do
  read -r pkg name <<< "$t"
  echo "fuzz: $name ($pkg) for $FUZZTIME" >&2
  go test -run='^$' -fuzz="^${name}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$pkg"
done
