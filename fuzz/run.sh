#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after another, growing the
# corpora in fuzz/corpus/<target>/ (replayed by `cargo test`). Crashes land in
# fuzz/artifacts/<target>/: fix the bug, then copy the input into the corpus.
#
#   fuzz/run.sh            # 10 minutes per target
#   fuzz/run.sh 60         # 1 minute per target
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets this stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
cargo fuzz build -O
status=0
for t in $targets; do
  echo "== fuzz $t for ${seconds}s"
  mkdir -p "corpus/$t"
  if ! cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 2>&1 | tail -n 4; then
    echo "!! $t crashed: see fuzz/artifacts/$t/"
    status=1
  fi
done
exit $status
