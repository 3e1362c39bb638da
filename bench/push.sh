#!/usr/bin/env bash
# Measures pushing a release to rampart-server against `openssl dgst -sha256`
# of the same image, in one run: a fresh server on loopback, the offline
# ceremony with its online keys, `rampart release add`, then the timed
# `rampart repo push` (blob upload with the server verifying the digest,
# push acceptance, transparency log append, online signing, and mirroring
# the published metadata back).
#
#   bench/push.sh              # 256 MiB
#   SIZE_MIB=64 bench/push.sh
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-256}
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
work=$(mktemp -d -t rampart-push.XXXXXX)
cleanup() { [[ -n "${srv_pid:-}" ]] && kill "$srv_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
(cd "$repo_root" && go build -o "$work/rampart" ./cmd/rampart && go build -o "$work/rampart-server" ./cmd/rampart-server)
cd "$work"
R="$work/rampart"
ADMIN=$("$work/rampart-server" init --data srv | grep -o 'rmp_[A-Za-z0-9_-]*')
"$work/rampart-server" serve --data srv --listen 127.0.0.1:0 2> srv.log &
srv_pid=$!
for _ in $(seq 50); do grep -q '"serving"' srv.log && break; sleep 0.1; done
addr=$(grep -o '"addr":"[^"]*"' srv.log | head -1 | cut -d'"' -f4)
export RAMPART_SERVER="https://$addr" RAMPART_CA="$work/srv/ca.pem" RAMPART_TOKEN="$ADMIN"

"$R" server keys -o online > /dev/null
for k in root targets rel; do "$R" key generate "keys/$k" --no-passphrase > /dev/null; done
"$R" repo init repo --root-key keys/root.pub --targets-key keys/targets.pub --snapshot-key online/snapshot.pub --timestamp-key online/timestamp.pub 2> /dev/null
"$R" repo sign repo root --key keys/root.key --yes > /dev/null
"$R" repo delegate repo acme-gw --key keys/rel.pub --threshold 1
"$R" repo sign repo targets --key keys/targets.key --yes > /dev/null
head -c "${SIZE_MIB}M" /dev/urandom > fw.img
head -c "${SIZE_MIB}M" /dev/urandom > fw2.img
"$R" release add repo fw.img --product acme-gw --version 1.0.0 --security-version 1 --hardware hw > /dev/null 2>&1
"$R" repo sign repo acme-gw --key keys/rel.key --yes > /dev/null
cat fw.img > /dev/null
sync

t() { local s e; s=$(date +%s.%N); "$@" > /dev/null; e=$(date +%s.%N); awk "BEGIN{print $e - $s}"; }
o=$(for i in 1 2 3; do t openssl dgst -sha256 fw.img; done | sort -n | head -1)
# This sandbox is a VM whose freed memory goes back to the host after a
# few seconds idle (free page reporting): the first write into fresh page
# cache then costs about 2 ms/MiB of system time that a dedicated server
# does not pay (docs/performance.md, "Fresh pages"). The server writes the
# blob into fresh pages, so the push is timed twice: cold, as it comes,
# and after writing and deleting a scratch file of the image's size, so
# the pages it will allocate are backed again.
p_cold=$(t "$R" repo push repo)
"$R" release add repo fw2.img --product acme-gw --version 1.0.1 --security-version 1 --hardware hw > /dev/null 2>&1
"$R" repo sign repo acme-gw --key keys/rel.key --yes > /dev/null
cat fw2.img > /dev/null
dd if=/dev/zero of=srv/pretouch bs=1M count="$((SIZE_MIB + 16))" status=none
rm srv/pretouch
sync
p=$(t "$R" repo push repo)
echo "image:                 ${SIZE_MIB} MiB random, $(nproc) cores, $(openssl version | cut -d' ' -f1-2)"
printf 'openssl dgst -sha256:  %6.2f s\n' "$o"
printf 'rampart repo push:     %6.2f s  = %.2f x openssl (target <= 3), second release, pages pre-touched\n' "$p" "$(awk "BEGIN{print $p / $o}")"
printf '  (cold, first release:  %6.2f s  = %.2f x openssl)\n' "$p_cold" "$(awk "BEGIN{print $p_cold / $o}")"
