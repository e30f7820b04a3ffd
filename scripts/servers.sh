# Installs (when missing) and starts the local test servers on free loopback ports, and
# exports where they are for the tests. Sourced by scripts/test and the benchmarks; the
# servers are stopped by stop_test_servers (scripts/test sets a trap).
#
#   moto server  (S3; writes made atomic by       CATENA_TEST_MOTO_ENDPOINT
#                 scripts/moto_server.py)
#   s3s-fs 0.14.1 (S3; checks signatures)       CATENA_TEST_S3S_ENDPOINT, _ACCESS_KEY, _SECRET_KEY
#   Azurite blob (Azure)                         AZURITE_BLOB_STORAGE_URL, CATENA_TEST_AZURITE=1
#
# Each gets one bucket / container: catena-test.

CATENA_TOOLS="${CATENA_TOOLS:-$HOME/.cache/catena-test-tools}"
CATENA_SERVER_PIDS=()
CATENA_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port name
  for _ in $(seq 1 300); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))" 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "error: $2 did not start on 127.0.0.1:$1 (log: $CATENA_SERVER_LOGS/$2.log)" >&2
  tail -n 20 "$CATENA_SERVER_LOGS/$2.log" >&2 || true
  return 1
}

install_test_servers() {
  mkdir -p "$CATENA_TOOLS"
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "== installing moto[server] (pip)"
    python3 -m pip install --quiet 'moto[server]'
  fi
  # 3.37.0: Put Block From URL (Azure's ranged server-side copy); 3.35.0 answers 501.
  local azurite_version=3.37.0
  if ! grep -qs "\"version\": \"$azurite_version\"" "$CATENA_TOOLS/node_modules/azurite/package.json"; then
    echo "== installing azurite $azurite_version (npm)"
    npm install --silent --no-audit --no-fund --prefix "$CATENA_TOOLS" "azurite@$azurite_version" >/dev/null
  fi
  if ! command -v s3s-fs >/dev/null 2>&1; then
    echo "== installing s3s-fs 0.14.1 (cargo; a few minutes, once)"
    cargo install --quiet --locked s3s-fs@0.14.1 --features binary
  fi
}

start_test_servers() {
  CATENA_SERVER_LOGS="$(mktemp -d /tmp/catena-servers.XXXXXX)"
  export CATENA_SERVER_LOGS

  local moto_port; moto_port=$(free_port)
  # moto's own create-only put is check-then-write in a threaded server (two racing puts
  # of one key can both succeed); the wrapper handles writes one at a time, as S3 does.
  python3 "$CATENA_SCRIPTS/moto_server.py" -H 127.0.0.1 -p "$moto_port" >"$CATENA_SERVER_LOGS/moto.log" 2>&1 &
  CATENA_SERVER_PIDS+=($!)

  local s3s_port; s3s_port=$(free_port)
  mkdir -p "$CATENA_SERVER_LOGS/s3s-root/catena-test"
  export CATENA_TEST_S3S_ACCESS_KEY="catena-test-access-key"
  export CATENA_TEST_S3S_SECRET_KEY="catena-test-secret-key-0123456789"
  s3s-fs --host 127.0.0.1 --port "$s3s_port" \
    --access-key "$CATENA_TEST_S3S_ACCESS_KEY" --secret-key "$CATENA_TEST_S3S_SECRET_KEY" \
    "$CATENA_SERVER_LOGS/s3s-root" >"$CATENA_SERVER_LOGS/s3s.log" 2>&1 &
  CATENA_SERVER_PIDS+=($!)

  local az_port; az_port=$(free_port)
  "$CATENA_TOOLS/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$az_port" \
    --inMemoryPersistence --disableTelemetry --silent \
    >"$CATENA_SERVER_LOGS/azurite.log" 2>&1 &
  CATENA_SERVER_PIDS+=($!)

  wait_port "$moto_port" moto
  wait_port "$s3s_port" s3s
  wait_port "$az_port" azurite

  export CATENA_TEST_MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
  export CATENA_TEST_S3S_ENDPOINT="http://127.0.0.1:$s3s_port"
  export AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$az_port"
  export CATENA_TEST_AZURITE=1

  # Buckets: moto takes an unsigned PUT; s3s-fs buckets are directories (made above);
  # Azurite needs a SharedKey-signed container PUT with its well-known development key.
  python3 - "$moto_port" "$az_port" <<'PY'
import base64, datetime, hashlib, hmac, sys, urllib.request
moto, az = sys.argv[1], sys.argv[2]
urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{moto}/catena-test", method="PUT")).read()
account = "devstoreaccount1"
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date = datetime.datetime.now(datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
version = "2021-08-06"
headers = f"x-ms-date:{date}\nx-ms-version:{version}\n"
resource = f"/{account}/{account}/catena-test\nrestype:container"
to_sign = "PUT\n\n\n\n\n\n\n\n\n\n\n\n" + headers + resource
sig = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(f"http://127.0.0.1:{az}/{account}/catena-test?restype=container", method="PUT",
    headers={"x-ms-date": date, "x-ms-version": version, "Authorization": f"SharedKey {account}:{sig}", "Content-Length": "0"})
urllib.request.urlopen(req).read()
PY
  echo "== test servers: moto $CATENA_TEST_MOTO_ENDPOINT, s3s-fs $CATENA_TEST_S3S_ENDPOINT, azurite $AZURITE_BLOB_STORAGE_URL"
}

stop_test_servers() {
  for pid in "${CATENA_SERVER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${CATENA_SERVER_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  CATENA_SERVER_PIDS=()
}
