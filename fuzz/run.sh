#!/usr/bin/env bash
# Run every fuzz target (or those named) for FUZZ_SECONDS each with cargo-fuzz + libFuzzer.
# New inputs go to fuzz/corpus-work/<target> (not committed); the committed seeds in
# fuzz/corpus/<target> are read too. A crash stops the run with libFuzzer's report and the
# input in fuzz/artifacts/<target>/: fix it, then add the input to fuzz/corpus/<target>/
# so tests/fuzz_corpus.rs replays it in every test run.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
cargo +nightly fuzz build -O 2>&1 | tail -2
for t in "${targets[@]}"; do
  mkdir -p "corpus-work/$t"
  log="$(mktemp)"
  if ! cargo +nightly fuzz run -O "$t" "corpus-work/$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -60 "$log"
    echo "fuzz: target $t FAILED (input in fuzz/artifacts/$t)" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo "?")
  echo "fuzz: $t: ${seconds} s, $execs executions, coverage $cov edges, no crash"
  rm -f "$log"
done
