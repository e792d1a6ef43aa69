#!/usr/bin/env bash
# vswitch benchmark: every path through vswitchd beside the kernel's way of doing the same thing,
# measured in one run on this machine, printed as one Markdown table.
#
#   sudo perf/bench.sh            # T=5 seconds per measurement; about 5 minutes in all
#   sudo T=10 perf/bench.sh       # longer runs
#   sudo perf/bench.sh --no-ovs   # skip Open vSwitch even when it is installed
#   sudo perf/bench.sh --only overlay    # one group: l2, ipv6, nat, overlay or ovs (comma-separated)
#   sudo PROFILE=/tmp/prof perf/bench.sh # also `perf record -a` (the whole machine) during the
#                                          # 1-stream TCP and the UDP test of every row, kernel rows
#                                          # too, with a text summary beside each profile
#   sudo VSWITCHD_ARGS="--tap-queues 1" perf/bench.sh   # extra vswitchd options (A/B runs)
#
# Rows: L2 between two namespaces (vswitchd vs a Linux bridge; IPv4 and IPv6), NAT egress and a published port
# (vswitchd vs a Linux bridge + iptables MASQUERADE/DNAT), NAT66 egress (group ipv6: vswitchd vs a
# bridge + ip6tables MASQUERADE), VXLAN overlay between two host namespaces, IPv4 and IPv6
# (vswitchd vs kernel vxlan + bridge), and Open vSwitch's userspace datapath on TAP
# ports with and without userspace TSO (when installed). Columns: iperf3 TCP with 1 and 4
# streams, iperf3 UDP with 64-byte payloads (received packets/s), sockperf UDP round trip, and the
# ratio of the vswitchd row to the kernel row of the same path.
#
# It builds the release binaries, installs missing tools with apt-get, creates only namespaces
# named vb<pid>* (and an OVS instance under a temporary directory), and removes them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-5}
OVS=1
ONLY=l2,ipv6,nat,overlay,ovs
while [ $# -gt 0 ]; do
  a=$1; shift
  case "$a" in
    --no-ovs) OVS=0 ;;
    --only) ONLY=${1:?--only needs a group list}; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$a' (try --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root (it creates namespaces and TAP devices)" >&2; exit 1; }

need=()
for t in ip:iproute2 iperf3:iperf3 sockperf:sockperf iptables:iptables ip6tables:iptables python3:python3 bridge:iproute2; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ "$OVS" = 1 ] && ! command -v ovs-vswitchd >/dev/null 2>&1; then need+=(openvswitch-switch); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "bench.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || { echo "bench.sh: could not install ${need[*]}" >&2; exit 1; }
fi
cargo build --release --quiet --bin vswitchd --bin vswitchctl
BIN=$PWD/target/release

tag=vb$$
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ovs_stop
  for n in $(ip netns ls | awk '{print $1}' | grep "^$tag" || true); do
    ip netns pids "$n" | xargs -r kill 2>/dev/null || true
    ip netns del "$n"
  done
  # vswitchd writes /etc/netns/NS/resolv.conf for attached namespaces; a daemon that died
  # before its own cleanup leaves them.
  for n in /etc/netns/"$tag"*; do [ -d "$n" ] && rm -rf "$n"; done
  rm -rf "$dir"
}
ovs_stop() {
  [ -S "$dir/ovs/db.sock" ] && ovs-vsctl --db="unix:$dir/ovs/db.sock" --timeout=5 --if-exists del-br obr 2>/dev/null || true
  for f in "$dir"/ovs/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.2
  # The netdev datapath's own TAP outlives the daemon; remove it unless it was there before us.
  if [ "${had_ovs_netdev:-1}" = 0 ]; then ip link del ovs-netdev 2>/dev/null || true; fi
  rm -rf "$dir/ovs"
  return 0
}
had_ovs_netdev=0; ip link show ovs-netdev >/dev/null 2>&1 && had_ovs_netdev=1
trap cleanup EXIT
log() { echo "bench.sh: $*" >&2; }
ns() { ip netns add "$tag$1"; ip -n "$tag$1" link set lo up; }
nx() { local n=$1; shift; ip netns exec "$tag$n" "$@"; }

# --- measurements: client namespace, server namespace, address the client dials, server bind ---
rows=()
notes=() # rows that could not be measured on this machine, printed under the table
measure() { # name kernel-row-name cns sns dial bind
  local name=$1 ref=$2 c=$3 s=$4 dial=$5 bind=$6 out
  log "measuring: $name"
  nx "$s" iperf3 -s -D -B "$bind" -p 5201 --pidfile "$dir/iperf.pid"
  # sockperf 3.7 (Debian 12) speaks IPv4 only: IPv6 rows have no round-trip column.
  local sp=""
  [[ "$dial" == *:* ]] || { ip netns exec "$tag$s" sockperf sr -i "$bind" -p 11111 >/dev/null 2>&1 & sp=$!; }
  sleep 0.5
  local t1 t4 u l
  profile_start "$name" tcp1
  t1=$(nx "$c" iperf3 -c "$dial" -p 5201 -t "$T" -J | gbps) || t1=fail
  profile_end
  t4=$(nx "$c" iperf3 -c "$dial" -p 5201 -t "$T" -P 4 -J | gbps) || t4=fail
  profile_start "$name" udp64
  u=$(nx "$c" iperf3 -c "$dial" -p 5201 -t "$T" -u -b 0 -l 64 -J | pps) || u=fail
  profile_end
  if [ -n "$sp" ]; then
    l=$(nx "$c" sockperf pp -i "$dial" -p 11111 -t "$T" 2>&1 | rtt) || l=fail
  else
    l="n/a"
  fi
  kill "$(cat "$dir/iperf.pid")" $sp 2>/dev/null || true
  [ -z "$sp" ] || wait "$sp" 2>/dev/null || true
  sleep 0.3
  rows+=("$name|$ref|$t1|$t4|$u|$l")
}
# PROFILE=dir: sample the whole machine (both iperf3 ends, vswitchd or the kernel's softirqs)
# for the length of one test, then summarise: CPU share per task and the hottest symbols.
prec=""; pout=""
profile_start() { # row test
  [ -n "${PROFILE:-}" ] || return 0
  command -v perf >/dev/null || { log "PROFILE needs perf (apt-get install linux-perf)"; exit 1; }
  mkdir -p "$PROFILE"
  pout="$PROFILE/$(echo "$1" | tr -c 'a-zA-Z0-9\n' _)_$2"
  perf record -q -a -g -F 499 -o "$pout.data" -- sleep "$T" >/dev/null 2>&1 & prec=$!
}
profile_end() {
  [ -n "$prec" ] || return 0
  wait "$prec" 2>/dev/null || true; prec=""
  { echo "## CPU share per task (all samples, both cores)"
    perf report -i "$pout.data" --stdio --no-children --sort comm -g none 2>/dev/null | awk '/^ +[0-9]/ && n++ < 12'
    echo; echo "## hottest symbols (self time, all tasks)"
    perf report -i "$pout.data" --stdio --no-children --sort comm,sym -g none 2>/dev/null | awk '/^ +[0-9]/ && n++ < 30'
  } >"$pout.txt"
}
gbps() { python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'; }
pps() { python3 -c 'import json,sys; s=json.load(sys.stdin)["end"]["sum"]; print("%.0f" % ((s["packets"]-s["lost_packets"])/s["seconds"]))'; }
# sockperf prints the average one-way latency (half the round trip) in microseconds.
rtt() { python3 -c '
import re,sys
m=re.search(r"avg-latency=([0-9.]+)", sys.stdin.read())
print("%.1f" % (2*float(m.group(1))))'; }

daemon() { # host-namespace-or-empty name
  local h=$1 name=$2
  # shellcheck disable=SC2206 # VSWITCHD_ARGS: extra daemon options, split on spaces
  local cmd=("$BIN/vswitchd" --socket "$dir/$name.sock" --state-dir "$dir/$name.state" ${VSWITCHD_ARGS:-})
  if [ -n "$h" ]; then
    ip netns exec "$tag$h" "${cmd[@]}" 2>"$dir/$name.log" &
  else
    "${cmd[@]}" 2>"$dir/$name.log" &
  fi
  pids+=($!)
  for _ in $(seq 100); do "$BIN/vswitchctl" --socket "$dir/$name.sock" network ls >/dev/null 2>&1 && return; sleep 0.1; done
  log "vswitchd $name did not start: $(tail -3 "$dir/$name.log")"; exit 1
}
ctl() { local name=$1; shift; "$BIN/vswitchctl" --socket "$dir/$name.sock" "$@" >/dev/null; }
stop_daemons() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}
veth() { # ns1 if1 ns2 if2
  ip link add "$2" netns "$tag$1" type veth peer name "$4" netns "$tag$3"
  ip -n "$tag$1" link set "$2" up; ip -n "$tag$3" link set "$4" up
}

want() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
[[ "$ONLY" =~ ^(l2|ipv6|nat|overlay|ovs)(,(l2|ipv6|nat|overlay|ovs))*$ ]] \
  || { echo "bench.sh: --only takes l2, ipv6, nat, overlay, ovs (comma-separated), not '$ONLY'" >&2; exit 2; }
want ovs || OVS=0

# --- L2 ---
if want l2; then
ns a; ns b
daemon "" l2
ctl l2 network create bench --subnet 10.90.0.0/24
ctl l2 attach "${tag}a" bench --ip 10.90.0.2
ctl l2 attach "${tag}b" bench --ip 10.90.0.3
measure "vswitchd L2 (TAP)" "Linux bridge (veth)" a b 10.90.0.3 10.90.0.3
stop_daemons

ns kh; ns ka; ns kb
ip -n "${tag}kh" link add br0 type bridge; ip -n "${tag}kh" link set br0 up
for x in a b; do veth kh v$x k$x eth0; ip -n "${tag}kh" link set v$x master br0; done
ip -n "${tag}ka" addr add 10.90.0.2/24 dev eth0; ip -n "${tag}kb" addr add 10.90.0.3/24 dev eth0
measure "Linux bridge (veth)" "" ka kb 10.90.0.3 10.90.0.3
fi

# --- IPv6: L2 on a dual-stack network, and IPv6 inside a VXLAN overlay ---
if want ipv6; then
ns a6; ns b6
daemon "" ipv6
ctl ipv6 network create bench6 --subnet 10.91.0.0/24 --subnet fd00:91::/64
ctl ipv6 attach "${tag}a6" bench6 --ip 10.91.0.2 --ip6 fd00:91::2
ctl ipv6 attach "${tag}b6" bench6 --ip 10.91.0.3 --ip6 fd00:91::3
measure "vswitchd L2 IPv6 (TAP)" "Linux bridge IPv6 (veth)" a6 b6 fd00:91::3 fd00:91::3
stop_daemons

ns kh6; ns ka6; ns kb6
ip -n "${tag}kh6" link add br0 type bridge; ip -n "${tag}kh6" link set br0 up
for x in a6 b6; do veth kh6 v$x k$x eth0; ip -n "${tag}kh6" link set v$x master br0; done
ip -n "${tag}ka6" addr add fd00:91::2/64 dev eth0 nodad; ip -n "${tag}kb6" addr add fd00:91::3/64 dev eth0 nodad
measure "Linux bridge IPv6 (veth)" "" ka6 kb6 fd00:91::3 fd00:91::3

ns u61; ns u62; ns x61; ns x62
veth u61 ul0 u62 ul0
ip -n "${tag}u61" addr add 10.95.0.1/24 dev ul0; ip -n "${tag}u62" addr add 10.95.0.2/24 dev ul0
daemon u61 ov61; daemon u62 ov62
ctl ov61 network create ov6 --subnet 10.96.0.0/24 --subnet fd00:96::/64 --vni 43 --peer 10.95.0.2
ctl ov62 network create ov6 --subnet 10.96.0.0/24 --subnet fd00:96::/64 --vni 43 --peer 10.95.0.1
ctl ov61 attach "${tag}x61" ov6 --ip 10.96.0.2 --ip6 fd00:96::2
ctl ov62 attach "${tag}x62" ov6 --ip 10.96.0.3 --ip6 fd00:96::3
measure "vswitchd VXLAN overlay IPv6" "kernel VXLAN + bridge IPv6" x61 x62 fd00:96::3 fd00:96::3
stop_daemons

ns k61; ns k62; ns ky61; ns ky62
veth k61 ul0 k62 ul0
for i in 1 2; do
  o=$((3 - i))
  ip -n "${tag}k6$i" addr add 10.95.0.$i/24 dev ul0
  ip -n "${tag}k6$i" link add vx0 type vxlan id 43 local 10.95.0.$i remote 10.95.0.$o dstport 4789
  ip -n "${tag}k6$i" link add br0 type bridge
  veth k6$i ve ky6$i eth0
  ip -n "${tag}k6$i" link set vx0 master br0 up; ip -n "${tag}k6$i" link set ve master br0
  ip -n "${tag}k6$i" link set br0 up
  ip -n "${tag}ky6$i" link set eth0 mtu 1450
  ip -n "${tag}ky6$i" addr add fd00:96::$((i + 1))/64 dev eth0 nodad
done
measure "kernel VXLAN + bridge IPv6" "" ky61 ky62 fd00:96::3 fd00:96::3

# NAT66 egress, as the NAT group's egress row: a host namespace whose uplink is a veth to an
# outside namespace that has 2001:db8:97::1/64 on the cable and no route to fd00:98::/64 (nor a
# default route), so the server's answers reach the endpoint only if its address was translated.
ns h66; ns o66; ns c66
veth h66 up0 o66 eth0
ip -n "${tag}o66" addr add 10.97.0.2/24 dev eth0
ip -n "${tag}o66" addr add 2001:db8:97::1/64 dev eth0 nodad
daemon h66 nat66
# An IPv6 --ip without --ipv6-routed is NAT66 (masquerade to 2001:db8:97::2).
if ! err=$("$BIN/vswitchctl" --socket "$dir/nat66.sock" uplink set up0 --ip 10.97.0.1/24 --ip 2001:db8:97::2/64 2>&1 >/dev/null); then
  log "vswitchd NAT66 egress not measured: 'vswitchctl uplink set up0 --ip 10.97.0.1/24 --ip 2001:db8:97::2/64' failed: $err"
  rows+=("vswitchd NAT66 egress|bridge + MASQUERADE IPv6|fail|fail|fail|n/a")
else
  ctl nat66 network create nat66net --subnet 10.98.0.0/24 --subnet fd00:98::/64
  ctl nat66 attach "${tag}c66" nat66net --ip 10.98.0.2 --ip6 fd00:98::2
  measure "vswitchd NAT66 egress" "bridge + MASQUERADE IPv6" c66 o66 2001:db8:97::1 2001:db8:97::1
fi
stop_daemons

ns kr66; ns ko66; ns kc66
veth kr66 up0 ko66 eth0
veth kr66 vc kc66 eth0
ip -n "${tag}ko66" addr add 2001:db8:97::1/64 dev eth0 nodad
ip -n "${tag}kr66" addr add 2001:db8:97::2/64 dev up0 nodad
ip -n "${tag}kr66" link add br0 type bridge; ip -n "${tag}kr66" link set br0 up
ip -n "${tag}kr66" link set vc master br0
ip -n "${tag}kr66" addr add fd00:98::1/64 dev br0 nodad
ip -n "${tag}kc66" addr add fd00:98::2/64 dev eth0 nodad
ip -n "${tag}kc66" -6 route add default via fd00:98::1
nx kr66 sysctl -qw net.ipv6.conf.all.forwarding=1
if err=$(nx kr66 ip6tables -t nat -A POSTROUTING -s fd00:98::/64 -o up0 -j MASQUERADE 2>&1); then
  measure "bridge + MASQUERADE IPv6" "" kc66 ko66 2001:db8:97::1 2001:db8:97::1
else
  notes+=("bridge + MASQUERADE IPv6 not measured: this kernel has no ip6tables nat (ip6tables -t nat -A POSTROUTING -j MASQUERADE: ${err//$'\n'/ }); the kernel needs ip6table_nat or nft_chain_nat, and nf_nat's masquerade, for IPv6")
  log "${notes[-1]}"
  rows+=("bridge + MASQUERADE IPv6||n/a|n/a|n/a|n/a")
fi
fi

# --- NAT: a host namespace whose uplink is a veth to an "outside" namespace with no route back ---
if want nat; then
ns h; ns o; ns c
veth h up0 o eth0
ip -n "${tag}o" addr add 10.91.0.2/24 dev eth0
daemon h nat
ctl nat uplink set up0 --ip 10.91.0.1/24
ctl nat network create natnet --subnet 10.92.0.0/24
ctl nat attach "${tag}c" natnet --ip 10.92.0.2
ctl nat publish "${tag}c" 5201:5201/tcp
ctl nat publish "${tag}c" 5201:5201/udp
ctl nat publish "${tag}c" 11111:11111/udp
measure "vswitchd NAT egress" "bridge + MASQUERADE" c o 10.91.0.2 10.91.0.2
measure "vswitchd published port" "bridge + DNAT" o c 10.91.0.1 10.92.0.2
stop_daemons

ns kh2; ns ko; ns kc
veth kh2 up0 ko eth0
veth kh2 vc kc eth0
ip -n "${tag}ko" addr add 10.91.0.2/24 dev eth0
ip -n "${tag}kh2" addr add 10.91.0.1/24 dev up0
ip -n "${tag}kh2" link add br0 type bridge; ip -n "${tag}kh2" link set br0 up
ip -n "${tag}kh2" link set vc master br0
ip -n "${tag}kh2" addr add 10.92.0.1/24 dev br0
ip -n "${tag}kc" addr add 10.92.0.2/24 dev eth0; ip -n "${tag}kc" route add default via 10.92.0.1
nx kh2 sysctl -qw net.ipv4.ip_forward=1
nx kh2 iptables -t nat -A POSTROUTING -s 10.92.0.0/24 -o up0 -j MASQUERADE
for p in tcp:5201 udp:5201 udp:11111; do
  nx kh2 iptables -t nat -A PREROUTING -i up0 -p "${p%%:*}" --dport "${p#*:}" -j DNAT --to-destination "10.92.0.2:${p#*:}"
done
measure "bridge + MASQUERADE" "" kc ko 10.91.0.2 10.91.0.2
measure "bridge + DNAT" "" ko kc 10.91.0.1 10.92.0.2
fi

# --- VXLAN overlay between two host namespaces over a veth underlay ---
if want overlay; then
ns u1; ns u2; ns x1; ns x2
veth u1 ul0 u2 ul0
ip -n "${tag}u1" addr add 10.93.0.1/24 dev ul0; ip -n "${tag}u2" addr add 10.93.0.2/24 dev ul0
daemon u1 ov1; daemon u2 ov2
ctl ov1 network create ov --subnet 10.94.0.0/24 --vni 42 --peer 10.93.0.2
ctl ov2 network create ov --subnet 10.94.0.0/24 --vni 42 --peer 10.93.0.1
ctl ov1 attach "${tag}x1" ov --ip 10.94.0.2
ctl ov2 attach "${tag}x2" ov --ip 10.94.0.3
measure "vswitchd VXLAN overlay" "kernel VXLAN + bridge" x1 x2 10.94.0.3 10.94.0.3
stop_daemons

ns k1; ns k2; ns ky1; ns ky2
veth k1 ul0 k2 ul0
for i in 1 2; do
  o=$((3 - i))
  ip -n "${tag}k$i" addr add 10.93.0.$i/24 dev ul0
  ip -n "${tag}k$i" link add vx0 type vxlan id 42 local 10.93.0.$i remote 10.93.0.$o dstport 4789
  ip -n "${tag}k$i" link add br0 type bridge
  veth k$i ve ky$i eth0
  ip -n "${tag}k$i" link set vx0 master br0 up; ip -n "${tag}k$i" link set ve master br0
  ip -n "${tag}k$i" link set br0 up
  ip -n "${tag}ky$i" link set eth0 mtu 1450
  ip -n "${tag}ky$i" addr add 10.94.0.$((i + 1))/24 dev eth0
done
measure "kernel VXLAN + bridge" "" ky1 ky2 10.94.0.3 10.94.0.3
fi

# --- Open vSwitch, userspace (netdev) datapath on TAP ports ---
ovs_row() { # name tso(true|false)
  local name=$1 tso=$2 V
  mkdir -p "$dir/ovs"
  export OVS_RUNDIR=$dir/ovs OVS_DBDIR=$dir/ovs OVS_LOGDIR=$dir/ovs
  V=(ovs-vsctl --db="unix:$dir/ovs/db.sock" --timeout=10)
  ovsdb-tool create "$dir/ovs/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server "$dir/ovs/conf.db" --remote="punix:$dir/ovs/db.sock" --pidfile="$dir/ovs/db.pid" \
    --detach -vconsole:off --log-file="$dir/ovs/db.log"
  "${V[@]}" --no-wait init
  "${V[@]}" --no-wait set Open_vSwitch . "other_config:userspace-tso-enable=$tso"
  ovs-vswitchd "unix:$dir/ovs/db.sock" --pidfile="$dir/ovs/vs.pid" --detach -vconsole:off --log-file="$dir/ovs/vs.log"
  "${V[@]}" add-br obr -- set bridge obr datapath_type=netdev
  local s=$3
  ns "oa$s"; ns "ob$s"
  for x in a b; do
    "${V[@]}" add-port obr "o$x$s" -- set interface "o$x$s" type=tap
    ip link set "o$x$s" netns "${tag}o$x$s"
    ip -n "${tag}o$x$s" link set "o$x$s" up
  done
  ip -n "${tag}oa$s" addr add 10.95.0.2/24 dev "oa$s"; ip -n "${tag}ob$s" addr add 10.95.0.3/24 dev "ob$s"
  measure "$name" "Linux bridge (veth)" "oa$s" "ob$s" 10.95.0.3 10.95.0.3
  ovs_stop
}
if [ "$OVS" = 1 ]; then
  ovs_row "OVS userspace (TAP)" false 1
  ovs_row "OVS userspace + TSO (TAP)" true 2
fi

# --- the table ---
echo
echo "vswitch benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, kernel $(uname -r), ${T} s per measurement"
echo
python3 - "${rows[@]}" <<'EOF'
import sys
rows = [r.split("|") for r in sys.argv[1:]]
by = {r[0]: r for r in rows}
def num(x):
    try: return float(x)
    except ValueError: return None
print("| path | TCP 1 stream Gbit/s | TCP 4 streams Gbit/s | UDP 64 B pkt/s | UDP RTT µs | ratio to kernel (TCP1 / TCP4 / pps / RTT) |")
print("|---|---:|---:|---:|---:|---|")
for name, ref, t1, t4, u, l in rows:
    ratio = "(kernel)"
    if ref and ref in by:
        k = by[ref]
        parts = []
        for i, (mine, theirs) in enumerate(zip((t1, t4, u, l), k[2:6])):
            a, b = num(mine), num(theirs)
            parts.append("%.2f" % (a / b) if a and b else "-")
        ratio = " / ".join(parts) + " vs " + ref
    print(f"| {name} | {t1} | {t4} | {u} | {l} | {ratio} |")
EOF
for n in "${notes[@]}"; do echo; echo "note: $n"; done
# A failed measurement is a failed run: the table above shows which cells ("fail"), and the
# script exits non-zero so no one mistakes a partial table for a result.
failed=0
for r in "${rows[@]}"; do
  case "|$r|" in *"|fail|"*) failed=1; log "measurement failed: ${r%%|*}" ;; esac
done
[ "$failed" = 0 ] || { log "some measurements failed (cells marked 'fail' above)"; exit 1; }
