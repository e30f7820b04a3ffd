#!/usr/bin/env bash
# Plain against encrypted Catena on the same data, in one run, interleaved (the order
# alternates between runs): a FULL of one file of GiB (zstd-1), then a DIFF after a 5%
# change, then a restore, on a local directory store and on each server of SERVERS
# (garage, s3s: started on free loopback ports); restic's encrypted backup of the same data
# on the same store kind as the peer when restic is installed (a local repository beside
# the local store; an S3 one on a server). Also the cost of opening a passphrase slot.
#
#   benches/run-encryption.sh [GiB] [RUNS] [SERVERS]
#   benches/run-encryption.sh 2 3 "local s3s"     # the defaults
#
# Every measurement is one process under /usr/bin/time: wall seconds, user+sys CPU seconds,
# peak RSS. One JSON line per measurement goes to target/bench-encryption.jsonl, and a
# table of medians (and the encrypted/plain ratios the issue targets) is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
gib="${1:-2}"
runs="${2:-3}"
servers="${3:-local s3s}"
cargo build --release --example catena 2>/dev/null
cargo bench --bench peers --no-run 2>/dev/null
CATENA="$PWD/target/release/examples/catena"
PEERS=$(ls -t target/release/deps/peers-* | grep -v '\.d$' | head -n 1)
# shellcheck source=benches/servers.sh
source benches/servers.sh
bench_workspace encryption
head -c 32 /dev/urandom >"$W/keyfile"
echo "bench passphrase" >"$W/pass"
export RESTIC_PASSWORD=bench-password

# measure SERVER RUN LABEL MIB -- command...
measure() {
  local server=$1 run=$2 label=$3 mib=$4; shift 5
  local wall user sys rss ok=true
  if ! /usr/bin/time -f '%e %U %S %M' -o "$W/time.txt" "$@" >"$W/out.txt" 2>&1; then
    ok=false; echo "!! $label failed:" >&2; tail -n 5 "$W/out.txt" >&2
  fi
  read -r wall user sys rss <"$W/time.txt"
  awk -v server="$server" -v run="$run" -v tool="$label" -v mib="$mib" -v wall="$wall" -v user="$user" \
      -v sys="$sys" -v rss="$rss" -v ok="$ok" 'BEGIN {
    printf "{\"server\":\"%s\",\"run\":%d,\"tool\":\"%s\",\"logical_mib\":%d,\"wall_s\":%.2f,\"mib_s\":%.1f,\"client_cpu_s\":%.2f,\"cpu_s_per_gib\":%.2f,\"peak_rss_mib\":%.1f,\"ok\":%s}\n",
      server, run, tool, mib, wall, (wall > 0 ? mib / wall : 0), user + sys, (user + sys) * 1024 / mib, rss / 1024, ok
  }' | tee -a "$OUT"
}

one_run() { # SERVER RUN
  local server=$1 run=$2 mib data="$W/data" flags="" base modes
  mib=$(python3 -c "print(int($gib * 1024))")
  rm -rf "$data" "$W"/restore-* "$W"/store-* "$W"/restic-*; mkdir -p "$data/neo4j"
  "$PEERS" --bench gen "$data/neo4j/store.db" "$mib" "$run" >/dev/null
  if [ "$server" = local ]; then
    base="$W/store"
  else
    flags=$(s3flags); base="s3://bench/enc-$run"
  fi
  # The order alternates, so that neither mode always runs on a warm page cache.
  if [ $((run % 2)) -eq 0 ]; then modes="plain encrypted"; else modes="encrypted plain"; fi
  for mode in $modes; do
    local key=""
    [ "$mode" = encrypted ] && key="--key-file $W/keyfile"
    # shellcheck disable=SC2086
    measure "$server" "$run" "full-$mode" "$mib" -- "$CATENA" --compression zstd-1 backup --from "$data" --to-path "$base-$mode" --type FULL $key $flags
  done
  if command -v restic >/dev/null; then
    if [ "$server" = local ]; then
      export RESTIC_REPOSITORY="$W/restic-$run"
    else
      export RESTIC_REPOSITORY="s3:$ENDPOINT/bench/restic-$run"
    fi
    restic init >/dev/null 2>&1
    measure "$server" "$run" restic-full "$mib" -- restic backup --quiet "$data/neo4j"
  fi
  "$PEERS" --bench mutate "$data/neo4j/store.db" 5 "$run" >/dev/null
  for mode in $modes; do
    local key=""
    [ "$mode" = encrypted ] && key="--key-file $W/keyfile"
    # shellcheck disable=SC2086
    measure "$server" "$run" "diff-$mode" "$mib" -- "$CATENA" --compression zstd-1 backup --from "$data" --to-path "$base-$mode" $key $flags
  done
  if command -v restic >/dev/null; then
    measure "$server" "$run" restic-diff "$mib" -- restic backup --quiet "$data/neo4j"
  fi
  for mode in $modes; do
    local key=""
    [ "$mode" = encrypted ] && key="--key-file $W/keyfile"
    # shellcheck disable=SC2086
    measure "$server" "$run" "restore-$mode" "$mib" -- "$CATENA" restore neo4j --from-path "$base-$mode" --to "$W/restore-$mode" $key $flags
    cmp "$W/restore-$mode/store.db" "$data/neo4j/store.db" || echo "!! $mode restore differs" >&2
  done
  if [ "$server" != local ]; then
    for p in "enc-$run-plain" "enc-$run-encrypted" "restic-$run"; do
      "$CATENA" gc --from-path "s3://bench/$p" $flags >/dev/null 2>&1 || true
    done
    rm -rf "$W/s3s/root/bench/"* 2>/dev/null || true
  fi
}

for server in $servers; do
  case "$server" in
    local) ;;
    garage) command -v garage >/dev/null || { echo "!! garage is not installed (benches/run-peers.sh installs it)"; continue; }; start_garage; configure_clients ;;
    s3s) command -v s3s-fs >/dev/null || cargo install --locked s3s-fs@0.14.1 --features binary; start_s3s; configure_clients ;;
  esac
  for run in $(seq 1 "$runs"); do one_run "$server" "$run"; done
  [ "$server" != local ] && stop_server
done

# The cost of opening a passphrase slot (Argon2id at the default cost): `key list` of a
# one-artifact local repository, three times.
mkdir -p "$W/tiny/neo4j"; echo hi >"$W/tiny/neo4j/f"
"$CATENA" backup --from "$W/tiny" --to-path "$W/slot-store" --passphrase-file "$W/pass" >/dev/null 2>&1
for run in 1 2 3; do
  measure local "$run" open-passphrase-slot 1 -- "$CATENA" key list --from-path "$W/slot-store" --passphrase-file "$W/pass"
done

python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    if r.get("ok"):
        by.setdefault((r["server"], r["tool"]), []).append(r)
med = lambda k, f: statistics.median(x[f] for x in by[k])
print("\n| store | work | plain MiB/s | encrypted MiB/s | enc/plain throughput | plain CPU s/GiB | encrypted CPU s/GiB | enc/plain CPU | RSS plain / enc MiB | restic MiB/s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for server in sorted({s for s, _ in by}):
    for work in ("full", "diff", "restore"):
        p, e = (server, f"{work}-plain"), (server, f"{work}-encrypted")
        if p not in by or e not in by:
            continue
        rk = (server, f"restic-{work}")
        restic = f"{med(rk, 'mib_s'):.0f}" if rk in by else "-"
        print(f"| {server} | {work} | {med(p, 'mib_s'):.0f} | {med(e, 'mib_s'):.0f} | {med(e, 'mib_s') / med(p, 'mib_s'):.3f} | "
              f"{med(p, 'cpu_s_per_gib'):.2f} | {med(e, 'cpu_s_per_gib'):.2f} | {med(e, 'cpu_s_per_gib') / med(p, 'cpu_s_per_gib'):.3f} | "
              f"{med(p, 'peak_rss_mib'):.0f} / {med(e, 'peak_rss_mib'):.0f} | {restic} |")
k = ("local", "open-passphrase-slot")
if k in by:
    print(f"\nopening a passphrase slot (Argon2id 128 MiB x3, whole `key list` process): median {med(k, 'wall_s'):.2f} s, peak RSS {med(k, 'peak_rss_mib'):.0f} MiB")
EOF
