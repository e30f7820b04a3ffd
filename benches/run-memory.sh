#!/usr/bin/env bash
# Peak RSS and speed at the default settings (zstd-3, 8 parts of 8 MiB in flight) of a FULL
# of one file of each size in SIZES GiB, a DIFF after a 5% change and a restore, on the
# local directory store and on each server of SERVERS (s3s: s3s-fs started on a free
# loopback port; garage when installed). Issue "Many files", point 4: backup peak RSS <=
# parts in flight x part size + 32 MiB (96 MiB), restore <= 128 MiB, flat within 10% from
# 0.5 to 8 GiB. With CATENA_BEFORE set to another build, that build runs the same work beside
# this one, the order alternating; with restic installed, restic backs up, backs up again
# after the change and restores the same data on the local store (its repository beside it)
# at RESTIC_AT GiB (default 2, the size of the issue's restic targets).
#
#   benches/run-memory.sh [SIZES] [RUNS] [SERVERS]
#   benches/run-memory.sh "0.5 2 8" 3 local       # the defaults
#   CATENA_BEFORE=/tmp/catena-old benches/run-memory.sh 2 3 s3s
#
# Every measurement is one process under /usr/bin/time. One JSON line per measurement goes to
# target/bench-memory.jsonl, and a table of medians is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="${1:-0.5 2 8}"
runs="${2:-3}"
servers="${3:-local}"
if [ -z "${CATENA_BIN:-}" ]; then cargo build --release --example catena 2>/dev/null; fi
cargo bench --bench peers --no-run 2>/dev/null
CATENA="${CATENA_BIN:-$PWD/target/release/examples/catena}"
BEFORE="${CATENA_BEFORE:-}"
PEERS=$(ls -t target/release/deps/peers-* | grep -v '\.d$' | head -n 1)
# shellcheck source=benches/servers.sh
source benches/servers.sh
bench_workspace memory
export RESTIC_PASSWORD=bench-password

# measure SERVER GIB RUN LABEL MIB -- command...
measure() {
  local server=$1 gib=$2 run=$3 label=$4 mib=$5; shift 6
  local wall user sys rss ok=true
  if ! /usr/bin/time -f '%e %U %S %M' -o "$W/time.txt" "$@" >"$W/out.txt" 2>&1; then
    ok=false; echo "!! $label failed:" >&2; tail -n 5 "$W/out.txt" >&2
  fi
  read -r wall user sys rss <"$W/time.txt"
  awk -v server="$server" -v gib="$gib" -v run="$run" -v tool="$label" -v mib="$mib" -v wall="$wall" \
      -v user="$user" -v sys="$sys" -v rss="$rss" -v ok="$ok" 'BEGIN {
    printf "{\"server\":\"%s\",\"gib\":%s,\"run\":%d,\"tool\":\"%s\",\"wall_s\":%.2f,\"mib_s\":%.1f,\"cpu_s\":%.2f,\"peak_rss_mib\":%.1f,\"ok\":%s}\n",
      server, gib, run, tool, wall, (wall > 0 ? mib / wall : 0), user + sys, rss / 1024, ok
  }' | tee -a "$OUT"
}

one_run() { # SERVER GIB RUN
  local server=$1 gib=$2 run=$3 mib data="$W/data" flags="" base builds
  mib=$(python3 -c "print(int($gib * 1024))")
  rm -rf "$data" "$W"/restore-* "$W"/store-* "$W"/restic-*; mkdir -p "$data/neo4j"
  "$PEERS" --bench gen "$data/neo4j/store.db" "$mib" "$run" >/dev/null
  if [ "$server" = local ]; then base="$W/store"; else flags=$(s3flags); base="s3://bench/mem-$run"; fi
  builds="now"; [ -n "$BEFORE" ] && builds="now before"
  [ -n "$BEFORE" ] && [ $((run % 2)) -eq 0 ] && builds="before now"
  bin() { if [ "$1" = now ]; then echo "$CATENA"; else echo "$BEFORE"; fi; }
  for b in $builds; do
    sync
    # shellcheck disable=SC2086
    measure "$server" "$gib" "$run" "full-$b" "$mib" -- "$(bin "$b")" backup --from "$data" --to-path "$base-$b" --type FULL $flags
  done
  local restic=false
  if [ "$server" = local ] && [ "$gib" = "${RESTIC_AT:-2}" ] && command -v restic >/dev/null; then
    restic=true; export RESTIC_REPOSITORY="$W/restic-$run"; restic init >/dev/null 2>&1
    sync; measure "$server" "$gib" "$run" restic-full "$mib" -- restic backup --quiet "$data/neo4j"
  fi
  "$PEERS" --bench mutate "$data/neo4j/store.db" 5 "$run" >/dev/null
  for b in $builds; do
    # shellcheck disable=SC2086
    measure "$server" "$gib" "$run" "diff-$b" "$mib" -- "$(bin "$b")" backup --from "$data" --to-path "$base-$b" $flags
  done
  $restic && measure "$server" "$gib" "$run" restic-diff "$mib" -- restic backup --quiet "$data/neo4j"
  for b in $builds; do
    rm -rf "$W/restore-$b"; sync
    # shellcheck disable=SC2086
    measure "$server" "$gib" "$run" "restore-$b" "$mib" -- "$(bin "$b")" restore neo4j --from-path "$base-$b" --to "$W/restore-$b" $flags
    cmp "$W/restore-$b/store.db" "$data/neo4j/store.db" || echo "!! the $b restore differs" >&2
    rm -rf "$W/restore-$b"
  done
  if $restic; then
    # restic does not sync what it restores; the sync that gives it Catena's promise (every
    # byte on disk when the restore returns) is timed on its own line.
    sync; measure "$server" "$gib" "$run" restic-restore "$mib" -- restic restore latest --target "$W/restic-restored"
    measure "$server" "$gib" "$run" restic-restore-sync "$mib" -- sync
    cmp "$W/restic-restored$data/neo4j/store.db" "$data/neo4j/store.db" || echo "!! restic's restore differs" >&2
    rm -rf "$W/restic-restored" "$W/restic-$run"
  fi
  if [ "$server" != local ]; then rm -rf "$W/s3s/root/bench/"* 2>/dev/null || true; fi
}

for server in $servers; do
  case "$server" in
    local) ;;
    garage) command -v garage >/dev/null || { echo "!! garage is not installed (benches/run-peers.sh installs it)"; continue; }; start_garage; configure_clients ;;
    s3s) command -v s3s-fs >/dev/null || cargo install --locked s3s-fs@0.14.1 --features binary; start_s3s; configure_clients ;;
  esac
  for gib in $sizes; do
    for run in $(seq 1 "$runs"); do one_run "$server" "$gib" "$run"; done
  done
  [ "$server" != local ] && stop_server
done

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in rows:
    if r["ok"]:
        groups.setdefault((r["server"], r["gib"], r["tool"]), []).append(r)
print("\n| store | GiB | work | n | MiB/s | CPU s | peak RSS MiB (min-max) |")
print("|---|---|---|---|---|---|---|")
for (server, gib, tool), rs in groups.items():
    med = lambda k: statistics.median(x[k] for x in rs)
    lo, hi = min(x["peak_rss_mib"] for x in rs), max(x["peak_rss_mib"] for x in rs)
    print(f"| {server} | {gib} | {tool} | {len(rs)} | {med('mib_s'):.1f} | {med('cpu_s'):.2f} | {med('peak_rss_mib'):.1f} ({lo:.1f}-{hi:.1f}) |")
EOF
