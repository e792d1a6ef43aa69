#!/usr/bin/env bash
# Quick L2 comparison (a first cut of the issue-5 benchmark): one iperf3 TCP stream between two
# namespaces through vswitchd, then through a Linux bridge, in the same run. Run as root after
# `cargo build --release`. Creates only its own namespaces/devices and removes them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
T=${T:-5}
tag=vp$$
dir=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  for n in a b ka kb kh; do ip netns del "$tag$n" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
gbps() { python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9))'; }

# vswitchd
$BIN/vswitchd --socket "$dir/s" --state-dir "$dir/st" 2>"$dir/log" & pid=$!
for _ in $(seq 50); do $BIN/vswitchctl --socket "$dir/s" network ls >/dev/null 2>&1 && break; sleep 0.1; done
ip netns add ${tag}a; ip netns add ${tag}b
$BIN/vswitchctl --socket "$dir/s" network create bench --subnet 10.250.0.0/24 >/dev/null
$BIN/vswitchctl --socket "$dir/s" attach ${tag}a bench >/dev/null
$BIN/vswitchctl --socket "$dir/s" attach ${tag}b bench >/dev/null
ip netns exec ${tag}b iperf3 -s -1 -D -B 10.250.0.3; sleep 0.5
vs=$(ip netns exec ${tag}a iperf3 -c 10.250.0.3 -t "$T" -J | gbps)

# Linux bridge (in its own namespace), veth to each endpoint
ip netns add ${tag}kh; ip netns add ${tag}ka; ip netns add ${tag}kb
ip -n ${tag}kh link add br0 type bridge; ip -n ${tag}kh link set br0 up
for x in a b; do
  ip -n ${tag}kh link add v$x type veth peer name eth0 netns ${tag}k$x
  ip -n ${tag}kh link set v$x master br0 up
done
ip -n ${tag}ka addr add 10.251.0.2/24 dev eth0; ip -n ${tag}ka link set eth0 up
ip -n ${tag}kb addr add 10.251.0.3/24 dev eth0; ip -n ${tag}kb link set eth0 up
ip netns exec ${tag}kb iperf3 -s -1 -D -B 10.251.0.3; sleep 0.5
br=$(ip netns exec ${tag}ka iperf3 -c 10.251.0.3 -t "$T" -J | gbps)

printf "%-28s %10s\n" "path (1 TCP stream, ${T}s)" "Gbit/s"
printf "%-28s %10s\n" "vswitchd L2 (TAP)" "$vs"
printf "%-28s %10s\n" "Linux bridge (veth)" "$br"
python3 -c "print('%-28s %10.2f' % ('ratio vswitchd/bridge', $vs/$br))"
