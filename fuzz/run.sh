#!/usr/bin/env bash
# make fuzz: run each cargo-fuzz target for FUZZ_SECONDS, keep its corpus in
# fuzz/corpus/<target>/ (minimized with `cargo fuzz cmin` afterwards), and print
# total executions per target (libFuzzer's final stats) in a summary table, also
# written to target/fuzz/summary.txt. Exits non-zero when a target found anything
# (a crash, a timeout, an out-of-memory); the reproducer is in fuzz/artifacts/<target>/.
#
# Knobs: FUZZ_SECONDS (60), FUZZ_TARGETS (all), FUZZ_SANITIZER (none; "address"
# for ASan), FUZZ_CMIN (1), FUZZ_ARGS (extra libFuzzer flags).
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
sanitizer=${FUZZ_SANITIZER:-none}
cmin=${FUZZ_CMIN:-1}
targets=${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^canary-router-fuzz$')}
# Debug assertions on: integer overflow is a finding too.
opts=(--sanitizer "$sanitizer" --debug-assertions)
out=target/fuzz
mkdir -p "$out"

cargo +nightly fuzz build "${opts[@]}" || exit 2

rows=()
failed=0
for t in $targets; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=("-dict=fuzz/dict/$t.dict")
  log="$out/$t.log"
  echo "== $t: ${seconds}s (log: $log)"
  # The first corpus directory receives new inputs; the seeds are read only.
  cargo +nightly fuzz run "${opts[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=5 -print_final_stats=1 \
    "${dict[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  result=ok
  if [ "$rc" -ne 0 ]; then
    failed=1
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    result="FOUND (exit $rc) ${artifact:-see $log}"
    grep -m 3 -E "panicked at|^SUMMARY|ERROR: libFuzzer" "$log" | sed 's/^/   /'
  elif [ "$cmin" = 1 ]; then
    # Minimized by edges only (not hit counts): a few hundred files per target.
    cargo +nightly fuzz cmin "${opts[@]}" "$t" "fuzz/corpus/$t" -- -use_counters=0 \
      >"$out/$t.cmin.log" 2>&1 ||
      echo "   (cmin failed, corpus kept as is: $out/$t.cmin.log)"
  fi
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  rows+=("$(printf '%-18s %7s %14s %10s %8s %9s  %s' "$t" "$seconds" "${execs:-?}" \
    "$([ -n "$execs" ] && echo $((execs / seconds)) || echo '?')" "$corpus" "${rss:-?}" "$result")")
done

{
  echo "make fuzz: $(date -u '+%Y-%m-%d %H:%M UTC'), sanitizer $sanitizer, $(nproc) cores"
  printf '%-18s %7s %14s %10s %8s %9s  %s\n' target seconds executions exec/s corpus "peak MB" result
  printf '%s\n' "${rows[@]}"
} | tee "$out/summary.txt"
exit "$failed"
