#!/usr/bin/env bash
# Installs what is missing, builds a release build in build/, and runs the
# demo: the echo server in the background, listening on tcp:// and shm://,
# the echo client against each, then a clean shutdown of the server.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build build --target echo_server echo_client

server_log=$(mktemp)
# Port 0 picks a free port; the '*' in an shm name becomes a unique token.
./build/examples/echo/echo_server --listen tcp://127.0.0.1:0 --listen 'shm://zcrpc-demo-*' >"$server_log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; rm -f "$server_log"' EXIT

uris=()
for _ in $(seq 100); do
  mapfile -t uris < <(sed -n 's/^echo_server: listening on \(.*\)$/\1/p' "$server_log")
  [ ${#uris[@]} -eq 2 ] && break
  sleep 0.05
done
if [ ${#uris[@]} -ne 2 ]; then
  echo "run.sh: the echo server did not start:" >&2
  cat "$server_log" >&2
  exit 1
fi
echo "== echo server listening on ${uris[*]} (pid $server_pid)"
for uri in "${uris[@]}"; do
  echo "== echo client calling $uri"
  ./build/examples/echo/echo_client --target "$uri"
done
echo "== stopping the server"
kill -TERM "$server_pid"
wait "$server_pid"
cat "$server_log"
echo "== demo finished"
