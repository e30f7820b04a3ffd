#!/usr/bin/env bash
# Aggregation three ways in one run (issue "Aggregation planning"): a FULL of GiB of the
# mixed data set plus 5 DIFFs of 5% in-place change each, aggregated into a new FULL by the
# store's server-side copy (--copy server), by the client's raw copy (--copy client) and by
# decoding and re-encoding every block (--copy reencode, the first wave's way), on the local
# directory store and on Garage 2.5.0 (UploadPartCopy). Also the SHA-256 of the FULL's data
# object: the client CPU that format 2 no longer spends on every backup.
#
#   benches/run-aggregate.sh [GiB] [RUNS] [STORES]
#   benches/run-aggregate.sh 2 1 "local garage"        # the defaults
#
# Every aggregate is one process under /usr/bin/time (wall, user+sys CPU, peak RSS); the
# bytes copied by the server and read and sent by the client are the aggregate's own report.
# Between the ways the new FULL is deleted, so that each aggregates the same chain. One JSON
# line per measurement goes to target/bench-aggregate.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
gib="${1:-2}"
runs="${2:-1}"
stores="${3:-local garage}"
if [[ " $stores " == *" garage "* ]] && ! command -v garage >/dev/null; then
  echo "== installing garage 2.5.0 (cargo; about 12 minutes, once)"
  cargo install --locked garage@2.5.0
fi
cargo build --release --example catena 2>/dev/null
cargo bench --bench peers --no-run 2>/dev/null
CATENA="$PWD/target/release/examples/catena"
PEERS=$(ls -t target/release/deps/peers-* | grep -v '\.d$' | head -n 1)
# shellcheck source=benches/servers.sh
source benches/servers.sh
bench_workspace aggregate
mib=$(python3 -c "print(int($gib * 1024))")

for store in $stores; do
  for run in $(seq 1 "$runs"); do
    data="$W/data"
    rm -rf "$data"; mkdir -p "$data/neo4j"
    "$PEERS" --bench gen "$data/neo4j/store.db" "$mib" "$run" >/dev/null
    flags=()
    case "$store" in
      local) url="$W/repo-$run"; SERVER_PID=$$ ;;
      garage)
        start_garage; configure_clients; url="s3://bench/agg-$run"
        read -r -a flags <<<"$(s3flags)" ;;
      *) echo "unknown store $store" >&2; exit 2 ;;
    esac
    "$CATENA" backup --from "$data" --to-path "$url" --type FULL "${flags[@]}" >/dev/null 2>&1
    for k in 1 2 3 4 5; do
      "$PEERS" --bench mutate "$data/neo4j/store.db" 5 "$((run * 10 + k))" >/dev/null
      "$CATENA" backup --from "$data" --to-path "$url" "${flags[@]}" >/dev/null 2>&1
    done
    if [ "$store" = local ]; then
      full=$(ls -S "$url"/neo4j/*.data | head -n 1)
      "$PEERS" --bench sha256 "$full" | sed "s/^{/{\"store\":\"$store\",\"run\":$run,\"data_object_bytes\":$(stat -c %s "$full"),/" | tee -a "$OUT"
    fi
    for mode in server client reencode; do
      s0=$(server_cpu 2>/dev/null || echo 0)
      /usr/bin/time -f '%e %U %S %M' -o "$W/time.txt" \
        "$CATENA" --format json aggregate neo4j --from-path "$url" --keep-old-backup --copy "$mode" "${flags[@]}" >"$W/report.json" 2>"$W/err.txt" \
        || { echo "!! $store $mode failed" >&2; tail -n 5 "$W/err.txt" >&2; continue; }
      s1=$(server_cpu 2>/dev/null || echo 0)
      read -r wall user sys rss <"$W/time.txt"
      python3 - "$store" "$run" "$mode" "$mib" "$wall" "$user" "$sys" "$rss" "$s0" "$s1" "$W/report.json" <<'PY' | tee -a "$OUT"
import json, sys
store, run, mode, mib, wall, user, sys_, rss, s0, s1, path = sys.argv[1:]
r = json.load(open(path))[0]
c = r["copy"]
print(json.dumps({"store": store, "run": int(run), "tool": "aggregate-" + mode, "logical_mib": int(mib),
  "wall_s": float(wall), "client_cpu_s": round(float(user) + float(sys_), 2), "server_cpu_s": round(float(s1) - float(s0), 2),
  "peak_rss_mib": round(int(rss) / 1024, 1), "method": c["method"], "data_bytes": c["data_bytes"],
  "server_bytes": c["server_bytes"], "client_read_bytes": c["client_read_bytes"], "client_sent_bytes": c["client_sent_bytes"],
  "parts": c["parts"], "verified_records": c["verified_records"], "verified_bytes": c["verified_bytes"], "fallback": c.get("fallback"), "artifact": r["artifact"]}))
PY
      artifact=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[0]['artifact'])" "$W/report.json")
      # Restore the new FULL once per store and way? Too slow at 2 GiB x 3: check it instead.
      "$CATENA" check --from-path "$url" "${flags[@]}" >/dev/null 2>&1 || echo "!! check failed after $store $mode" >&2
      if [ "$store" = local ]; then
        rm -f "$url/neo4j/$artifact".*
      else
        "$PEERS" --bench rm "agg-$run/neo4j/$artifact.manifest.json" "agg-$run/neo4j/$artifact.index" "agg-$run/neo4j/$artifact.data"
      fi
    done
    [ "$store" = garage ] && stop_server
    [ "$store" = local ] && rm -rf "$url"
  done
done
echo "figures in $OUT"
