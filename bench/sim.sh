#!/usr/bin/env bash
# Measures `rampart sim` against one rampart-server on this machine
# (issue 17): DEVICES simulated devices (the real agent, each enrolled
# with its own certificate) polling every POLL for DURATION, a release
# deployed with `rampart deploy` while they run. Requirement: zero errors,
# every device converges to the release, check-in p99 reported (target
# under 100 ms), server peak RSS reported.
#
#  1. a real rampart-server on 127.0.0.1 (embedded storage) set up through
#     the real CLI flow (offline ceremony with the server's online keys,
#     director root, repo push) with one release of IMAGE_BYTES;
#  2. `rampart sim --devices DEVICES --poll POLL --duration DURATION
#     --json` in the background; `rampart deploy` is repeated every 5 s
#     until it reaches every device (a deploy reaches the devices enrolled
#     when it is made), then the simulator runs to its end;
#  3. the simulator's --json report, the server's peak RSS (VmHWM) and CPU
#     time, the simulator's peak RSS, the load average before and after.
#
# The devices' files (keys, certificates, trusted TUF metadata: go-tuf
# rewrites them at check-ins) go to /dev/shm, so the run does not load
# the shared disk.
#
#   bench/sim.sh                                   # 10000 devices, 2 s poll, 5 min
#   DEVICES=2000 DURATION=3m bench/sim.sh          # reduced scale
#   KEEP=1 bench/sim.sh                            # keep the work directory
set -euo pipefail
DEVICES=${DEVICES:-10000}
POLL=${POLL:-2s}
DURATION=${DURATION:-5m}
WORKERS=${WORKERS:-8}
IMAGE_BYTES=${IMAGE_BYTES:-8192}
repo_root="$(cd "$(dirname "$0")/.." && pwd)"

work=$(mktemp -d -t rampart-sim-bench.XXXXXX)
shm=$(mktemp -d -p /dev/shm rampart-sim-bench.XXXXXX)
cleanup() {
  if [[ -n "${sim_pid:-}" ]]; then kill "$sim_pid" 2> /dev/null || true; wait "$sim_pid" 2> /dev/null || true; fi
  if [[ -n "${srv_pid:-}" ]]; then kill "$srv_pid" 2> /dev/null || true; wait "$srv_pid" 2> /dev/null || true; fi
  rm -rf "$shm"
  if [[ -n "${KEEP:-}" ]]; then echo "bench: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
(cd "$repo_root" && for c in rampart rampart-server; do go build -o "$work/bin/$c" "./cmd/$c"; done)
cd "$work"
R="$work/bin/rampart"

ADMIN=$("$work/bin/rampart-server" init --data srv | grep -o 'rmp_[A-Za-z0-9_-]*')
"$work/bin/rampart-server" serve --data srv --listen 127.0.0.1:0 2> srv.log &
srv_pid=$!
for _ in $(seq 100); do grep -q '"serving"' srv.log && break; sleep 0.1; done
addr=$(grep -o '"addr":"[^"]*"' srv.log | head -1 | cut -d'"' -f4)
[[ -n "$addr" ]] || { echo "bench: server did not start" >&2; cat srv.log >&2; exit 2; }
export RAMPART_SERVER="https://$addr" RAMPART_CA="$work/srv/ca.pem" RAMPART_TOKEN="$ADMIN"
HW=bench-hw

# shellcheck source=bench/ceremony.sh disable=SC1091
source "$repo_root/bench/ceremony.sh"
ceremony
head -c "$IMAGE_BYTES" /dev/urandom > fw.img
"$R" release add repo fw.img --product acme-gw --version 1.0.0 --security-version 1 --hardware "$HW" > /dev/null 2>&1
"$R" repo sign repo acme-gw --key keys/rel.key --yes > /dev/null
"$R" repo push repo > /dev/null

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
slot=$(((IMAGE_BYTES + 4095) / 4096 * 4096 * 2))
start=$(date +%s)
TMPDIR="$shm" /usr/bin/time -v -o sim.time "$R" sim --devices "$DEVICES" --hardware "$HW" --poll "$POLL" \
  --duration "$DURATION" --workers "$WORKERS" --slot-size "$slot" --json > sim.json 2> sim.err &
sim_pid=$!
deployed=0
while kill -0 "$sim_pid" 2> /dev/null; do
  sleep 5
  if ((deployed < DEVICES)); then
    out=$("$R" deploy acme-gw/1.0.0 --hardware "$HW" 2> /dev/null || true)
    n=$(sed -n 's/^deployed .* to \([0-9]*\) .*/\1/p' <<< "$out")
    deployed=${n:-0}
    ((deployed < DEVICES)) || echo "bench: deploy reached all $DEVICES devices after $(($(date +%s) - start)) s" >&2
  fi
done
rc=0
wait "$sim_pid" || rc=$?
sim_pid=
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# Requests by route: what one full agent check-in costs the server.
{ curl -sS --cacert srv/ca.pem -H "Authorization: Bearer $ADMIN" "https://$addr/metrics" |
  awk '/^rampart_http_requests_total/ {r = ""; if (match($0, /route="[^"]*"/)) r = substr($0, RSTART, RLENGTH); n[r] += $NF} END {for (r in n) if (n[r] > 0) printf "%10d %s\n", n[r], r}' |
  sort -rn > routes.txt; } || echo "(could not read /metrics)" > routes.txt
srv_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$srv_pid/status")
srv_rss=$(awk '/VmRSS/ {print $2}' "/proc/$srv_pid/status")
srv_cpu=$(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$srv_pid/stat")
sim_rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' sim.time)
sim_cpu=$(awk -F': ' '/User time/ {u=$2} /System time/ {s=$2} END {printf "%.1f", u + s}' sim.time)

echo "rampart sim --devices $DEVICES --poll $POLL --duration $DURATION --workers $WORKERS --slot-size $slot (image $IMAGE_BYTES bytes)"
cat sim.json
cat sim.err >&2
echo "server: peak RSS $((srv_hwm / 1024)) MiB (now $((srv_rss / 1024)) MiB), CPU ${srv_cpu} s"
echo "simulator: peak RSS $((sim_rss / 1024)) MiB, CPU ${sim_cpu} s"
echo "server requests by route:"
cat routes.txt
echo "load average before: $load_before, after: $load_after (nproc $(nproc))"
python3 - "$DEVICES" sim.json << 'PY'
import json, sys
n, r = int(sys.argv[1]), json.load(open(sys.argv[2]))
# Correctness decides the exit status; the p99 target (issue 17: under
# 100 ms) is judged on its own line, as it depends on the machine.
ok = r["errors"] == 0 and r["by_release"].get("1.0.0") == n
fast = r["checkin_p99_ms"] < 100
print("converged %d of %d; errors %d -> %s; check-in p99 %.1f ms -> %s the 100 ms target; %d installs, install p99 %.1f ms" % (
    r["by_release"].get("1.0.0", 0), n, r["errors"], "PASS" if ok else "FAIL",
    r["checkin_p99_ms"], "meets" if fast else "MISSES", r["installs"], r["install_p99_ms"]))
sys.exit(0 if ok else 1)
PY
exit "$rc"
