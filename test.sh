#!/usr/bin/env bash
# Run vswitch's whole test suite: unit tests and the integration tests, which start the real
# vswitchd and build real namespaces. Needs root (namespaces, TAP devices) and installs the tools
# the tests drive with apt-get when any is missing.
set -euo pipefail
cd "$(dirname "$0")"

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the integration tests create namespaces and TAP devices: run as root (sudo -E ./test.sh)" >&2
  exit 1
fi

need=()
for t in ip:iproute2 ping:iputils-ping tcpdump:tcpdump tshark:tshark socat:socat iperf3:iperf3 \
         dig:dnsutils curl:curl python3:python3; do
  command -v "${t%%:*}" >/dev/null 2>&1 || need+=("${t#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ -e /dev/net/tun ] || { modprobe tun 2>/dev/null || true; }
[ -e /dev/net/tun ] || { echo "test.sh: /dev/net/tun is missing (no TUN/TAP support)" >&2; exit 1; }

# At most three tests at once: each starts a daemon and real tools on a 2-core machine.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" -- --test-threads=3 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's last line is a doc-test summary of one crate).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$rc"
