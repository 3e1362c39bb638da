#!/usr/bin/env bash
# Prints the path of a versitygw binary (the S3 server the s3blob tests run
# against), building it first when the cache lacks it. The version comes from
# tools/versitygw/go.mod, a module of its own so versitygw never enters the
# product's go.mod; the binary is cached under the user cache directory keyed
# by that version and the Go version, so only the first run pays the build
# (about 90 s on two cores). Called by scripts/test-deps.sh and by the tests.
set -euo pipefail
cd "$(dirname "$0")/../tools/versitygw"

version=$(awk '$1 == "github.com/versity/versitygw" { print $2 }' go.mod)
[[ -n "$version" ]] || { echo "versitygw.sh: no versitygw version in tools/versitygw/go.mod" >&2; exit 1; }
gover=$(go env GOVERSION)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/rampart/versitygw-$version-$gover"
bin="$dir/versitygw"

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9  # one build at a time: test binaries run in parallel
if [[ ! -x "$bin" ]]; then
  echo "versitygw.sh: building versitygw $version into $dir (once; about 90 s)" >&2
  tmp=$(mktemp -d "$dir/build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath github.com/versity/versitygw/cmd/versitygw
  mv "$tmp/versitygw" "$bin"  # atomic: a concurrent run sees all of it or none
fi
echo "$bin"
