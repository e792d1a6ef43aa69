#!/usr/bin/env bash
# vswitch scale benchmark: what a change, a stop and a restart cost as the state grows
# (issue 15's targets: <= 20 ms per attach at 1000 endpoints, SIGTERM with 1000 endpoints in
# under 2 s, restart with 1000 endpoints forwarding in under 3 s; create and attach flat from 1
# to 4096 networks). Prints one Markdown table.
#
#   sudo perf/scale.sh                              # 1000 endpoints, 4096 networks: 3-4 minutes
#                                                   # on the 2-core VM
#   sudo perf/scale.sh --endpoints 100 --networks 256   # a quick run (about 30 s)
#   sudo perf/scale.sh --no-build                   # use the binaries already built
#   sudo PROFILE=/tmp/prof perf/scale.sh            # also `perf record -a -g` (whole machine)
#                                                   # during the attaches, each SIGTERM and each
#                                                   # restart, with a text summary beside each
#   sudo VSWITCHD_ARGS="--workers 1" perf/scale.sh  # extra vswitchd options (A/B runs)
#   sudo VSWITCH_BIN=/tmp/old/release perf/scale.sh   # binaries from elsewhere (no build)
#   sudo perf/scale.sh --no-ipv6                    # IPv6 off in the namespaces (see below)
#
# What is measured (each daemon with its own --state-dir and --socket under a temporary dir):
#   create   `vswitchctl network create` per call while networks 1..NETWORKS are created (flat
#            /24s, no endpoint), the mean over 16-call windows ending at 16, N/4, N/2 and N;
#            then attach per call of 16 endpoints with those NETWORKS networks present.
#   attach   `vswitchctl attach` per call for namespaces vsscale-1..ENDPOINTS spread round-robin
#            over 4 networks (/22 each) of a fresh daemon: mean of the first 50, around the
#            middle, of the last 50, the median and the max; then create per call of 16
#            networks with ENDPOINTS endpoints present. The namespaces are created beforehand
#            (not timed). Times are the whole client call (process start, HTTP, answer);
#            the row "client floor" is a request the daemon refuses at once (no such network),
#            i.e. what a call costs with nothing done.
#   sigterm  time from `kill -TERM` to the daemon's exit, for each stop below.
#   restart  start of a daemon on the same state directory until (1) the API answers a
#            `GET /v1/networks` and (2) every endpoint forwards: a helper holds one raw ICMP
#            socket in each namespace (opened before the daemon starts) and pings the
#            endpoint's gateway, which the switch answers in its datapath, every 50 ms from
#            every namespace not yet answered; "forwarding" is the time the last namespace got
#            its first reply (so the port is registered with a worker, in the snapshot, and both
#            directions of its TAP work). Restarts, in order: plain (devices recreated), the
#            first with --live-restore (no devices left: recreated as persistent TAPs), and
#            --live-restore taking back the devices the previous one left.
#   forward  before the first stop, the same check with everything attached (a sanity check
#            that all endpoints forward, and what the check itself costs).
# By default the namespaces keep IPv6 on, as `ip netns add` makes them: each new interface sends
# router solicitations, MLD reports and DAD probes, which the switch floods to every port of the
# network, so the workers' load during the attaches grows with the endpoints. --no-ipv6 turns
# IPv6 off in each namespace first (as Docker does in containers), to tell the two apart.
#
# It creates only namespaces vsscale-1..ENDPOINTS (refusing to start if any exist), their
# /etc/netns/vsscale-N directories (written by vswitchd) and a temporary directory, and removes
# all of them and every process it started on exit, Ctrl-C and failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ENDPOINTS=1000
NETWORKS=4096
BUILD=1
IPV6=1
while [ $# -gt 0 ]; do
  a=$1; shift
  case "$a" in
    --endpoints) ENDPOINTS=${1:?--endpoints needs a number}; shift ;;
    --networks) NETWORKS=${1:?--networks needs a number}; shift ;;
    --no-build) BUILD=0 ;;
    --no-ipv6) IPV6=0 ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "scale.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$ENDPOINTS" =~ ^[0-9]+$ ]] && [ "$ENDPOINTS" -ge 1 ] && [ "$ENDPOINTS" -le 4000 ] \
  || { echo "scale.sh: --endpoints takes 1..4000, not '$ENDPOINTS'" >&2; exit 2; }
[[ "$NETWORKS" =~ ^[0-9]+$ ]] && [ "$NETWORKS" -ge 16 ] && [ "$NETWORKS" -le 4096 ] \
  || { echo "scale.sh: --networks takes 16..4096, not '$NETWORKS'" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "scale.sh: run as root (it creates namespaces and TAP devices)" >&2; exit 1; }
command -v ip >/dev/null && command -v python3 >/dev/null \
  || { echo "scale.sh: needs ip (iproute2) and python3" >&2; exit 1; }
if ip netns ls | awk '{print $1}' | grep -q '^vsscale-[0-9]*$'; then
  echo "scale.sh: namespaces vsscale-* exist (a run killed with SIGKILL?); remove them first:" >&2
  echo "  ip netns ls | awk '/^vsscale-/{print \"netns del \" \$1}' | ip -b - && rm -rf /etc/netns/vsscale-*" >&2
  exit 1
fi

if [ -n "${VSWITCH_BIN:-}" ]; then
  BIN=$VSWITCH_BIN
else
  if [ "$BUILD" = 1 ]; then cargo build --release --quiet --bin vswitchd --bin vswitchctl; fi
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
[ -x "$BIN/vswitchd" ] && [ -x "$BIN/vswitchctl" ] || { echo "scale.sh: no binaries in $BIN" >&2; exit 1; }

dir=$(mktemp -d /tmp/vsscale.XXXXXX)
sock=$dir/vswitchd.sock
made_ns=0       # namespaces vsscale-1..made_ns exist
daemon_pid=""
bg_pids=()      # the running helper and perf recorder
ev=0            # events (stops, forwarding checks) are numbered in order for the table
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${bg_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$daemon_pid" ]; then
    # SIGKILL: no waiting for an orderly stop; the devices go with the process's descriptors
    # (or, left persistent by --live-restore, with their namespaces below).
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  if [ "$made_ns" -gt 0 ]; then
    seq 1 "$made_ns" | sed 's/^/netns del vsscale-/' | ip -force -b - 2>/dev/null || true
  fi
  for n in /etc/netns/vsscale-*; do [ -d "$n" ] && rm -rf "$n"; done
  rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { echo "scale.sh: $*" >&2; }
forget() { local keep=() p; for p in "${bg_pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; bg_pids=("${keep[@]}"); }
ctl() { "$BIN/vswitchctl" --socket "$sock" "$@"; }
# vswitchd holds one descriptor per TAP queue (a queue per worker), the check one per namespace.
ulimit -n "$(ulimit -Hn)"

# --- the helper: forwarding check and statistics ---
cat >"$dir/helper.py" <<'EOF'
import ctypes, json, os, select, socket, struct, sys, threading, time

def fwd(nslist, sock_path, ready, timeout, out):
    """One raw ICMP socket per namespace, opened now; then ping each gateway every 50 ms until
    it answers, and (with a socket path) time the first answer of the API."""
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNET = 0x40000000
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    socks = []
    for line in open(nslist):
        ns, gw = line.split()
        fd = os.open("/run/netns/" + ns, os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            sys.exit("setns %s: %s" % (ns, os.strerror(ctypes.get_errno())))
        os.close(fd)
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.setblocking(False)
        socks.append((s, gw))
    libc.setns(home, CLONE_NEWNET)
    api = {}
    def poll_api():
        while "t" not in api:
            try:
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(sock_path)
                c.sendall(b"GET /v1/networks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if c.recv(12).startswith(b"HTTP/1.1 2"):
                    api["t"] = time.time()
                c.close()
            except OSError:
                pass
            if "t" not in api:
                time.sleep(0.005)
    open(ready, "w").close()
    t_start = time.time()
    if sock_path != "-":
        threading.Thread(target=poll_api, daemon=True).start()
    ep = select.epoll()
    by_fd = {}
    for i, (s, gw) in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = i
    answered = {}
    seq = 0
    next_round = 0.0
    deadline = t_start + timeout
    while len(answered) < len(socks) and time.time() < deadline:
        now = time.time()
        if now >= next_round:
            seq = (seq + 1) & 0xFFFF
            for i, (s, gw) in enumerate(socks):
                if i in answered:
                    continue
                hdr = struct.pack("!BBHHH", 8, 0, 0, i & 0xFFFF, seq) + b"vsscale!"
                csum = sum(struct.unpack("!8H", hdr))
                csum = (csum >> 16) + (csum & 0xFFFF); csum += csum >> 16
                pkt = hdr[:2] + struct.pack("!H", ~csum & 0xFFFF) + hdr[4:]
                try:
                    s.sendto(pkt, (gw, 0))
                except OSError:
                    pass  # no device or route yet
            next_round = now + 0.05
        for fd, _ in ep.poll(max(0.0, next_round - time.time())):
            i = by_fd[fd]
            s, gw = socks[i]
            while True:
                try:
                    data, (src, _) = s.recvfrom(2048)
                except BlockingIOError:
                    break
                ihl = (data[0] & 15) * 4
                if src == gw and len(data) >= ihl + 8 and data[ihl] == 0 \
                        and struct.unpack("!H", data[ihl + 4:ihl + 6])[0] == i & 0xFFFF:
                    answered.setdefault(i, time.time())
    if sock_path != "-":
        while "t" not in api and time.time() < deadline:
            time.sleep(0.01)
    r = {"start": t_start, "api": api.get("t"), "answered": len(answered), "total": len(socks),
         "first": min(answered.values()) if answered else None,
         "all": max(answered.values()) if len(answered) == len(socks) else None}
    json.dump(r, open(out, "w"))

def no_ipv6(nslist):
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    for line in open(nslist):
        fd = os.open("/run/netns/" + line.split()[0], os.O_RDONLY)
        libc.setns(fd, 0x40000000)
        os.close(fd)
        for conf in ("all", "default"):
            with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % conf, "w") as f:
                f.write("1")
    libc.setns(home, 0x40000000)

def table(d, endpoints, networks):
    def ms_list(name):
        try:
            return [float(x) for x in open(os.path.join(d, name)).read().split()]
        except FileNotFoundError:
            return []
    def mean(xs):
        return "%.1f" % (sum(xs) / len(xs)) if xs else "-"
    rows = []
    floor = ms_list("floor.ms")
    rows.append(("client floor (a refused `network inspect`)", "%s ms" % mean(floor), "mean of %d" % len(floor)))
    c = ms_list("create.ms")
    if c:
        ends = sorted({e for e in (16, networks // 4, networks // 2, networks) if e >= 16})
        cells = ["%d-%d: %s" % (e - 15, e, mean(c[e - 16:e])) for e in ends if e <= len(c)]
        rows.append(("network create, per call, at 1..%d networks (0 endpoints)" % networks,
                     cells[0].split(": ")[1] + " -> " + cells[-1].split(": ")[1] + " ms",
                     "calls " + ", ".join(cells)))
    a16 = ms_list("attach_at_networks.ms")
    if a16:
        rows.append(("attach, per call, with %d networks present" % networks, "%s ms" % mean(a16), "mean of %d" % len(a16)))
    a = ms_list("attach.ms")
    if a:
        n = len(a); mid = n // 2
        s = sorted(a)
        rows.append(("attach, per call, at 1..%d endpoints (4 networks)" % n,
                     "%s -> %s ms" % (mean(a[:50]), mean(a[-50:])),
                     "first 50 %s, %d-%d %s, last 50 %s, median %.1f, max %.1f" % (
                         mean(a[:50]), max(1, mid - 24), mid + 25, mean(a[max(0, mid - 25):mid + 25]),
                         mean(a[-50:]), s[n // 2], s[-1])))
    c16 = ms_list("create_at_endpoints.ms")
    if c16:
        rows.append(("network create, per call, with %d endpoints present" % len(a), "%s ms" % mean(c16), "mean of 16"))
    for f in sorted(os.listdir(d)):
        if f.startswith("ev") and f.endswith(".fwd.json"):
            r = json.load(open(os.path.join(d, f)))
            label = open(os.path.join(d, f[:-5] + ".label")).read().strip()
            def rel(t):
                return "%.2f s" % (t - r["t0"]) if t else "never"
            if r.get("api") is not None or "restart" in label:
                rows.append((label + ": API answers", rel(r.get("api")), ""))
            rows.append((label + ": every endpoint forwards", rel(r["all"]),
                         "%d/%d answered, first after %s" % (r["answered"], r["total"], rel(r["first"]))))
        if f.startswith("ev") and f.endswith(".stop.s"):
            label = open(os.path.join(d, f[:-2] + ".label")).read().strip()
            rows.append((label, "%.2f s" % float(open(os.path.join(d, f)).read()), ""))
    print("| measurement | result | detail |")
    print("|---|---:|---|")
    for r in rows:
        print("| %s | %s | %s |" % r)

if sys.argv[1] == "fwd":
    fwd(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), sys.argv[6])
elif sys.argv[1] == "no-ipv6":
    no_ipv6(sys.argv[2])
elif sys.argv[1] == "table":
    table(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
EOF

# --- profiling (PROFILE=dir) ---
prec=""; pout=""
profile_start() { # name
  [ -n "${PROFILE:-}" ] || return 0
  command -v perf >/dev/null || { log "PROFILE needs perf (apt-get install linux-perf)"; exit 1; }
  mkdir -p "$PROFILE"
  pout="$PROFILE/$1"
  perf record -q -a -g -F 499 -o "$pout.data" >/dev/null 2>&1 & prec=$!
  bg_pids+=("$prec")
  sleep 0.5   # perf takes a moment to start sampling
}
profile_end() { # vswitchd's pid
  [ -n "$prec" ] || return 0
  kill -INT "$prec" 2>/dev/null || true; wait "$prec" 2>/dev/null || true
  forget "$prec"; prec=""
  { echo "## CPU share per task (all samples, both cores)"
    perf report -i "$pout.data" --stdio --no-children --sort comm -g none 2>/dev/null | awk '/^ +[0-9]/ && n++ < 12'
    echo; echo "## hottest symbols (self time, all tasks)"
    perf report -i "$pout.data" --stdio --no-children --sort comm,sym -g none 2>/dev/null | awk '/^ +[0-9]/ && n++ < 40'
    echo; echo "## vswitchd's threads, inclusive time (with children)"
    perf report -i "$pout.data" --stdio --children --pid "$1" --sort sym -g none 2>/dev/null | awk '/^ +[0-9]/ && n++ < 40'
  } >"$pout.txt"
}

# --- the daemon ---
start_daemon() { # state-dir-name [extra options...]
  local state=$dir/$1; shift
  # shellcheck disable=SC2206 # VSWITCHD_ARGS: extra daemon options, split on spaces
  "$BIN/vswitchd" --socket "$sock" --state-dir "$state" ${VSWITCHD_ARGS:-} "$@" 2>>"$dir/vswitchd.log" &
  daemon_pid=$!
}
wait_api() { # until the API answers and the saved state is restored (changes wait for that)
  for _ in $(seq 6000); do
    ctl --json status 2>/dev/null | grep -q '"restoring": *false' && return
    kill -0 "$daemon_pid" 2>/dev/null || { log "vswitchd exited: $(tail -3 "$dir/vswitchd.log")"; exit 1; }
    sleep 0.05
  done
  log "vswitchd does not answer: $(tail -3 "$dir/vswitchd.log")"; exit 1
}
stop_daemon() { # label
  local t0 t1 name pid=$daemon_pid
  name=ev$(printf %02d $ev).stop; ev=$((ev + 1))
  profile_start "$name"
  t0=$EPOCHREALTIME
  kill -TERM "$daemon_pid"
  wait "$daemon_pid" || { log "vswitchd exited with an error on SIGTERM: $(tail -3 "$dir/vswitchd.log")"; exit 1; }
  t1=$EPOCHREALTIME
  profile_end "$pid"
  daemon_pid=""
  python3 -c "print('%.3f' % ($t1 - $t0))" >"$dir/$name.s"
  echo "$1" >"$dir/$name.label"
  log "$1: $(cat "$dir/$name.s") s"
}
# Time `vswitchctl ARGS...` into FILE (milliseconds, one a line); the call must succeed.
timed() { # file args...
  local f=$1 t0 t1; shift
  t0=$EPOCHREALTIME
  ctl "$@" >/dev/null || { log "vswitchctl $* failed"; exit 1; }
  t1=$EPOCHREALTIME
  echo "$(( (${t1/./} - ${t0/./}) ))" | awk '{printf "%.3f\n", $1 / 1000}' >>"$f"
}
# Ping every endpoint's gateway from its namespace (see the top) while something happens:
# run_fwd LABEL TIMEOUT COMMAND... runs COMMAND once the sockets are open and records its start.
run_fwd() { # label timeout with-api(1|0) command...
  local label=$1 timeout=$2 api=$3 name t0; shift 3
  name=ev$(printf %02d $ev).fwd; ev=$((ev + 1))
  rm -f "$dir/ready"
  python3 "$dir/helper.py" fwd "$dir/nslist" "$([ "$api" = 1 ] && echo "$sock" || echo -)" \
    "$dir/ready" "$timeout" "$dir/$name.raw" & local hp=$!
  bg_pids+=("$hp")
  while [ ! -e "$dir/ready" ]; do
    kill -0 "$hp" 2>/dev/null || { log "forwarding check failed to start"; exit 1; }
    sleep 0.05
  done
  profile_start "$name"
  t0=$EPOCHREALTIME
  "$@"
  wait "$hp" || { log "forwarding check failed"; exit 1; }
  forget "$hp"
  profile_end "$daemon_pid"
  # With nothing started (a check of the running daemon), times count from the first ping.
  [ "$api" = 1 ] || t0=0
  python3 -c "import json; r = json.load(open('$dir/$name.raw')); r['t0'] = $t0 or r['start']; json.dump(r, open('$dir/$name.json', 'w'))"
  echo "$label" >"$dir/$name.label"
  log "$label: $(python3 -c "import json; r = json.load(open('$dir/$name.json')); f = lambda t: '%.2f s' % (t - r['t0']) if t else 'never'; print('API', f(r['api']), '/ all forwarding', f(r['all']), '(%d/%d)' % (r['answered'], r['total']))")"
}

# --- namespaces (not timed) ---
log "creating $ENDPOINTS namespaces"
made_ns=$ENDPOINTS   # set first: a failure half way still removes what was made
seq 1 "$ENDPOINTS" | sed 's/^/netns add vsscale-/' | ip -b -
# Endpoint i is on network s$((i % 4)) (10.200.0.0/20 cut into four /22s), address given in order.
: >"$dir/nslist"
for i in $(seq 1 "$ENDPOINTS"); do
  echo "vsscale-$i 10.200.$(( (i % 4) * 4 )).1" >>"$dir/nslist"
done
if [ "$IPV6" = 0 ]; then python3 "$dir/helper.py" no-ipv6 "$dir/nslist"; fi

# --- 1. network create at 1..NETWORKS networks, then attach with them present ---
log "daemon 1: creating $NETWORKS networks"
start_daemon s1
wait_api
for _ in $(seq 20); do ctl network inspect no-such-network >/dev/null 2>&1 || true; done
for _ in $(seq 20); do
  t0=$EPOCHREALTIME; ctl network inspect no-such-network >/dev/null 2>&1 || true; t1=$EPOCHREALTIME
  echo "$(( ${t1/./} - ${t0/./} ))" | awk '{printf "%.3f\n", $1 / 1000}' >>"$dir/floor.ms"
done
for i in $(seq 0 $((NETWORKS - 1))); do
  timed "$dir/create.ms" network create "n$i" --subnet "10.$((64 + i / 256)).$((i % 256)).0/24"
done
few=$(( ENDPOINTS < 16 ? ENDPOINTS : 16 ))
for i in $(seq 1 "$few"); do
  timed "$dir/attach_at_networks.ms" attach "vsscale-$i" n0
done
stop_daemon "SIGTERM with $few endpoints and $NETWORKS networks"

# --- 2. attach 1..ENDPOINTS, then create with them present ---
log "daemon 2: attaching $ENDPOINTS endpoints"
start_daemon s2
wait_api
for k in 0 1 2 3; do ctl network create "s$k" --subnet "10.200.$((k * 4)).0/22" >/dev/null; done
profile_start attach
for i in $(seq 1 "$ENDPOINTS"); do
  timed "$dir/attach.ms" attach "vsscale-$i" "s$((i % 4))"
  if [ $((i % 100)) = 0 ]; then log "  $i attached"; fi
done
profile_end "$daemon_pid"
for i in $(seq 0 15); do
  timed "$dir/create_at_endpoints.ms" network create "x$i" --subnet "10.210.$i.0/24"
done
run_fwd "steady state ($ENDPOINTS endpoints attached)" 30 0 true
stop_daemon "SIGTERM with $ENDPOINTS endpoints"
if ip -n vsscale-1 link show eth0 >/dev/null 2>&1; then
  log "vswitchd left eth0 in vsscale-1 after a plain stop"; exit 1
fi

# --- 3. restarts ---
log "restarts with $ENDPOINTS endpoints"
run_fwd "restart" 600 1 start_daemon s2
stop_daemon "SIGTERM with $ENDPOINTS endpoints (after a restart)"
run_fwd "restart with --live-restore, no devices left" 600 1 start_daemon s2 --live-restore
stop_daemon "SIGTERM with $ENDPOINTS endpoints, --live-restore (devices kept)"
run_fwd "restart with --live-restore, taking the devices back" 600 1 start_daemon s2 --live-restore
stop_daemon "SIGTERM with $ENDPOINTS endpoints, --live-restore (after taking them back)"

# --- the table ---
echo
echo "vswitch scale benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r), $ENDPOINTS endpoints, $NETWORKS networks, IPv6 $([ "$IPV6" = 1 ] && echo on || echo off) in the namespaces, binaries $BIN${VSWITCHD_ARGS:+, options $VSWITCHD_ARGS}"
echo
python3 "$dir/helper.py" table "$dir" "$ENDPOINTS" "$NETWORKS"
