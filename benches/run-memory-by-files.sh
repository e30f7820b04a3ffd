#!/usr/bin/env bash
# Memory by number of files (issue "Many files", point 4): for each count, the files of
# benches/many-files-data.py (those of run-many-files.sh: 1-16 KiB, half compressible,
# directories of 1,000), then a FULL, a DIFF with nothing changed (every file trusted by
# its metadata: the parent's state and the walk, no reads) and a restore into a fresh ext4
# file system (when run as root with mkfs.ext4), compared with the source. Each build in
# CATENA_BINS (default: this tree's release build) in turn, so that two builds can be
# compared in one run.
#
#   benches/run-memory-by-files.sh "10000 100000 1000000"
#   CATENA_BINS="/tmp/catena-before /tmp/catena-after" benches/run-memory-by-files.sh 100000
#
# One process each under /usr/bin/time: wall s, user s, sys s, peak RSS. 1,000,000 files
# take ~10 GB of disk for the data, ~5 GB per repository and a 17 GB sparse image; the data
# sets stay in $CATENA_FILES_DIR (default /tmp/catena-files) for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
counts="${1:-10000 100000}"
if [ -z "${CATENA_BINS:-}" ]; then cargo build --release --example catena 2>/dev/null; fi
BINS="${CATENA_BINS:-$PWD/target/release/examples/catena}"
D="${CATENA_FILES_DIR:-/tmp/catena-files}"
W="$(mktemp -d /tmp/catena-byfiles.XXXXXX)"
trap 'umount "$W/fs" 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir -p "$D"
measure() { # label, then the command
  local label=$1; shift
  /usr/bin/time -f '%e %U %S %M' -o "$W/time" "$@" >"$W/out" 2>&1 || { cat "$W/out"; exit 1; }
  read -r wall user sys rss <"$W/time"
  printf '%-40s wall %7.2f s  user %6.2f  sys %6.2f  peak RSS %5d MiB\n' "$label" "$wall" "$user" "$sys" $((rss / 1024))
}
for n in $counts; do
  if [ ! -d "$D/data$n" ]; then
    python3 benches/many-files-data.py "$D/data$n.tmp/neo4j" "$n"
    mv "$D/data$n.tmp" "$D/data$n"
  fi
  for bin in $BINS; do
    name="$n files, $(basename "$bin")"
    rm -rf "$W/repo"
    measure "$name: FULL" "$bin" backup --from "$D/data$n" --to-path "$W/repo" --type FULL
    measure "$name: DIFF, nothing changed" "$bin" backup --from "$D/data$n" --to-path "$W/repo" --type DIFF
    to="$W/restored"
    if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then
      rm -f "$W/fs.img"; truncate -s $((n / 1000 * 16 + 1024))M "$W/fs.img"
      mkfs.ext4 -q -F "$W/fs.img"; mkdir -p "$W/fs"; mount -o loop "$W/fs.img" "$W/fs"
      to="$W/fs/restored"
    fi
    measure "$name: restore" "$bin" restore neo4j --from-path "$W/repo" --to "$to"
    diff -rq "$D/data$n/neo4j" "$to" >/dev/null && echo "$name: restore identical" || { echo "$name: restore DIFFERS"; exit 1; }
    umount "$W/fs" 2>/dev/null || true; rm -rf "$W/fs.img" "$W/restored" "$W/repo"
  done
done
