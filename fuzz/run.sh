#!/usr/bin/env bash
# Runs every fuzz target for a while: `fuzz/run.sh SECONDS --dev|--release` (make fuzz-ci and
# make fuzz; docs/security.md, "Fuzzing").
#
# One shared build of all targets, without a sanitizer: the workspace forbids unsafe code, so
# bounds checks and panics already catch what AddressSanitizer would, at a fraction of the build
# and run time. Each target then runs for SECONDS from its committed seeds (fuzz/corpus/TARGET)
# plus what earlier runs found (fuzz/target/corpus/TARGET, where new finds go, out of git).
# libFuzzer's progress goes to fuzz/target/logs/TARGET.log; a failure prints the panic, the
# crash input under fuzz/artifacts/TARGET/ and the command that reproduces it.
set -euo pipefail

seconds=${1:?usage: fuzz/run.sh SECONDS --dev|--release}
build=${2:?usage: fuzz/run.sh SECONDS --dev|--release}
cargo=${CARGO:-cargo}
cd "$(dirname "$0")/.."

flags=(--sanitizer none --debug-assertions "$build")
$cargo +nightly fuzz build "${flags[@]}"
mkdir -p fuzz/target/logs

# One target: its summary line, or the end of its log and a non-zero status.
run() {
  local target=$1 log=fuzz/target/logs/$1.log
  mkdir -p "fuzz/target/corpus/$target"
  # -timeout: one input running for 10 s is a hang, and fails like a crash.
  if $cargo +nightly fuzz run "${flags[@]}" "$target" \
      "fuzz/target/corpus/$target" "fuzz/corpus/$target" \
      -- -max_total_time="$seconds" -timeout=10 >"$log" 2>&1; then
    echo "fuzz $target: $(grep -a '^Done' "$log" | tail -1), $(grep -aoE 'cov: [0-9]+' "$log" | tail -1) (log: $log)"
  else
    # From the panic (or libFuzzer's report of a hang or an OOM) to cargo-fuzz's own error:
    # the message, its backtrace, the input and how to reproduce it; the whole tail otherwise.
    awk '/panicked at|ERROR: libFuzzer|ALARM:/ { on = 1 } on { print } /^Error: / && on { exit }' \
      "$log" | grep . || tail -n 60 "$log"
    echo "fuzz $target FAILED: the crash input is under fuzz/artifacts/$target/ (log: $log)" >&2
    return 1
  fi
}

# As many targets at once as there are cores (FUZZ_JOBS), each on one; every target runs even
# when another fails, and any failure fails the whole.
jobs=${FUZZ_JOBS:-$(nproc)}
running=() failed=0
for target in $($cargo +nightly fuzz list); do
  run "$target" &
  running+=($!)
  if ((${#running[@]} >= jobs)); then
    wait "${running[0]}" || failed=1
    running=("${running[@]:1}")
  fi
done
for pid in "${running[@]}"; do
  wait "$pid" || failed=1
done
exit $failed
