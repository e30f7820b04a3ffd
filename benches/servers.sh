# Shared by benches/run-*.sh (sourced): free loopback ports, Garage 2.5.0 and s3s-fs 0.14.1
# started as single local servers, the clients' environment, a server's CPU seconds.
# The caller sets W (a work directory) and PIDS (an array of processes to stop at exit).
# shellcheck shell=bash
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 300); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done; echo "port $1 did not open" >&2; return 1; }

# bench_workspace NAME: a work directory W under /tmp and the output file
# OUT=target/bench-NAME.jsonl (emptied); at exit the servers in PIDS are stopped and W is
# removed.
bench_workspace() {
  W="$(mktemp -d "/tmp/catena-$1.XXXXXX")"
  OUT="$PWD/target/bench-$1.jsonl"
  : >"$OUT"
  PIDS=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$W"
}

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
