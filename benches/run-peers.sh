#!/usr/bin/env bash
# Catena against its peers on the same data, the same server and the same machine, in one
# run, interleaved: the raw object_store ceiling, Catena (FULL zstd-1 and zstd-3, DIFF after
# a 5% change, restore, aggregate of a FULL + 5 DIFFs), rclone (default and tuned), aws-cli
# and restic (backup, second backup after the change, restore). Garage 2.5.0 (single node,
# its compression off) is the primary server, s3s-fs 0.14.1 the second one. Installs what is
# missing, starts the servers on free loopback ports, stops them at the end.
#
#   benches/run-peers.sh [GiB] [RUNS] [SERVERS] [SCALING]
#   benches/run-peers.sh 2 3 "garage s3s" "0.5 2 8"     # the defaults
#
# Every measurement is one process under /usr/bin/time: wall seconds, user+sys CPU seconds,
# peak RSS; the server's CPU seconds come from /proc/<pid>/stat; bytes stored from a listing
# of the tool's own prefix. One JSON line per measurement goes to target/bench-peers.jsonl;
# benches/peers-summary.py turns it into the tables of docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
gib="${1:-2}"
runs="${2:-3}"
servers="${3:-garage s3s}"
scaling="${4-0.5 2 8}"   # "" for none
TOOLS="${CATENA_BENCH_TOOLS:-$HOME/.cache/catena-bench-tools}"
mkdir -p "$TOOLS"

# ---- install ------------------------------------------------------------------------
if ! command -v garage >/dev/null; then
  echo "== installing garage 2.5.0 (cargo; about 12 minutes, once)"
  cargo install --locked garage@2.5.0
fi
if ! command -v s3s-fs >/dev/null; then
  echo "== installing s3s-fs 0.14.1 (cargo)"
  cargo install --locked s3s-fs@0.14.1 --features binary
fi
if ! command -v rclone >/dev/null || ! command -v restic >/dev/null; then
  echo "== installing rclone and restic (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone restic >/dev/null
fi
if [ ! -x "$TOOLS/venv/bin/aws" ]; then
  echo "== installing awscli (PyPI, in a venv)"
  python3 -m venv "$TOOLS/venv" && "$TOOLS/venv/bin/pip" install --quiet awscli
fi
AWS="$TOOLS/venv/bin/aws"
cargo build --release --example catena 2>/dev/null
cargo bench --bench peers --no-run 2>/dev/null
CATENA="$PWD/target/release/examples/catena"
PEERS=$(ls -t target/release/deps/peers-* | grep -v '\.d$' | head -n 1)

# shellcheck source=benches/servers.sh
source benches/servers.sh
bench_workspace peers
stored() { # bytes under a prefix of the bucket
  "$AWS" --endpoint-url "$ENDPOINT" s3 ls --recursive --summarize "s3://bench/$1/" 2>/dev/null | awk '/Total Size/ {print $3}' | tail -n 1
}

# measure SERVER RUN LABEL LOGICAL_MIB PREFIX -- command...
measure() {
  local server=$1 run=$2 label=$3 mib=$4 prefix=$5; shift 6
  local s0 s1 wall user sys rss ok=true
  s0=$(server_cpu)
  if ! /usr/bin/time -f '%e %U %S %M' -o "$W/time.txt" "$@" >"$W/out.txt" 2>&1; then
    ok=false; echo "!! $label failed:" >&2; tail -n 5 "$W/out.txt" >&2
  fi
  s1=$(server_cpu)
  read -r wall user sys rss <"$W/time.txt"
  local bytes=0
  [ "$prefix" != "-" ] && bytes=$(stored "$prefix")
  local extra=""
  if [ "$label" = ceiling ]; then extra=",\"detail\":$(tail -n 1 "$W/out.txt")"; fi
  if ! [[ "$wall" =~ ^[0-9.]+$ ]]; then # killed: /usr/bin/time wrote no figures
    wall=0 user=0 sys=0 rss=0 ok=false
  fi
  awk -v server="$server" -v run="$run" -v tool="$label" -v mib="$mib" -v wall="$wall" -v user="$user" \
      -v sys="$sys" -v s0="$s0" -v s1="$s1" -v rss="$rss" -v bytes="${bytes:-0}" -v ok="$ok" -v extra="$extra" 'BEGIN {
    printf "{\"server\":\"%s\",\"run\":%d,\"tool\":\"%s\",\"logical_mib\":%d,\"wall_s\":%.2f,\"mib_s\":%.1f,\"client_cpu_s\":%.2f,\"server_cpu_s\":%.2f,\"peak_rss_mib\":%.1f,\"stored_bytes\":%.0f,\"ok\":%s%s}\n",
      server, run, tool, mib, wall, (wall > 0 ? mib / wall : 0), user + sys, s1 - s0, rss / 1024, bytes, ok, extra
  }' | tee -a "$OUT"
}

one_run() { # SERVER RUN
  local server=$1 run=$2 mib data="$W/data" flags
  mib=$(python3 -c "print(int($gib * 1024))")
  flags=$(s3flags)
  rm -rf "$data" "$W"/restore-*; mkdir -p "$data/neo4j"
  "$PEERS" --bench gen "$data/neo4j/store.db" "$mib" "$run" >/dev/null
  cp "$data/neo4j/store.db" "$W/original.db"
  local cz1="catena-z1-$run" cz3="catena-z3-$run" rst="restic-$run"
  measure "$server" "$run" ceiling "$mib" - -- "$PEERS" --bench ceiling "$data/neo4j/store.db" "ceiling-$run"
  # shellcheck disable=SC2086
  measure "$server" "$run" catena-full-zstd1 "$mib" "$cz1" -- "$CATENA" --compression zstd-1 backup --from "$data" --to-path "s3://bench/$cz1" --type FULL $flags
  # shellcheck disable=SC2086
  measure "$server" "$run" catena-full-zstd3 "$mib" "$cz3" -- "$CATENA" --compression zstd-3 backup --from "$data" --to-path "s3://bench/$cz3" --type FULL $flags
  measure "$server" "$run" rclone-default "$mib" "rclone-$run" -- rclone copy "$data/neo4j" "bench:bench/rclone-$run"
  measure "$server" "$run" rclone-tuned "$mib" "rclone-t-$run" -- rclone copy --s3-upload-concurrency 8 --s3-chunk-size 16M "$data/neo4j" "bench:bench/rclone-t-$run"
  measure "$server" "$run" aws-cli "$mib" "aws-$run" -- "$AWS" --endpoint-url "$ENDPOINT" s3 cp --only-show-errors "$data/neo4j/store.db" "s3://bench/aws-$run/store.db"
  export RESTIC_REPOSITORY="s3:$ENDPOINT/bench/$rst"
  restic init >/dev/null 2>&1
  measure "$server" "$run" restic-backup "$mib" "$rst" -- restic backup --quiet "$data/neo4j"
  local before_diff changed
  before_diff=$(stored "$cz1")
  changed=$("$PEERS" --bench mutate "$data/neo4j/store.db" 5 "$run")
  cp "$data/neo4j/store.db" "$W/changed.db"
  # shellcheck disable=SC2086
  measure "$server" "$run" catena-diff-zstd1 "$mib" "$cz1" -- "$CATENA" --compression zstd-1 backup --from "$data" --to-path "s3://bench/$cz1" $flags
  echo "{\"server\":\"$server\",\"run\":$run,\"tool\":\"changed\",\"changed_bytes\":$changed,\"diff_stored_bytes\":$(( $(stored "$cz1") - before_diff ))}" | tee -a "$OUT"
  measure "$server" "$run" restic-backup-2 "$mib" "$rst" -- restic backup --quiet "$data/neo4j"
  # shellcheck disable=SC2086
  measure "$server" "$run" catena-restore "$mib" - -- "$CATENA" restore neo4j --from-path "s3://bench/$cz1" --to "$W/restore-catena" $flags
  cmp "$W/restore-catena/store.db" "$W/changed.db" || echo "!! catena restore differs" >&2
  measure "$server" "$run" restic-restore "$mib" - -- restic restore latest --target "$W/restore-restic"
  cmp "$W/restore-restic/$data/neo4j/store.db" "$W/changed.db" || echo "!! restic restore differs" >&2
  rm -rf "$W"/restore-*
  for k in 2 3 4 5; do # a chain of a FULL and 5 DIFFs
    "$PEERS" --bench mutate "$data/neo4j/store.db" 5 "$((run * 10 + k))" >/dev/null
    # shellcheck disable=SC2086
    "$CATENA" --compression zstd-1 backup --from "$data" --to-path "s3://bench/$cz1" $flags >/dev/null 2>&1
  done
  # shellcheck disable=SC2086
  measure "$server" "$run" catena-aggregate "$mib" "$cz1" -- "$CATENA" --compression zstd-1 aggregate neo4j --from-path "s3://bench/$cz1" $flags
  for p in "$cz1" "$cz3" "rclone-$run" "rclone-t-$run" "aws-$run" "$rst"; do
    "$AWS" --endpoint-url "$ENDPOINT" s3 rm --quiet --recursive "s3://bench/$p/" >/dev/null 2>&1 || true
  done
}

scaling_run() { # SERVER SIZE_GIB
  local server=$1 size=$2 mib data="$W/data" flags free_mib
  mib=$(python3 -c "print(int($size * 1024))")
  free_mib=$(df -m --output=avail "$W" | tail -n 1)
  if [ "$free_mib" -lt $((mib * 3)) ]; then
    echo "!! skipping the $size GiB scaling run: $free_mib MiB free, $((mib * 3)) needed" >&2
    return 0
  fi
  flags=$(s3flags)
  rm -rf "$data"; mkdir -p "$data/neo4j"
  "$PEERS" --bench gen "$data/neo4j/store.db" "$mib" 77 >/dev/null
  # shellcheck disable=SC2086
  measure "$server" 0 "scaling-catena-full-zstd1-${size}GiB" "$mib" "scale-$size" -- "$CATENA" --compression zstd-1 backup --from "$data" --to-path "s3://bench/scale-$size" --type FULL $flags
  "$AWS" --endpoint-url "$ENDPOINT" s3 rm --quiet --recursive "s3://bench/scale-$size/" >/dev/null 2>&1 || true
  rm -rf "$data"
}

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg); $gib GiB, $runs runs, servers: $servers"
echo "== versions: $(garage --version 2>/dev/null | head -n1); rclone $(rclone version | head -n1 | awk '{print $2}'); $(restic version | awk '{print $1, $2}'); $("$AWS" --version 2>&1 | awk '{print $1}')"
# Scaling first, each size on a fresh Garage: Garage frees deleted blocks lazily, and the
# peers' runs leave several GiB of them behind.
for size in $scaling; do
  start_garage
  configure_clients
  scaling_run garage "$size"
  stop_server
done
for server in $servers; do
  "start_$server"
  configure_clients
  for run in $(seq 1 "$runs"); do
    one_run "$server" "$run"
  done
  stop_server
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg); results in $OUT"
