#!/usr/bin/env bash
# Build the fuzz targets with libFuzzer's coverage instrumentation and run each one for a bounded
# time from its seed corpus (fuzz/corpus/TARGET). Works on a stable toolchain: it passes the
# same instrumentation flags as `cargo fuzz build -s none` (no sanitizer, which needs nightly);
# with a nightly toolchain `cargo fuzz run TARGET` works on this crate too.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 10 s each, every target
#
# A crash stops the run with a non-zero exit; the crashing input is saved in
# fuzz/artifacts/TARGET/ and can be replayed with fuzz/target/.../TARGET ARTIFACT.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(datapath frame arp nat nat6 vxlan dns control)
command -v c++ >/dev/null || { echo "fuzz/run.sh: a C++ compiler is needed to build libFuzzer (apt-get install g++)" >&2; exit 1; }
triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the instrumentation off build scripts and proc macros.
cargo build --locked --release --target "$triple" --bins
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  work=$(mktemp -d)
  echo "fuzz/run.sh: $t for ${secs}s"
  # New inputs go to a scratch directory; the committed seeds are read only.
  rc=0
  "target/$triple/release/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 "$work" "corpus/$t" >"$work.log" 2>&1 || rc=$?
  rm -rf "$work"
  if [ "$rc" != 0 ]; then
    tail -40 "$work.log" >&2
    rm -f "$work.log"
    echo "fuzz/run.sh: $t FAILED (exit $rc); input saved in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb|new_units_added)" "$work.log" | tr '\n' ' '
  echo
  rm -f "$work.log"
done
echo "fuzz/run.sh: ${#targets[@]} target(s) ran ${secs}s each without a failure"
