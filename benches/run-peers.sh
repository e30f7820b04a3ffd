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

W="$(mktemp -d /tmp/catena-peers.XXXXXX)"
OUT="$PWD/target/bench-peers.jsonl"
: >"$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 300); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done; echo "port $1 did not open" >&2; return 1; }

# ---- servers ------------------------------------------------------------------------
start_garage() {
  local d="$W/garage" s3 rpc admin
  mkdir -p "$d/meta" "$d/data"
  s3=$(free_port); rpc=$(free_port); admin=$(free_port)
  cat >"$d/garage.toml" <<EOF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "lmdb"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
  garage -c "$d/garage.toml" server >"$d/server.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  wait_port "$s3"; wait_port "$rpc"
  local g="garage -c $d/garage.toml" node
  sleep 1
  node=$($g node id -q 2>/dev/null | cut -d@ -f1)
  $g layout assign -z dc1 -c 100G "$node" >/dev/null
  $g layout apply --version 1 >/dev/null
  $g bucket create bench >/dev/null
  local key
  key=$($g key create bench-key)
  KEY_ID=$(echo "$key" | awk '/Key ID/ {print $NF}')
  SECRET=$(echo "$key" | awk '/Secret key/ {print $NF}')
  $g bucket allow --read --write --owner bench --key bench-key >/dev/null
  ENDPOINT="http://127.0.0.1:$s3"; REGION=garage
}
start_s3s() {
  local d="$W/s3s" port
  mkdir -p "$d/root/bench"
  port=$(free_port)
  KEY_ID=benchaccesskey; SECRET=benchsecretkey0123456789
  s3s-fs --host 127.0.0.1 --port "$port" --access-key "$KEY_ID" --secret-key "$SECRET" "$d/root" >"$d/server.log" 2>&1 &
  SERVER_PID=$!; PIDS+=("$SERVER_PID")
  wait_port "$port"
  ENDPOINT="http://127.0.0.1:$port"; REGION=us-east-1
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; rm -rf "$W/garage" "$W/s3s"; }

configure_clients() {
  # A CA bundle from the environment (set on some machines for a proxy) breaks rclone's and
  # aws-cli's plain-http clients here; the servers are on loopback over http.
  unset AWS_CA_BUNDLE
  mkdir -p "$W/secrets/bench"
  printf '[ default ]\nregion = %s\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$REGION" "$KEY_ID" "$SECRET" >"$W/secrets/bench/credentials"
  cat >"$W/aws-config" <<EOF
[default]
region = $REGION
s3 =
  multipart_chunksize = 16MB
  max_concurrent_requests = 8
EOF
  export AWS_CONFIG_FILE="$W/aws-config" AWS_ACCESS_KEY_ID="$KEY_ID" AWS_SECRET_ACCESS_KEY="$SECRET" AWS_DEFAULT_REGION="$REGION"
  export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other RCLONE_CONFIG_BENCH_ENDPOINT="$ENDPOINT"
  export RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$KEY_ID" RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$SECRET" RCLONE_CONFIG_BENCH_REGION="$REGION"
  export RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true
  export RESTIC_PASSWORD=bench-password
  export CATENA_BENCH_ENDPOINT="$ENDPOINT" CATENA_BENCH_ACCESS_KEY="$KEY_ID" CATENA_BENCH_SECRET_KEY="$SECRET" CATENA_BENCH_BUCKET=bench CATENA_BENCH_REGION="$REGION"
}
s3flags() { echo "--s3-endpoint $ENDPOINT --s3-force-path-style --s3-region $REGION --secret-name bench --secret-key-name credentials --secrets-dir $W/secrets"; }

server_cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$SERVER_PID/stat"; }
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
