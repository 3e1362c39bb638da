#!/usr/bin/env bash
# Installs what the test suite needs when it is missing. Idempotent and quiet
# when everything is present; called by `make test` (and so by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# versitygw, the S3 server the S3 blob store's tests run against: built once
# from tools/versitygw (its own module) and cached under the user cache dir.
# On a fresh machine the build is about 50 s of both cores; it runs in the
# background, beside the package installs (network and disk bound) and the
# vet that follows, and the first test that needs it waits for it
# (versitygw.sh holds a lock while it builds, and a failed build is retried
# there, with its error in that test's output).
log="${XDG_CACHE_HOME:-$HOME/.cache}/rampart/versitygw-build.log"
mkdir -p "$(dirname "$log")"
nohup ./scripts/versitygw.sh >"$log" 2>&1 </dev/null &

# Debian packages, keyed by a file or command that proves each is installed.
need=()
check() { # check PACKAGE PATH-OR-COMMAND
  if [[ "$2" == /* ]]; then [[ -e "$2" ]] || need+=("$1"); else command -v "$2" >/dev/null || need+=("$1"); fi
}
check softhsm2 softhsm2-util
check opensc pkcs11-tool
check nodejs node
check npm npm
check openssl openssl
check u-boot-tools mkenvimage
check libubootenv-tool fw_setenv
check grub-common grub-editenv
# PostgreSQL 15 for the PostgreSQL store's tests (internal/store/postgres/pgtest
# starts its own server from these binaries; the package's own cluster and
# service are not used).
check postgresql-15 /usr/lib/postgresql/15/bin/initdb
# Headless chromium for the dashboard's browser tests (internal/demo,
# dashboard_test.go, through chromedp).
check chromium /usr/bin/chromium

if ((${#need[@]})); then
  echo "test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  sudo_cmd=()
  [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# npm packages for interop tests (tuf-js as an independent TUF client).
for dir in $(find internal cmd -name package.json -not -path '*/node_modules/*' -printf '%h\n' 2>/dev/null); do
  if [[ ! -d "$dir/node_modules" || "$dir/package-lock.json" -nt "$dir/node_modules" ]]; then
    echo "test-deps: npm ci in $dir" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
done

