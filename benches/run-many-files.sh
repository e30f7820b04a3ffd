#!/usr/bin/env bash
# Many small files on the local directory store (issue "Many files"): a FULL of FILES files
# of 1-16 KiB, then RUNS rounds of two DIFFs, each after its own rewrite of 1% of the files,
# alternating which goes first: one by default (unchanged files are skipped by size, mtime,
# device, inode and ctime) and one with --force-read (every file read, the behaviour before
# the skip). Then a restore of the last point, RUNS times. When restic is installed, its
# backup after each change and its restore are measured too (with the sync its restore does
# not do on a line of its own), and both restores are compared.
#
#   benches/run-many-files.sh [FILES] [RUNS]
#   benches/run-many-files.sh 100000 3        # the defaults
#
# Every measurement is one process under /usr/bin/time: wall seconds, user and system CPU
# seconds, peak RSS. One JSON line per measurement goes to target/bench-many-files.jsonl,
# and a table of medians is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
files="${1:-100000}"
runs="${2:-3}"
# CATENA_BIN: the binary to measure (default: this tree's release build); CATENA_BEFORE:
# another build whose FULL and restore are measured beside it, alternating (a change's
# before/after).
if [ -z "${CATENA_BIN:-}" ]; then cargo build --release --example catena 2>/dev/null; fi
CATENA="${CATENA_BIN:-$PWD/target/release/examples/catena}"
BEFORE="${CATENA_BEFORE:-}"
W="$(mktemp -d /tmp/catena-many.XXXXXX)"
OUT="$PWD/target/bench-many-files.jsonl"
: >"$OUT"
trap 'umount "$W/fs" 2>/dev/null || true; rm -rf "$W"' EXIT
# Each restore writes into a file system of its own, made just before it (ext4 on a loop
# device, when run as root with mkfs.ext4): ext4 slows down for every tool after a few
# 100,000-file trees have been deleted (runs 2 to 4 below), which buried the comparison.
FRESH_FS=0
if [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null; then FRESH_FS=1; fi
fresh_fs() { # prints where the next restore goes
  if [ "$FRESH_FS" = 1 ]; then
    umount "$W/fs" 2>/dev/null || true
    rm -f "$W/fs.img"; truncate -s 4G "$W/fs.img"; mkfs.ext4 -q -F "$W/fs.img"
    mkdir -p "$W/fs"; mount -o loop "$W/fs.img" "$W/fs"; echo "$W/fs"
  else
    rm -rf "$W/restored" "$W/restored-restic"; echo "$W"
  fi
}

# The data: FILES files of 1-16 KiB in directories of 1,000, half compressible.
python3 benches/many-files-data.py "$W/data/neo4j" "$files"
change() {
  python3 - "$W/data/neo4j" "$files" "$1" <<'EOF'
import os, random, sys
root, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
for i in rng.sample(range(n), max(1, n // 100)):
    p = os.path.join(root, f"d{i // 1000:04d}", f"f{i:07d}")
    with open(p, "r+b") as f:
        f.write(os.urandom(512))
EOF
}

measure() { # name, then the command
  local name="$1"; shift
  /usr/bin/time -f '%e %U %S %M' -o "$W/time" "$@" >"$W/out" 2>&1 || { cat "$W/out"; exit 1; }
  read -r wall user sys rss <"$W/time"
  local read_bytes
  read_bytes=$(grep -o '[0-9]* bytes read' "$W/out" | head -n 1 | cut -d' ' -f1 || true)
  printf '{"name": "%s", "files": %s, "wall_s": %s, "user_s": %s, "sys_s": %s, "rss_kib": %s, "bytes_read": %s}\n' \
    "$name" "$files" "$wall" "$user" "$sys" "$rss" "${read_bytes:-null}" | tee -a "$OUT"
}

repo="$W/repo"
sync
measure full "$CATENA" backup --from "$W/data" --to-path "$repo" --type FULL
if command -v restic >/dev/null; then
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$W/restic"
  restic init >/dev/null
  measure restic-first restic backup --quiet "$W/data"
fi
# More FULLs into fresh repositories, RUNS of each, the order rotating: this build, the
# build before a change (CATENA_BEFORE, when given) and restic's first backup, for medians
# of one run.
for run in $(seq 1 "$runs"); do
  tools="full"; [ -n "$BEFORE" ] && tools="$tools full-before"
  command -v restic >/dev/null && tools="$tools restic-first"
  for _ in $(seq 2 "$run"); do tools="$(echo "$tools" | awk '{for (i = 2; i <= NF; i++) printf "%s ", $i; print $1}')"; done
  for tool in $tools; do
    rm -rf "$W/full-again" "$W/restic-again"; sync
    case $tool in
      full) measure full "$CATENA" backup --from "$W/data" --to-path "$W/full-again" --type FULL ;;
      full-before) measure full-before "$BEFORE" backup --from "$W/data" --to-path "$W/full-again" --type FULL ;;
      restic-first) RESTIC_REPOSITORY="$W/restic-again" restic init >/dev/null
        RESTIC_REPOSITORY="$W/restic-again" measure restic-first restic backup --quiet "$W/data" ;;
    esac
  done
done
rm -rf "$W/full-again" "$W/restic-again"
for run in $(seq 1 "$runs"); do
  # Each DIFF meets its own fresh 1% change; the order alternates so that neither way
  # always meets a warm cache first.
  if (( run % 2 )); then order="skip force-read"; else order="force-read skip"; fi
  for way in $order; do
    change "$((run * 10 + ${#way}))"
    if [ "$way" = skip ]; then
      measure diff-skip "$CATENA" backup --from "$W/data" --to-path "$repo" --type DIFF
    else
      measure diff-force-read "$CATENA" backup --from "$W/data" --to-path "$repo" --type DIFF --force-read
    fi
    if command -v restic >/dev/null; then
      measure restic-diff restic backup --quiet "$W/data"
    fi
  done
done
restore_with() { # name, binary
  local to; to=$(fresh_fs); sync
  if [ "$2" = restic ]; then
    # restic does not sync what it restores; Catena's restore returns only once every byte
    # is on disk (one syncfs). The sync that gives restic's restore the same promise is
    # measured on its own line, right after it.
    measure restic-restore restic restore latest --target "$to/restored-restic"
    measure restic-restore-sync sync
  else
    measure "$1" "$2" restore neo4j --from-path "$repo" --to "$to/restored"
  fi
}
# The restores rotate like the FULLs: this build, the build before (CATENA_BEFORE) and
# restic, so that none always meets the file system right after a tree was deleted.
for run in $(seq 1 "$runs"); do
  tools="restore"; [ -n "$BEFORE" ] && tools="$tools restore-before"
  command -v restic >/dev/null && tools="$tools restic"
  for _ in $(seq 2 "$run"); do tools="$(echo "$tools" | awk '{for (i = 2; i <= NF; i++) printf "%s ", $i; print $1}')"; done
  for tool in $tools; do
    case $tool in
      restore) restore_with restore "$CATENA" ;;
      restore-before) restore_with restore-before "$BEFORE" ;;
      restic) restore_with restic restic ;;
    esac
  done
done
umount "$W/fs" 2>/dev/null || true
if command -v restic >/dev/null; then
  # Both restores hold the same bytes (not timed).
  rm -rf "$W/restored" "$W/restored-restic"
  "$CATENA" restore neo4j --from-path "$repo" --to "$W/restored" >/dev/null 2>&1
  restic restore latest --quiet --target "$W/restored-restic" >/dev/null
  if diff -r "$W/restored" "$W/restored-restic$W/data/neo4j" >/dev/null; then
    echo "Catena's and restic's restores compared: identical"
  else
    echo "!! Catena's and restic's restores differ"; exit 1
  fi
fi

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{'measurement':<18}{'n':>3}{'wall s':>9}{'user s':>9}{'sys s':>9}{'RSS MiB':>9}{'bytes read':>14}")
for name in dict.fromkeys(r["name"] for r in rows):
    rs = [r for r in rows if r["name"] == name]
    med = lambda k: statistics.median(r[k] for r in rs)
    br = rs[-1]["bytes_read"]
    print(f"{name:<18}{len(rs):>3}{med('wall_s'):>9.2f}{med('user_s'):>9.2f}{med('sys_s'):>9.2f}{med('rss_kib')/1024:>9.0f}{br if br is not None else '-':>14}")
EOF
