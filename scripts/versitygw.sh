#!/usr/bin/env bash
# Prints the path of a versitygw S3 gateway binary (the S3 server the s3blob
# tests and bench/scale-out.sh run against), building it first when the cache
# lacks it. It is tools/versitygw/s3gw: versitygw's own gateway and POSIX
# backend, wired with the options of `versitygw --access A --secret S --port
# ADDR posix DIR` and without the other backends and identity services that
# versitygw's command links (about 100 packages). tools/versitygw is a module
# of its own, so versitygw never enters the product's go.mod.
#
# A fresh machine compiles it once: 93 s of CPU (48 s on two cores), where
# versitygw's command took 191 s. It is compiled without optimisations
# (-N -l), 30 % less to compile for a server the tests send little to; the
# binary is cached under the user cache directory, keyed by the versitygw
# version, the Go version and the wiring's source. Called by
# scripts/test-deps.sh (in the background) and by the tests.
set -euo pipefail
cd "$(dirname "$0")/../tools/versitygw"

version=$(go list -m -f '{{.Version}}' github.com/versity/versitygw)
[[ -n "$version" ]] || { echo "versitygw.sh: no versitygw version in tools/versitygw/go.mod" >&2; exit 1; }
gover=$(go env GOVERSION)
src=$(cat s3gw/main.go go.sum | sha256sum | cut -c1-12)
dir="${XDG_CACHE_HOME:-$HOME/.cache}/rampart/versitygw-$version-$gover-$src"
bin="$dir/s3gw"

mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9  # one build at a time: test binaries run in parallel
if [[ ! -x "$bin" ]]; then
  echo "versitygw.sh: building versitygw $version's S3 gateway into $dir (once; about 50 s)" >&2
  tmp=$(mktemp -d "$dir/build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -gcflags='all=-N -l' -o "$tmp/s3gw" ./s3gw
  mv "$tmp/s3gw" "$bin"  # atomic: a concurrent run sees all of it or none
fi
echo "$bin"
