#!/usr/bin/env bash
# Measures, on one random image and in one run: `openssl dgst -sha256` of the
# image (the reference: one sequential SHA-256 pass with SHA-NI), `rampart
# release add` (copy, whole-image hash and chunk index) and `rampart verify`
# of the image's bundle (metadata, index, every chunk), then prints the
# ratios and verify's peak RSS. Each figure is the best of RUNS runs with the
# image in the page cache.
#
#   bench/verify.sh            # 1 GiB image, 3 runs
#   SIZE_MIB=256 RUNS=5 bench/verify.sh
set -euo pipefail
SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
if [[ ! -x /usr/bin/time ]]; then
  echo "bench: installing GNU time" >&2
  apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
fi
work=$(mktemp -d -t rampart-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$repo_root" && go build -o "$work/rampart" ./cmd/rampart)
cd "$work"
R="$work/rampart"

head -c "${SIZE_MIB}M" /dev/urandom > fw.img
cat fw.img > /dev/null

# measure CMD...: prints "seconds maxrss_kib" of the command.
# Each measurement starts with no dirty pages from the previous one.
measure() {
  sync
  /usr/bin/time -f '%e %M' -o .t "$@" > /dev/null
  cat .t
}
# best SECONDS-AND-RSS-LINES: the line with the lowest time.
best() { sort -n | head -1; }

for k in root targets online rel-a rel-b; do "$R" key generate "keys/$k" --no-passphrase > /dev/null; done
"$R" repo init repo --root-key keys/root.pub --targets-key keys/targets.pub --online-key keys/online.pub
"$R" repo sign repo root --key keys/root.key --yes > /dev/null
"$R" repo delegate repo acme-gw --key keys/rel-a.pub --key keys/rel-b.pub --threshold 2
"$R" repo sign repo targets --key keys/targets.key --yes > /dev/null

openssl_t=$(for i in $(seq "$RUNS"); do measure openssl dgst -sha256 fw.img; done | best)
# The copy into the repository alone, for context: release add must copy.
cat_t=$(for i in $(seq "$RUNS"); do measure sh -c 'cat fw.img > copy.img'; rm -f copy.img; done | best)
# Each run adds a distinct image (its first bytes changed), as a release
# engineer would; identical content would share one staged blob.
add_t=$(for i in $(seq "$RUNS"); do
  printf '%08d' "$i" | dd of=fw.img conv=notrunc status=none
  measure "$R" release add repo fw.img --product acme-gw --version "1.0.$i" --security-version 1 --hardware hw
done | best)
"$R" repo sign repo acme-gw --key keys/rel-a.key --yes > /dev/null
"$R" repo sign repo acme-gw --key keys/rel-b.key --yes > /dev/null
"$R" repo publish repo --key keys/online.key > /dev/null
"$R" bundle repo acme-gw/1.0.1 -o fw.rbundle > /dev/null
cat fw.rbundle > /dev/null
verify_t=$(for i in $(seq "$RUNS"); do measure "$R" verify fw.rbundle --root repo/public/1.root.json --hardware hw; done | best)

read -r o_s o_rss <<< "$openssl_t"
read -r c_s c_rss <<< "$cat_t"
read -r a_s a_rss <<< "$add_t"
read -r v_s v_rss <<< "$verify_t"
echo "image:                      ${SIZE_MIB} MiB random, best of ${RUNS}, $(nproc) cores, $(openssl version | cut -d' ' -f1-2)"
printf 'openssl dgst -sha256:       %6.2f s\n' "$o_s"
printf 'cat image > copy:           %6.2f s  = %.2f x openssl (the copy release add must also make)\n' "$c_s" "$(awk "BEGIN{print $c_s / $o_s}")"
printf 'rampart release add:        %6.2f s  = %.2f x openssl (target <= 1.5)  peak RSS %d MiB\n' "$a_s" "$(awk "BEGIN{print $a_s / $o_s}")" $((a_rss / 1024))
printf 'rampart verify (bundle):    %6.2f s  = %.2f x openssl (target <= 1.0)  peak RSS %d MiB (target < 64)\n' "$v_s" "$(awk "BEGIN{print $v_s / $o_s}")" $((v_rss / 1024))
