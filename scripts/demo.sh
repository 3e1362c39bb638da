#!/usr/bin/env bash
# The main job until `rampart demo` exists: builds rampart and runs the
# signing-core acceptance sequence from the README, verbatim, in a fresh
# directory (RAMPART_DEMO_DIR, default a new temporary directory).
set -euo pipefail
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
work="${RAMPART_DEMO_DIR:-$(mktemp -d -t rampart-demo.XXXXXX)}"
mkdir -p "$work/bin"
(cd "$repo_root" && go build -o "$work/bin/rampart" ./cmd/rampart)
export PATH="$work/bin:$PATH"
cd "$work"
echo "rampart demo in $work" >&2
set -x

export RAMPART_PASSPHRASE=correct-horse
rampart key generate keys/root-a                     # ed25519 by default: keys/root-a.key (encrypted) + keys/root-a.pub, prints the key id
rampart key generate keys/root-b --type ecdsa-p256
rampart key generate keys/targets
rampart key generate keys/online
rampart key generate keys/rel-a
rampart key generate keys/rel-b --type ecdsa-p256
rampart key generate keys/rel-c
rampart repo init repo --root-key keys/root-a.pub --root-key keys/root-b.pub --root-threshold 2 \
    --targets-key keys/targets.pub --online-key keys/online.pub
rampart repo sign repo root --key keys/root-a.key --yes
rampart repo sign repo root --key keys/root-b.key --yes
rampart repo delegate repo acme-gw --key keys/rel-a.pub --key keys/rel-b.pub --key keys/rel-c.pub --threshold 2
rampart repo sign repo targets --key keys/targets.key --yes
head -c 64M /dev/urandom > fw.img
rampart release add repo fw.img --product acme-gw --version 2.4.1 --security-version 7 --hardware acme-gw-rev2
rampart repo sign repo acme-gw --key keys/rel-a.key --yes
rampart repo sign repo acme-gw --key keys/rel-c.key --yes
rampart repo status repo                             # every staged role: version, signatures present / threshold, missing key ids, expiry
rampart repo publish repo --key keys/online.key      # refuses unless every staged role meets its threshold; signs snapshot + timestamp; writes repo/public/
rampart bundle repo acme-gw/2.4.1 -o acme-gw-2.4.1.rbundle
rampart verify acme-gw-2.4.1.rbundle --root repo/public/1.root.json --hardware acme-gw-rev2
