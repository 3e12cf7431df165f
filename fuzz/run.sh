#!/usr/bin/env bash
# Runs every fuzz target for a while: `fuzz/run.sh SECONDS --dev|--release` (make fuzz-ci and
# make fuzz; docs/security.md, "Fuzzing").
#
# One shared build of all targets, without a sanitizer: the workspace forbids unsafe code, so
# bounds checks and panics already catch what AddressSanitizer would, at a fraction of the build
# and run time. Each target then runs for SECONDS from its committed seeds (fuzz/corpus/TARGET)
# plus what earlier runs found (fuzz/target/corpus/TARGET, where new finds go, out of git).
# libFuzzer's progress goes to fuzz/target/logs/TARGET.log; a failure prints the log's tail:
# the panic, the crash input under fuzz/artifacts/TARGET/ and the command that reproduces it.
set -euo pipefail

seconds=${1:?usage: fuzz/run.sh SECONDS --dev|--release}
build=${2:?usage: fuzz/run.sh SECONDS --dev|--release}
cargo=${CARGO:-cargo}
cd "$(dirname "$0")/.."

flags=(--sanitizer none --debug-assertions "$build")
$cargo +nightly fuzz build "${flags[@]}"
mkdir -p fuzz/target/logs
for target in $($cargo +nightly fuzz list); do
  log=fuzz/target/logs/$target.log
  mkdir -p "fuzz/target/corpus/$target"
  # -timeout: one input running for 10 s is a hang, and fails like a crash.
  if $cargo +nightly fuzz run "${flags[@]}" "$target" \
      "fuzz/target/corpus/$target" "fuzz/corpus/$target" \
      -- -max_total_time="$seconds" -timeout=10 >"$log" 2>&1; then
    echo "fuzz $target: $(grep -a '^Done' "$log" | tail -1), $(grep -aoE 'cov: [0-9]+' "$log" | tail -1) (log: $log)"
  else
    tail -n 60 "$log"
    echo "fuzz $target FAILED: the crash input is under fuzz/artifacts/$target/ (log: $log)" >&2
    exit 1
  fi
done
