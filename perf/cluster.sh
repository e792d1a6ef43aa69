#!/usr/bin/env bash
# vswitch cluster benchmark (issue 16's scale check): how fast an endpoint attached on one host
# becomes known on every other host, and what each endpoint costs in etcd and in vswitchd.
# Prints the command line and one Markdown table.
#
#   sudo perf/cluster.sh                          # 10 hosts x 50 endpoints (500): a few minutes
#                                                 # on the 2-core VM
#   sudo perf/cluster.sh --hosts 3 --per-host 5   # a quick run (about 15 s)
#   sudo perf/cluster.sh --no-build               # use the binaries already built
#   sudo VSWITCH_BIN=/tmp/old/release perf/cluster.sh   # binaries from elsewhere (no build)
#   sudo VSWITCHD_ARGS="--api-idle-timeout 5" perf/cluster.sh   # extra vswitchd options
#
# The lab (as tests/cluster.rs builds it): an underlay namespace vsclus-u with a bridge br0, one
# etcd member (Debian's /usr/bin/etcd, data on /tmp, fsync on) on 10.240.0.254 of br0, and
# HOSTS + 1 host namespaces vsclus-hN joined to br0 by veths (10.240.0.N), each running
# `vswitchd --cluster etcd://10.240.0.254:2379 --node hN --underlay-ip 10.240.0.N
# --cluster-ttl 2 --workers 1` (one worker, so a dozen daemons share 2 cores). Hosts h1..HOSTS
# get PER_HOST endpoints each; the last host is an *observer* with none. The endpoint namespaces
# vsclus-e1..E are created beforehand, with IPv6 off (so no router solicitations or DAD probes
# are sent and flooded while the endpoints come up: the directory alone fills the FDBs).
# The timing-critical part is a Python helper that talks HTTP/JSON to the daemons' Unix sockets
# directly, on kept-alive connections (no vswitchctl process per call).
#
# What is measured:
#   create   `network create ov --subnet 10.60.0.0/16 --overlay` (POST /v1/networks) on h1:
#            the call, then the time from its answer until each other host (observer included)
#            answers GET /v1/networks/ov.
#   attach   POST /v1/endpoints for vsclus-e1..E, one at a time, round-robin over h1..HOSTS; the
#            call time. The next attach starts once every other host knows the previous one.
#   propagation  from each attach's answer until each other endpoint host's FDB
#            (GET /v1/fdb?network=ov) holds the endpoint's MAC as a remote entry (non-null
#            "vtep"): one thread per host polls every 3 ms plus the request's own time (its mean
#            is in the table: the resolution). Per (attach, host), and until ALL other endpoint
#            hosts know it. The observer is not polled (its memory is measured below).
#            vswitchd writes etcd before it answers, so a host may know an endpoint before the
#            attach call returns: such a host counts as the time of its first poll.
#   etcd     after the attaches, `etcdctl get --prefix /vswitch/`: keys under addrs/ and
#            endpoints/, and their key + value bytes, per endpoint.
#   events   `etcdctl watch --prefix /vswitch/` from the revision before the first attach until
#            after the last: PUT/DELETE events per attach, by key kind, and etcd revisions (write
#            transactions) per attach. Lease keepalives are not events.
#   memory   VmRSS of the observer's vswitchd with the network created and nothing attached, and
#            again once its FDB holds all E endpoints (all remote to it): the difference per
#            remote endpoint. h1's VmRSS (PER_HOST local endpoints, the rest remote) beside it.
#
# It creates only namespaces vsclus-* (refusing to start if any exist), the /etc/netns/vsclus-*
# directories vswitchd writes and a temporary directory, and removes all of them and every
# process it started on exit, Ctrl-C and failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cmdline=$(printf '%q ' "$0" "$@"); cmdline=${cmdline% }
HOSTS=10
PER_HOST=50
BUILD=1
while [ $# -gt 0 ]; do
  a=$1; shift
  case "$a" in
    --hosts) HOSTS=${1:?--hosts needs a number}; shift ;;
    --per-host) PER_HOST=${1:?--per-host needs a number}; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "cluster.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done
[[ "$HOSTS" =~ ^[0-9]+$ ]] && [ "$HOSTS" -ge 2 ] && [ "$HOSTS" -le 100 ] \
  || { echo "cluster.sh: --hosts takes 2..100, not '$HOSTS'" >&2; exit 2; }
[[ "$PER_HOST" =~ ^[0-9]+$ ]] && [ "$PER_HOST" -ge 1 ] && [ "$PER_HOST" -le 1000 ] \
  || { echo "cluster.sh: --per-host takes 1..1000, not '$PER_HOST'" >&2; exit 2; }
ENDPOINTS=$((HOSTS * PER_HOST))
[ "$ENDPOINTS" -le 4000 ] || { echo "cluster.sh: at most 4000 endpoints in all, not $ENDPOINTS" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "cluster.sh: run as root (it creates namespaces and TAP devices)" >&2; exit 1; }
for c in ip python3 etcd etcdctl; do
  command -v "$c" >/dev/null || { echo "cluster.sh: needs $c (etcd and etcdctl: apt-get install etcd-server etcd-client)" >&2; exit 1; }
done
if ip netns ls | awk '{print $1}' | grep -q '^vsclus-'; then
  echo "cluster.sh: namespaces vsclus-* exist (a run killed with SIGKILL?); remove them first:" >&2
  echo "  ip netns ls | awk '/^vsclus-/{print \"netns del \" \$1}' | ip -b - && rm -rf /etc/netns/vsclus-*" >&2
  exit 1
fi

if [ -n "${VSWITCH_BIN:-}" ]; then
  BIN=$VSWITCH_BIN
else
  if [ "$BUILD" = 1 ]; then cargo build --release --quiet --bin vswitchd --bin vswitchctl; fi
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
[ -x "$BIN/vswitchd" ] && [ -x "$BIN/vswitchctl" ] || { echo "cluster.sh: no binaries in $BIN" >&2; exit 1; }

NODES=$((HOSTS + 1))   # the endpoint hosts and the observer
OBS=$NODES
ETCD_IP=10.240.0.254
ETCD_EP=http://$ETCD_IP:2379
dir=$(mktemp -d /tmp/vsclus.XXXXXX)
made_ns=()      # namespaces made so far (hosts and underlay; endpoints in made_ep)
made_ep=0       # endpoint namespaces vsclus-e1..made_ep exist
daemons=()      # vswitchd pid of host N at index N-1
etcd_pid=""
watch_pid=""    # `etcdctl watch` during the attaches
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  # SIGKILL: nothing here needs an orderly stop; devices go with the processes and namespaces.
  for p in "${daemons[@]}" $etcd_pid $watch_pid; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${daemons[@]}" $etcd_pid $watch_pid; do wait "$p" 2>/dev/null || true; done
  if [ "$made_ep" -gt 0 ]; then
    seq 1 "$made_ep" | sed 's/^/netns del vsclus-e/' | ip -force -b - 2>/dev/null || true
  fi
  for p in "${made_ns[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  for p in /etc/netns/vsclus-*; do [ -d "$p" ] && rm -rf "$p"; done
  rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log() { echo "cluster.sh: $*" >&2; }
etcdctl_u() { ip netns exec vsclus-u env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EP" --dial-timeout 2s "$@"; }
sock() { echo "$dir/h$1/vswitchd.sock"; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
# vswitchd holds one descriptor per TAP; the helper one connection per host.
ulimit -n "$(ulimit -Hn)"

# --- the helper: HTTP over the daemons' sockets, timing, statistics ---
cat >"$dir/helper.py" <<'EOF'
import ctypes, http.client, json, math, os, socket, sys, threading, time

POLL = 0.003        # pause between two polls of one host
NETWORK = "ov"
polls = []          # duration of every propagation poll (the measurement's resolution)

class Api(http.client.HTTPConnection):
    """HTTP/1.1 on a vswitchd's Unix socket, the connection kept alive between calls."""
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.unix = path
    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix)
        self.sock = s
    def call(self, method, url, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data else {}
        for last in (False, True):
            try:
                self.request(method, url, body=data, headers=headers)
                r = self.getresponse()
                return r.status, r.read()
            except (ConnectionError, http.client.HTTPException):
                # The daemon closed the connection while it was idle: once more on a new one.
                self.close()
                if last:
                    raise

def until_all(conns, check, t0, timeout, tries=None):
    """Poll each connection (a thread each) until check(conn) holds: the seconds from t0 at
    which it did, per connection (None: not within timeout). With a list tries, the polls
    each connection took are added to it."""
    out = [None] * len(conns)
    def run(i, c):
        n = 0
        while True:
            n += 1
            if check(c):
                out[i] = time.time() - t0
                if tries is not None:
                    tries.append(n)
                return
            if time.time() - t0 > timeout:
                return
            time.sleep(POLL)
    ts = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out

def remote_entries(c):
    st, body = c.call("GET", "/v1/fdb?network=" + NETWORK)
    return [e for e in json.loads(body) if e.get("vtep")] if st == 200 else []

def up(nodes, timeout, socks):
    """Wait until every daemon answers and sees all nodes up (remote FDB entries are only
    installed for endpoints of nodes a host sees)."""
    def ok(c):
        try:
            st, body = c.call("GET", "/v1/cluster")
        except OSError:
            return False  # not listening yet
        return st == 200 and sum(n["state"] == "up" for n in json.loads(body)["nodes"]) == nodes
    conns = [Api(s) for s in socks]
    t = until_all(conns, ok, time.time(), timeout)
    if None in t:
        sys.exit("cluster.sh: hosts %s do not see %d nodes up within %d s"
                 % ([i + 1 for i, x in enumerate(t) if x is None], nodes, timeout))

def create(out, subnet, creator, others):
    c = Api(creator)
    req = {"name": NETWORK, "subnet": subnet, "overlay": True}
    t0 = time.time()
    st, body = c.call("POST", "/v1/networks", req)
    t1 = time.time()
    if st // 100 != 2:
        sys.exit("cluster.sh: network create: %d %s" % (st, body.decode()))
    conns = [Api(s) for s in others]
    seen = until_all(conns, lambda c: c.call("GET", "/v1/networks/" + NETWORK)[0] == 200, t1, 10)
    json.dump({"call": t1 - t0, "hosts": seen}, open(out, "w"))

def attach(out, plan, socks):
    """Attach each (namespace, host) of plan in order; after each, poll the other endpoint
    hosts until all of them have the endpoint's MAC as a remote FDB entry."""
    conns = [Api(s) for s in socks]
    rows = []
    tries = []          # polls each (attach, host) took until the host knew the endpoint
    todo = [l.split() for l in open(plan)]
    for k, (ns, h) in enumerate(todo, 1):
        h = int(h)
        t0 = time.time()
        st, body = conns[h].call("POST", "/v1/endpoints", {"netns": ns, "network": NETWORK})
        t1 = time.time()
        if st // 100 != 2:
            sys.exit("cluster.sh: attach %s on h%d: %d %s" % (ns, h + 1, st, body.decode()))
        mac = json.loads(body)["mac"]
        needle = ('"%s"' % mac).encode()
        def known(c):
            p0 = time.time()
            st, body = c.call("GET", "/v1/fdb?network=" + NETWORK)
            polls.append(time.time() - p0)
            # A cheap look for the MAC first; the JSON is read only when it is there.
            return st == 200 and needle in body \
                and any(e["mac"] == mac and e.get("vtep") for e in json.loads(body))
        others = [c for i, c in enumerate(conns) if i != h]
        lat = until_all(others, known, t1, 10, tries)
        if None in lat:
            print("cluster.sh: %s (on h%d) unknown to %d hosts after 10 s"
                  % (ns, h + 1, lat.count(None)), file=sys.stderr)
        rows.append({"host": h, "call": t1 - t0, "lat": lat})
        if k % 50 == 0:
            print("cluster.sh:   %d attached" % k, file=sys.stderr)
    json.dump({"attaches": rows, "polls": polls, "tries": tries}, open(out, "w"))

def wait_fdb(sock, count, timeout):
    """Wait until the daemon's FDB holds count remote entries; print the seconds it took."""
    c = Api(sock)
    t = until_all([c], lambda c: len(remote_entries(c)) >= count, time.time(), timeout)[0]
    if t is None:
        sys.exit("cluster.sh: %s has %d remote entries after %d s, not %d"
                 % (sock, len(remote_entries(c)), timeout, count))
    print("%.3f" % t)

def no_ipv6(nslist):
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    for ns in open(nslist).read().split():
        fd = os.open("/run/netns/" + ns, os.O_RDONLY)
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            sys.exit("setns %s: %s" % (ns, os.strerror(ctypes.get_errno())))
        os.close(fd)
        for conf in ("all", "default"):
            with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % conf, "w") as f:
                f.write("1")
    libc.setns(home, 0x40000000)

def revision(path):
    print(json.load(open(path))["header"]["revision"])

def table(d, hosts, per_host):
    import base64
    endpoints = hosts * per_host
    def pct(xs, p):
        s = sorted(xs)
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]
    def ms(x):
        return "%.1f" % (x * 1000)
    def spread(xs):
        return "%s / %s / %s ms" % (ms(pct(xs, 0.5)), ms(pct(xs, 0.99)), ms(max(xs)))
    rows = []

    c = json.load(open(os.path.join(d, "create.json")))
    rows.append(("`network create --overlay` on h1, the call", "%s ms" % ms(c["call"]), ""))
    seen = [x for x in c["hosts"] if x is not None]
    rows.append(("... until the network is on every other host (%d)" % len(c["hosts"]),
                 "%s ms" % ms(max(seen)) if len(seen) == len(c["hosts"]) else "never",
                 "per host p50 %s ms; %d of %d within 10 s" % (
                     ms(pct(seen, 0.5)) if seen else "-", len(seen), len(c["hosts"]))))

    a = json.load(open(os.path.join(d, "attach.json")))
    rows_a = a["attaches"]
    calls = [r["call"] for r in rows_a]
    rows.append(("attach (POST /v1/endpoints), the call: p50 / p99 / max", spread(calls),
                 "%d attaches, one at a time, round-robin over %d hosts" % (len(calls), hosts)))
    one = [x for r in rows_a for x in r["lat"] if x is not None]
    missed = sum(x is None for r in rows_a for x in r["lat"])
    rows.append(("propagation to one other host: p50 / p99 / max", spread(one),
                 "%d (attach, host) pairs, from the attach's answer until the host's FDB has "
                 "the MAC as a remote entry; known at the first poll: %d (their time is one "
                 "request's, an upper bound)%s" % (len(one) + missed, a["tries"].count(1),
                                        "; %d never (10 s)" % missed if missed else "")))
    every = [max(r["lat"]) for r in rows_a if None not in r["lat"]]
    rows.append(("propagation to all %d other hosts: p50 / p99 / max" % (hosts - 1),
                 spread(every) if every else "never",
                 "%d attaches" % len(rows_a)))
    p = a["polls"]
    rows.append(("one FDB poll (GET /v1/fdb, %d MACs at the end), the request" % endpoints,
                 "%s ms mean" % ms(sum(p) / len(p)) if p else "-",
                 "%d polls; a host is polled every %.0f ms plus this: the resolution" % (
                     len(p), POLL * 1000)))

    kvs = json.load(open(os.path.join(d, "keys.json"))).get("kvs", [])
    kinds = {}
    for kv in kvs:
        key = base64.b64decode(kv["key"]).decode()
        kind = key[len("/vswitch/"):].split("/")[0]
        n, b = kinds.get(kind, (0, 0))
        kinds[kind] = (n + 1, b + len(key) + len(base64.b64decode(kv.get("value", ""))))
    per_ep = [kinds.get(k, (0, 0)) for k in ("addrs", "endpoints")]
    rows.append(("etcd keys per endpoint (addrs/ + endpoints/)",
                 "%.2f" % (sum(n for n, _ in per_ep) / endpoints),
                 "addrs %d, endpoints %d; all keys under /vswitch/: %d (%s)" % (
                     per_ep[0][0], per_ep[1][0], len(kvs),
                     ", ".join("%s %d" % (k, n) for k, (n, _) in sorted(kinds.items())))))
    rows.append(("etcd bytes per endpoint (key + value)",
                 "%.0f B" % (sum(b for _, b in per_ep) / endpoints),
                 "addrs %.0f B, endpoints %.0f B per endpoint" % (
                     per_ep[0][1] / endpoints, per_ep[1][1] / endpoints)))

    events, kind = {}, {}
    lines = open(os.path.join(d, "watch.out")).read().split("\n")
    for i, line in enumerate(lines):
        if line in ("PUT", "DELETE") and i + 1 < len(lines):
            events[line] = events.get(line, 0) + 1
            k = lines[i + 1][len("/vswitch/"):].split("/")[0]
            kind[k] = kind.get(k, 0) + 1
    revs = [int(x) for x in open(os.path.join(d, "revs.txt")).read().split()]
    rows.append(("etcd watch events per attach", "%.2f" % (sum(events.values()) / endpoints),
                 "%s; by key: %s; etcd revisions (write transactions) per attach %.2f" % (
                     ", ".join("%s %d" % e for e in sorted(events.items())) or "none",
                     ", ".join("%s %d" % e for e in sorted(kind.items())) or "none",
                     (revs[1] - revs[0]) / endpoints)))

    rss = dict(l.split() for l in open(os.path.join(d, "rss.txt")))
    rss = {k: int(v) for k, v in rss.items()}
    rows.append(("vswitchd memory per remote endpoint (observer, VmRSS)",
                 "%.1f KiB" % ((rss["obs_after"] - rss["obs_before"]) / endpoints),
                 "%.2f MiB with the network and nothing attached, %.2f MiB with %d remote "
                 "endpoints" % (rss["obs_before"] / 1024, rss["obs_after"] / 1024, endpoints)))
    rows.append(("vswitchd VmRSS of h1 (%d local, %d remote endpoints)" % (
                     per_host, endpoints - per_host),
                 "%.2f -> %.2f MiB" % (rss["h1_before"] / 1024, rss["h1_after"] / 1024),
                 "+%.1f KiB per endpoint" % ((rss["h1_after"] - rss["h1_before"]) / endpoints)))
    print("| measurement | result | detail |")
    print("|---|---:|---|")
    for r in rows:
        print("| %s | %s | %s |" % r)

cmd = sys.argv[1]
if cmd == "up":
    up(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
elif cmd == "create":
    create(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
elif cmd == "attach":
    attach(sys.argv[2], sys.argv[3], sys.argv[4:])
elif cmd == "wait-fdb":
    wait_fdb(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
elif cmd == "no-ipv6":
    no_ipv6(sys.argv[2])
elif cmd == "revision":
    revision(sys.argv[2])
elif cmd == "table":
    table(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
EOF
py() { python3 "$dir/helper.py" "$@"; }

# --- the lab (not timed) ---
log "building the underlay: etcd and $NODES hosts (the last one the observer)"
made_ns+=(vsclus-u)
ip netns add vsclus-u
ip -n vsclus-u link set lo up
ip -n vsclus-u link add br0 type bridge
ip -n vsclus-u addr add "$ETCD_IP/24" dev br0
ip -n vsclus-u link set br0 up
for i in $(seq 1 "$NODES"); do
  made_ns+=("vsclus-h$i")
  ip netns add "vsclus-h$i"
  ip -n "vsclus-h$i" link set lo up
  ip link add ul0 netns "vsclus-h$i" type veth peer name "p$i" netns vsclus-u
  ip -n vsclus-u link set "p$i" master br0 up
  ip -n "vsclus-h$i" addr add "10.240.0.$i/24" dev ul0
  ip -n "vsclus-h$i" link set ul0 up
done
ip netns exec vsclus-u etcd --name m0 --data-dir "$dir/etcd" \
  --listen-client-urls "$ETCD_EP" --advertise-client-urls "$ETCD_EP" \
  --listen-peer-urls "http://$ETCD_IP:2380" --initial-advertise-peer-urls "http://$ETCD_IP:2380" \
  --initial-cluster "m0=http://$ETCD_IP:2380" >/dev/null 2>"$dir/etcd.log" &
etcd_pid=$!
for _ in $(seq 200); do etcdctl_u endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
etcdctl_u endpoint health >/dev/null 2>&1 || { log "etcd does not answer: $(tail -3 "$dir/etcd.log")"; exit 1; }

log "creating $ENDPOINTS endpoint namespaces"
made_ep=$ENDPOINTS   # set first: a failure half way still removes what was made
seq 1 "$ENDPOINTS" | sed 's/^/netns add vsclus-e/' | ip -b -
seq 1 "$ENDPOINTS" | sed 's/^/vsclus-e/' >"$dir/nslist"
py no-ipv6 "$dir/nslist"
# Endpoint k goes to host ((k - 1) % HOSTS) + 1 (0-based in the plan).
seq 1 "$ENDPOINTS" | awk -v h="$HOSTS" '{print "vsclus-e" $1, ($1 - 1) % h}' >"$dir/plan"

for i in $(seq 1 "$NODES"); do
  mkdir -p "$dir/h$i"
  # shellcheck disable=SC2206 # VSWITCHD_ARGS: extra daemon options, split on spaces
  ip netns exec "vsclus-h$i" "$BIN/vswitchd" --socket "$(sock "$i")" --state-dir "$dir/h$i/state" \
    --workers 1 --cluster "etcd://$ETCD_IP:2379" --node "h$i" --underlay-ip "10.240.0.$i" \
    --cluster-ttl 2 ${VSWITCHD_ARGS:-} 2>"$dir/h$i/vswitchd.log" &
  daemons+=($!)   # `ip netns exec` execs vswitchd in place: this is the daemon's pid
done
socks=()
for i in $(seq 1 "$NODES"); do socks+=("$(sock "$i")"); done
py up "$NODES" 30 "${socks[@]}" || { log "h1's log: $(tail -3 "$dir/h1/vswitchd.log")"; exit 1; }

# --- create, then the attaches ---
log "network create --overlay on h1"
py create "$dir/create.json" 10.60.0.0/16 "${socks[0]}" "${socks[@]:1}"
# The observer's baseline: the network made, nothing attached (one FDB read, as after).
py wait-fdb "${socks[OBS - 1]}" 0 5 >/dev/null
sleep 1
: >"$dir/rss.txt"
echo "obs_before $(rss_kib "${daemons[OBS - 1]}")" >>"$dir/rss.txt"
echo "h1_before $(rss_kib "${daemons[0]}")" >>"$dir/rss.txt"

etcdctl_u get --prefix /vswitch/ --keys-only -w json >"$dir/rev0.json"
rev0=$(py revision "$dir/rev0.json")
# From the next revision on, whenever the watch itself starts.
# exec: $! is etcdctl itself (a backgrounded function would leave it behind when killed).
(exec ip netns exec vsclus-u env ETCDCTL_API=3 etcdctl --endpoints "$ETCD_EP" --dial-timeout 2s \
  watch --prefix /vswitch/ --rev $((rev0 + 1)) >"$dir/watch.out" 2>"$dir/watch.err") &
watch_pid=$!

log "attaching $ENDPOINTS endpoints over $HOSTS hosts"
py attach "$dir/attach.json" "$dir/plan" "${socks[@]:0:HOSTS}"
log "observer: all $ENDPOINTS remote endpoints after $(py wait-fdb "${socks[OBS - 1]}" "$ENDPOINTS" 30) s more"
sleep 1
echo "obs_after $(rss_kib "${daemons[OBS - 1]}")" >>"$dir/rss.txt"
echo "h1_after $(rss_kib "${daemons[0]}")" >>"$dir/rss.txt"

etcdctl_u get --prefix /vswitch/ -w json >"$dir/keys.json"
echo "$rev0 $(py revision "$dir/keys.json")" >"$dir/revs.txt"
kill -TERM "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
watch_pid=""

# --- the table ---
echo
echo "\$ ${VSWITCH_BIN:+VSWITCH_BIN=$VSWITCH_BIN }${VSWITCHD_ARGS:+VSWITCHD_ARGS=\"$VSWITCHD_ARGS\" }$cmdline"
echo
echo "vswitch cluster benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r), $HOSTS hosts x $PER_HOST endpoints + 1 observer, etcd $(etcd --version | awk '/^etcd Version/{print $3}') (1 member), binaries $BIN${VSWITCHD_ARGS:+, options $VSWITCHD_ARGS}"
echo
py table "$dir" "$HOSTS" "$PER_HOST"
