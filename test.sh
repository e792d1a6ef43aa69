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
         dig:dnsutils curl:curl python3:python3 etcd:etcd-server etcdctl:etcd-client \
         containerd:containerd runc:runc busybox:busybox-static /usr/lib/cni/loopback:containernetworking-plugins \
         dockerd:docker.io prometheus:prometheus promtool:prometheus tmux:tmux; do
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
# --no-fail-fast: one failing test binary must not hide the others; every failure is listed at
# the end.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "$@" -- --test-threads=3 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One closing summary for the whole run (cargo's last line is a doc-test summary of one crate):
# the totals, then each failed test with the binary it is in.
awk '/^ +Running / { bin = $2; if (bin == "unittests") { bin = $NF; gsub(/^\(.*\/|-[0-9a-f]+\)$/, "", bin); bin = "unit tests of " bin } }
     /^ +Doc-tests / { bin = "doc-tests " $2 }
     /^test .* \.\.\. FAILED$/ { failed[++n] = bin ": " $2 }
     /^test result:/ { for (i = 1; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
     /^error: could not compile/ { broken[++b] = $0 }
     /^error: [0-9]+ targets? failed/ { listing = 1; next }
     listing && /^ +`/ { targets[++t] = $0; next }
     { listing = 0 }
     END {
       printf "\n%d passed, %d failed\n", p, f
       for (i = 1; i <= n; i++) printf "FAILED %s\n", failed[i]
       for (i = 1; i <= b; i++) printf "%s\n", broken[i]
       if (f == 0 && t > 0) printf "failed without a failing test (aborted?):\n"
       if (f == 0) for (i = 1; i <= t; i++) printf "%s\n", targets[i]
     }' "$log"
exit "$rc"
