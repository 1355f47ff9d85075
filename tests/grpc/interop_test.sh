#!/usr/bin/env bash
# gRPC's interop cases across real processes (docs/grpc.md, "Interop"):
#   1. zcrpc's interop_client over grpc:// against a stock gRPC C++ server;
#   2. the same client against zcrpc's interop_server over grpc://, tcp://
#      and shm://;
#   3. a stock python3-grpcio client against the stock server (to show the
#      client is right) and against zcrpc's interop_server.
# Usage: interop_test.sh STOCK_GRPC_SERVER INTEROP_SERVER INTEROP_CLIENT
set -euo pipefail
stock_server=$1 interop_server=$2 client=$3
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Starts a server writing to $work/$1.out; waits for $2 LISTENING lines.
start() {
  local name=$1 lines=$2
  shift 2
  "$@" > "$work/$name.out" 2> "$work/$name.err" &
  pids+=($!)
  for _ in $(seq 1 300); do
    if [[ $(grep -c '^LISTENING ' "$work/$name.out" || true) -ge $lines ]]; then return 0; fi
    sleep 0.05
  done
  echo "FAIL: $name did not start"; cat "$work/$name.err"; exit 1
}
uri() { grep '^LISTENING '"$2" "$work/$1.out" | head -1 | cut -d' ' -f2; }

# Every case zcrpc's own server can pass today. custom_metadata asks the
# server to echo x-grpc-test-echo-initial as *initial* metadata, which a
# zcrpc handler cannot send yet (docs/grpc.md, "Not yet").
zcrpc_server_cases="empty_unary large_unary client_streaming server_streaming ping_pong empty_stream
  timeout_on_sleeping_server cancel_after_begin cancel_after_first_response status_code_and_message
  special_status_message unimplemented_method unimplemented_service"

echo "=== interop_client (zcrpc) -> stock gRPC C++ server, over grpc://"
start stock 1 "$stock_server" 0
"$client" --target="$(uri stock grpc)" --test_case=all

echo "=== interop_client (zcrpc) -> interop_server (zcrpc), over grpc://, tcp:// and shm://"
start zcrpc 3 "$interop_server" --port=0 --also="tcp://127.0.0.1:0,shm://interop-$$-*"
for scheme in grpc tcp shm; do
  target=$(uri zcrpc "$scheme")
  echo "--- $target"
  for case in $zcrpc_server_cases; do "$client" --target="$target" --test_case="$case"; done
  echo "KNOWN GAP custom_metadata over $scheme: a zcrpc server cannot send initial metadata yet"
done
echo "=== python3-grpcio client (stock) -> stock gRPC C++ server, and -> interop_server (zcrpc), over gRPC"
protoc -I/usr/share/grpc-proto --python_out="$work" grpc/testing/messages.proto grpc/testing/empty.proto
python_client=$(dirname "$0")/python_interop_client.py
/usr/bin/python3 "$python_client" "$work" "$(uri stock grpc | sed 's|grpc://||')"
# shellcheck disable=SC2086
/usr/bin/python3 "$python_client" "$work" "$(uri zcrpc grpc | sed 's|grpc://||')" $zcrpc_server_cases
echo "KNOWN GAP custom_metadata from python: a zcrpc server cannot send initial metadata yet"
echo "interop: all cases passed"
