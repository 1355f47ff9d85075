#!/usr/bin/env bash
# gRPC's interop cases across real processes (docs/grpc.md, "Interop"):
#   1. zcrpc's interop_client over grpc:// against a stock gRPC C++ server;
#   2. the same client against zcrpc's interop_server over grpc://, tcp://
#      and shm://;
#   3. stock gRPC clients, C++ (libgrpc++) and python3-grpcio, against the
#      stock server (to show the clients are right) and against zcrpc's
#      interop_server;
#   4. hostile peers (malformed HTTP/2, an oversize message) against both
#      servers, while a stream on another connection goes on undisturbed.
# Usage: interop_test.sh STOCK_GRPC_SERVER INTEROP_SERVER INTEROP_CLIENT STOCK_INTEROP_CLIENT
set -euo pipefail
stock_server=$1 interop_server=$2 client=$3 stock_client=$4
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


echo "=== interop_client (zcrpc) -> stock gRPC C++ server, over grpc://"
start stock 1 "$stock_server" 0
"$client" --target="$(uri stock grpc)" --test_case=all

echo "=== interop_client (zcrpc) -> interop_server (zcrpc), over grpc://, tcp:// and shm://"
start zcrpc 3 "$interop_server" --port=0 --also="tcp://127.0.0.1:0,shm://interop-$$-*"
for scheme in grpc tcp shm; do
  target=$(uri zcrpc "$scheme")
  echo "--- $target"
  "$client" --target="$target" --test_case=all
done
port() { uri "$1" grpc | sed 's|.*:||'; }
echo "=== stock gRPC C++ client -> stock gRPC C++ server, and -> interop_server (zcrpc), over gRPC"
for server in stock zcrpc; do
  echo "--- $server"
  "$stock_client" --server_port="$(port $server)" --test_case=all
done

echo "=== python3-grpcio client (stock) -> stock gRPC C++ server, and -> interop_server (zcrpc), over gRPC"
protoc -I/usr/share/grpc-proto --python_out="$work" grpc/testing/messages.proto grpc/testing/empty.proto
here=$(dirname "$0")
for server in stock zcrpc; do
  echo "--- $server"
  /usr/bin/python3 "$here/python_interop_client.py" "$work" "127.0.0.1:$(port $server)"
done

echo "=== hostile peers (malformed HTTP/2, oversize message) -> interop_server (zcrpc), answered as the stock server answers"
/usr/bin/python3 "$here/python_hostile_client.py" "$work" "127.0.0.1:$(port stock)" "127.0.0.1:$(port zcrpc)"
echo "interop: all cases passed"
