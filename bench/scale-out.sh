#!/usr/bin/env bash
# The scale-out load test (issue 18): two rampart-server replicas over one
# PostgreSQL database, one S3 bucket (versitygw, POSIX backend) and one
# shared transparency log directory, DEVICES simulated devices (the real
# agent, each enrolled with its own certificate) split between two
# simulators, one per replica (the load balancer a fleet would have), and a
# phased rollout to all of them.
#
#  1. PostgreSQL 15 (Debian's postgresql-15, installed when missing) in a
#     fresh cluster with its default durability (fsync on), versitygw
#     (scripts/versitygw.sh builds it once), both on loopback;
#  2. rampart-server init --store DSN, then two `serve` processes on the
#     same data directory (keys, CAs) with store, blob_store and log_dir
#     shared (docs/scaling.md); the offline ceremony and a release pushed
#     through replica A;
#  3. `rampart sim` twice (DEVICES/2 each, id prefixes a- and b-), one
#     against each replica; once every device is enrolled, `rampart rollout
#     create` in phases (PHASES, SOAK) through replica B; the rollout's
#     progress is polled until it completes (or MAX_WAIT);
#  4. it reports check-ins per second, p50/p99 (the worse simulator), the
#     CPU seconds of each replica, of PostgreSQL (every backend included)
#     and of the simulators over the measured window, errors, the rollout's
#     time to complete, and names the bottleneck: the component that used
#     the most CPU when the machine's cores were saturated, else the
#     latency it waited on.
#
# Its last line is a one-line summary of those figures.
#
#   bench/scale-out.sh                               # 50,000 devices, 60 s poll (docs/scaling.md)
#   DEVICES=2000 POLL=10s bench/scale-out.sh         # reduced scale
#   KEEP=1 bench/scale-out.sh                        # keep the work directory
set -euo pipefail
DEVICES=${DEVICES:-50000}
POLL=${POLL:-60s}
WORKERS=${WORKERS:-16}        # check-ins at once, per simulator
PHASES=${PHASES:-1%,10%,50%,100%}
SOAK=${SOAK:-30s}
MAX_WAIT=${MAX_WAIT:-3600}    # seconds for enrolment plus the rollout
IMAGE_BYTES=${IMAGE_BYTES:-8192}
LEASE_TTL=${LEASE_TTL:-10s}
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
half=$((DEVICES / 2))
((half * 2 == DEVICES && half > 0)) || { echo "scale-out: DEVICES must be even and positive" >&2; exit 2; }

# Each simulator holds a connection per device, and each replica one per
# device it serves: half the devices' descriptors for each of these
# processes, and as many ephemeral ports towards one replica's address,
# with the enrolments' closed connections in TIME_WAIT on top. When that
# does not fit in the open-file limit (and it cannot be raised), the
# devices reconnect at each check-in (rampart sim --reconnect, as devices
# behind NAT do), and a process holds connections only for the check-ins
# under way. RECONNECT=1 or 0 forces either.
need_fds=$((half + 4096))
RECONNECT=${RECONNECT:-auto}
fits=1
if (($(ulimit -n) < need_fds)) && ! ulimit -n "$need_fds" 2> /dev/null; then fits=0; fi
case "$RECONNECT/$fits" in
  auto/1) RECONNECT=0 ;;
  auto/0)
    RECONNECT=1
    echo "scale-out: $half devices per replica need $need_fds open files to keep their connections, and the limit is $(ulimit -n): the devices reconnect at each check-in (--reconnect)" >&2
    ;;
  0/0)
    echo "scale-out: $half devices per replica need $need_fds open files, and the limit is $(ulimit -n): raise it (ulimit -Hn as root, or limits.conf), or let them reconnect (RECONNECT=1)" >&2
    exit 2
    ;;
esac
sim_flags=()
[[ "$RECONNECT" != 1 ]] || sim_flags+=(--reconnect)
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
old_port_range=""
if [[ "$RECONNECT" != 1 ]] && ((port_hi - port_lo + 1 < half + 8192)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "scale-out: $half connections to one replica need more ephemeral ports than $port_lo-$port_hi: widen net.ipv4.ip_local_port_range (as root)" >&2
    exit 2
  fi
  old_port_range="$port_lo $port_hi"
  sysctl -qw net.ipv4.ip_local_port_range="10240 65535"
  echo "scale-out: ephemeral ports widened to 10240-65535 for the run (restored at exit)" >&2
fi
# Memory: the simulators hold every device's state (its slots, both
# repositories' metadata, its TLS connection): about 0.3 MiB a device with
# Go's default GC, less when GOMEMLIMIT makes the collector work harder.
# Each simulator gets a third of the memory available, each replica a tenth
# (soft limits: the collector's target, not a cap).
avail_kib=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
SIM_MEMLIMIT=${SIM_MEMLIMIT:-$((avail_kib / 3 / 1024))MiB}
SERVER_MEMLIMIT=${SERVER_MEMLIMIT:-$((avail_kib / 10 / 1024))MiB}

pgbin=/usr/lib/postgresql/15/bin
if [[ ! -x "$pgbin/initdb" ]]; then
  echo "scale-out: installing postgresql-15" >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq > /dev/null && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-15 > /dev/null
fi
gw=$("$repo_root/scripts/versitygw.sh")

work=$(mktemp -d -t rampart-scale-out.XXXXXX)
shm=$(mktemp -d -p /dev/shm rampart-scale-out.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2> /dev/null || true; done
  if [[ -n "${pgdata:-}" && -f "$pgdata/postmaster.pid" ]]; then as_pg "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop > /dev/null 2>&1 || true; fi
  rm -rf "$shm"
  [[ -z "$old_port_range" ]] || sysctl -qw net.ipv4.ip_local_port_range="$old_port_range" || true
  if [[ -n "${KEEP:-}" ]]; then echo "scale-out: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# PostgreSQL refuses to run as root: as root the cluster is the postgres
# user's (the Debian package creates it).
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

(cd "$repo_root" && for c in rampart rampart-server; do go build -o "$work/bin/$c" "./cmd/$c"; done)
cd "$work"
R="$work/bin/rampart"
S="$work/bin/rampart-server"

# --- PostgreSQL
pgdata="$work/pg"
mkdir -p "$pgdata" && { [[ $(id -u) -ne 0 ]] || chown postgres "$pgdata"; }
as_pg "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C > pg-init.log
pgport=$(free_port)
as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -o "-h 127.0.0.1 -p $pgport -k $pgdata -c max_connections=200" start > /dev/null
as_pg "$pgbin/psql" -q -h 127.0.0.1 -p "$pgport" -U postgres -c 'CREATE DATABASE rampart' > /dev/null
pgpm=$(head -1 "$pgdata/postmaster.pid")
DSN="postgres://postgres@127.0.0.1:$pgport/rampart?sslmode=disable"

# --- versitygw and its bucket
gwport=$(free_port)
mkdir -p s3
"$gw" --access scaleout --secret scaleout-secret --port "127.0.0.1:$gwport" posix "$work/s3" > gw.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$gwport/" && break; sleep 0.1; done
curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user scaleout:scaleout-secret -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT "http://127.0.0.1:$gwport/rampart" \
  || { echo "scale-out: could not create the bucket" >&2; cat gw.log >&2; exit 2; }
printf '[default]\naws_access_key_id = scaleout\naws_secret_access_key = scaleout-secret\n' > s3-credentials

# --- two replicas
ADMIN=$("$S" init --data srv --store "$DSN" | grep -o 'rmp_[A-Za-z0-9_-]*')
cat > server.json << EOF
{
  "store": "$DSN",
  "blob_store": "s3://rampart/blobs?endpoint=http://127.0.0.1:$gwport&region=us-east-1&path_style=true",
  "blob_store_credentials": "$work/s3-credentials",
  "log_dir": "$work/shared-log",
  "lease_ttl": "$LEASE_TTL"
}
EOF
start_replica() { # NAME: starts a replica, sets ${NAME}_pid and ${NAME}_addr
  GOMEMLIMIT="$SERVER_MEMLIMIT" "$S" serve --data srv --config server.json --listen 127.0.0.1:0 2> "$1.log" &
  local pid=$!
  pids+=("$pid")
  local addr=""
  for _ in $(seq 300); do
    addr=$(grep -o '"msg":"serving","addr":"[^"]*"' "$1.log" | head -1 | sed 's/.*"addr":"\([^"]*\)"/\1/' || true)
    [[ -n "$addr" ]] && break
    sleep 0.1
  done
  [[ -n "$addr" ]] || { echo "scale-out: replica $1 did not start" >&2; cat "$1.log" >&2; exit 2; }
  printf -v "${1}_pid" %s "$pid"
  printf -v "${1}_addr" %s "$addr"
}
start_replica a
start_replica b
export RAMPART_CA="$work/srv/ca.pem" RAMPART_TOKEN="$ADMIN"
HW=scale-hw

# --- ceremony and release, through replica A
export RAMPART_SERVER="https://$a_addr"
# shellcheck source=bench/ceremony.sh disable=SC1091
source "$repo_root/bench/ceremony.sh"
ceremony
head -c "$IMAGE_BYTES" /dev/urandom > fw.img
"$R" release add repo fw.img --product acme-gw --version 1.0.0 --security-version 1 --hardware "$HW" > /dev/null 2>&1
"$R" repo sign repo acme-gw --key keys/rel.key --yes > /dev/null
"$R" repo push repo > /dev/null

# CPU seconds (user+system) of a process, and of its waited-for children.
cpu_of() { awk '{printf "%.2f", ($14 + $15 + $16 + $17) / 100}' "/proc/$1/stat" 2> /dev/null || echo 0; }
# PostgreSQL: the postmaster with the backends it reaped, plus the live ones.
pg_cpu() {
  local t
  t=$(cpu_of "$pgpm")
  for c in $(ps -o pid= --ppid "$pgpm"); do t=$(awk -v a="$t" -v b="$(cpu_of "$c")" 'BEGIN {printf "%.2f", a + b}'); done
  echo "$t"
}
sim_cpu() { awk -v a="$(cpu_of "$sim_a")" -v b="$(cpu_of "$sim_b")" 'BEGIN {printf "%.2f", a + b}'; }
# The whole machine's CPU time, busy and total (jiffies, /proc/stat): what
# the processes above leave out (the kernel's network stack, versitygw,
# this script's polling) counts too.
machine_cpu() { awk '/^cpu / {b = $2 + $3 + $4 + $7 + $8 + $9; printf "%d,%d", b, b + $5 + $6}' /proc/stat; }

# --- the fleet: one simulator per replica
slot=$(((IMAGE_BYTES + 4095) / 4096 * 4096 * 2))
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s.%N)
for side in a b; do
  addr_var="${side}_addr"
  TMPDIR="$shm" GOMEMLIMIT="$SIM_MEMLIMIT" "$R" sim --server "https://${!addr_var}" --devices "$half" --id-prefix "$side-" --hardware "$HW" --poll "$POLL" \
    --duration "${MAX_WAIT}s" --workers "$WORKERS" --slot-size "$slot" "${sim_flags[@]}" --json > "sim-$side.json" 2> "sim-$side.err" &
  pids+=($!)
  printf -v "sim_$side" %s "$!"
done
enrolled=0
while ((enrolled < DEVICES)); do
  sleep 5
  enrolled=$("$R" fleet stats --json 2> /dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["devices"])' || echo 0)
  if ! kill -0 "$sim_a" 2> /dev/null || ! kill -0 "$sim_b" 2> /dev/null; then
    echo "scale-out: a simulator stopped during enrolment" >&2; cat sim-a.err sim-b.err >&2; exit 1
  fi
  (($(date +%s) - ${t0%.*} < MAX_WAIT)) || { echo "scale-out: only $enrolled of $DEVICES devices enrolled in ${MAX_WAIT}s" >&2; exit 1; }
done
t_enrolled=$(date +%s.%N)
echo "scale-out: $DEVICES devices enrolled in $(awk -v a="$t0" -v b="$t_enrolled" 'BEGIN {printf "%.0f", b - a}') s" >&2

# --- the measured window: a phased rollout to every device, through replica B
cpu_a0=$(cpu_of "$a_pid") cpu_b0=$(cpu_of "$b_pid") cpu_pg0=$(pg_cpu) cpu_sim0=$(sim_cpu) mc0=$(machine_cpu)
export RAMPART_SERVER="https://$b_addr"
ro=$("$R" rollout create acme-gw/1.0.0 --select "hardware == \"$HW\"" --phases "$PHASES" --soak "$SOAK" \
  --min-success 1 --max-failure-rate 2% --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
state=running
while [[ "$state" != completed ]]; do
  sleep 5
  show=$("$R" rollout show "$ro" --json)
  state=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["state"])' "$show")
  case "$state" in aborted | paused) echo "scale-out: the rollout is $state: $show" >&2; break ;; esac
  (($(date +%s) - ${t0%.*} < MAX_WAIT)) || { echo "scale-out: the rollout did not complete within ${MAX_WAIT}s: $show" >&2; break; }
done
t_done=$(date +%s.%N)
# A completed rollout has handed the release to every device; each
# installs it at its next check-in. Wait for all of them to confirm it.
on=0
while [[ "$state" == completed ]] && ((on < DEVICES)) && (($(date +%s) - ${t0%.*} < MAX_WAIT)); do
  on=$("$R" fleet stats --json 2> /dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["by_version"].get("1.0.0", 0))' || echo 0)
  ((on >= DEVICES)) || sleep 2
done
t_conv=$(date +%s.%N)
cpu_a1=$(cpu_of "$a_pid") cpu_b1=$(cpu_of "$b_pid") cpu_pg1=$(pg_cpu) cpu_sim1=$(sim_cpu) mc1=$(machine_cpu)
# Peak resident memory (MiB) of the replicas and the simulators.
hwm() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2> /dev/null || echo 0; }
rss="$(hwm "$a_pid"),$(hwm "$b_pid"),$(hwm "$sim_a"),$(hwm "$sim_b")"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# The simulators print their reports when interrupted.
kill -INT "$sim_a" "$sim_b"
wait "$sim_a" || true
wait "$sim_b" || true
t_end=$(date +%s.%N)

python3 - "$DEVICES" "$state" "$t0" "$t_enrolled" "$t_done" "$t_conv" "$t_end" "$(nproc)" \
  "$cpu_a0" "$cpu_a1" "$cpu_b0" "$cpu_b1" "$cpu_pg0" "$cpu_pg1" "$cpu_sim0" "$cpu_sim1" "$load_before" "$load_after" "$POLL" "$rss" "$RECONNECT" "$mc0" "$mc1" << 'PY'
import json, sys
(n, state, t0, te, td, tc, tend, cores, a0, a1, b0, b1, p0, p1, s0, s1, lb, la, poll, rss, rc, mc0, mc1) = sys.argv[1:]
(mb0, mt0), (mb1, mt1) = map(int, mc0.split(",")), map(int, mc1.split(","))
machine = (mb1 - mb0) / (mt1 - mt0) if mt1 > mt0 else 0
reconnect = ", a connection per check-in" if rc == "1" else ", connections kept alive"
ra, rb, rsa, rsb = map(int, rss.split(","))
n, cores = int(n), int(cores)
t0, te, td, tc, tend = map(float, (t0, te, td, tc, tend))
sims = [json.load(open(f)) for f in ("sim-a.json", "sim-b.json")]
checkins = sum(s["checkins"] for s in sims)
errors = sum(s["errors"] for s in sims)
p50 = max(s["checkin_p50_ms"] for s in sims)
p99 = max(s["checkin_p99_ms"] for s in sims)
on = sum(s["by_release"].get("1.0.0", 0) for s in sims)
rate = checkins / (tend - t0)
cpu = {"replica A": float(a1) - float(a0), "replica B": float(b1) - float(b0),
       "PostgreSQL": float(p1) - float(p0), "simulators": float(s1) - float(s0)}
roll, conv = td - te, tc - te
busy = sum(cpu.values()) / (cores * conv) if conv > 0 else 0
servers = cpu["replica A"] + cpu["replica B"]
print(f"devices {n} over 2 replicas, poll {poll}{reconnect}; enrolled in {te - t0:.0f} s; rollout {state} in {roll:.0f} s, "
      f"every device on the release {conv:.0f} s after the rollout's creation")
print(f"check-ins {checkins} ({rate:.0f}/s over the run: a device every {n / rate if rate else 0:.0f} s on average, poll {poll}), "
      f"p50 {p50:.1f} ms, p99 {p99:.1f} ms (worse simulator), errors {errors}, devices on the release {on} of {n}")
print("CPU seconds from the rollout's creation to the last install: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()) +
      f" (the {cores} cores {100 * busy:.0f}% busy with these, {100 * machine:.0f}% busy in all)")
print(f"load average before {lb}, after {la}")
print(f"peak resident memory: replica A {ra} MiB, replica B {rb} MiB, simulators {rsa} + {rsb} MiB "
      f"({1024 * (rsa + rsb) / n:.0f} KiB per simulated device)")
groups = {"replicas": servers, "PostgreSQL": cpu["PostgreSQL"], "simulators": cpu["simulators"]}
top = max(groups, key=groups.get)
if machine > 0.85:
    who = "the rampart-server replicas" if top == "replicas" else top
    bottleneck = f"CPU: the machine's cores were saturated; the largest consumer was {who}"
    if top == "simulators":
        bottleneck += " (the load generator shares the machine: the servers' own limit is higher than measured)"
else:
    top = "pacing"
    bottleneck = (f"not CPU ({100 * machine:.0f}% busy): the rollout is paced by its phases, each held for the longer of its soak "
                  f"and the rollout engine's one-minute round, and by the devices' poll interval ({poll})")
print("bottleneck: " + bottleneck)
ok = errors == 0 and state == "completed" and on == n
print(f"scale-out: devices={n} replicas=2 reconnect={rc} checkins_per_s={rate:.0f} p50_ms={p50:.1f} p99_ms={p99:.1f} errors={errors} "
      f"rollout_s={roll:.0f} converged_s={conv:.0f} server_cpu_s={servers:.1f} db_cpu_s={cpu['PostgreSQL']:.1f} sim_cpu_s={cpu['simulators']:.1f} "
      f"server_rss_mib={max(ra, rb)} machine_busy={100 * machine:.0f}% "
      f"bottleneck={top} {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
