#!/usr/bin/env bash
# Upload benchmark: raw object_store multipart put (the ceiling) vs Catena's pipeline with
# zstd-1 and zstd-3 + SHA-256, 8 MiB parts, 8 in flight, against s3s-fs on loopback.
# Each variant runs in its own process, interleaved, RUNS times (default 3).
#
#   benches/run-upload.sh [GiB] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
gib="${1:-1}"
runs="${2:-3}"
source scripts/servers.sh
install_test_servers
trap stop_test_servers EXIT
start_test_servers
cargo bench --bench upload --no-run 2>/dev/null
bin=$(ls -t target/release/deps/upload-* | grep -v '\.d$' | head -n 1)
echo "== machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
server_cpu() { # user+sys seconds of the s3s-fs process
  awk '{printf "%.2f", ($14+$15)/100}' "/proc/${CATENA_SERVER_PIDS[1]}/stat"
}
run_variant() {
  local before after
  before=$(server_cpu)
  "$bin" --bench "$@" | tr -d '\n' | sed 's/}$//'
  after=$(server_cpu)
  echo ",\"server_cpu_s\":$(echo "$after - $before" | bc)}"
}
for run in $(seq 1 "$runs"); do
  for variant in ceiling writer zstd1 zstd3; do
    run_variant "$variant" "$gib"
  done
done | tee target/bench-upload.jsonl
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"
