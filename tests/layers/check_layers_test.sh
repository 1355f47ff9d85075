#!/usr/bin/env bash
# The layer check (cmake/check_layers.py) refuses each wrong-way include and
# accepts the right-way ones. It runs with every build; this shows it bites.
set -euo pipefail
checker=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

expect() {  # expect pass|fail FILE INCLUDE
  local want=$1 file=$2 include=$3
  rm -rf "$work/zcrpc" && mkdir -p "$work/zcrpc/$(dirname "$file")"
  printf '#include "%s"\n' "$include" >"$work/zcrpc/$file"
  if python3 "$checker" "$work/zcrpc" 2>"$work/err"; then got=pass; else got=fail; fi
  if [ "$got" != "$want" ]; then
    echo "FAILED: zcrpc/$file including $include: expected $want, got $got"; cat "$work/err"; exit 1
  fi
  echo "ok: zcrpc/$file -> $include: $got"
}

expect fail base/buffer.cc zcrpc/rpc/channel.h                 # base reaches up to the runtime
expect fail base/wire.h zcrpc/transport/transport.h            # base reaches up to the transport API
expect fail transport/registry.cc zcrpc/transport/tcp/tcp_transport.h  # the API names a transport
expect fail transport/tcp/tcp_connection.cc zcrpc/transport/shm/region.h  # sideways between transports
expect fail transport/shm/region.cc zcrpc/rpc/server.h         # a transport reaches up to the runtime
expect fail rpc/channel.cc zcrpc/transport/tcp/tcp_transport.h # the runtime names a concrete transport
expect fail rpc/server.cc zcrpc/transport/internal/unique_fd.h # the runtime uses transport internals
expect pass rpc/channel.cc zcrpc/transport/transport.h
expect pass transport/tcp/tcp_connection.cc zcrpc/transport/internal/unique_fd.h
expect pass transport/shm/region.cc zcrpc/base/buffer.h
expect pass builtin_transports.cc zcrpc/transport/shm/shm_transport.h
grep -q "may not use the runtime layer" <(python3 "$checker" "$work/zcrpc" 2>&1; \
  rm -rf "$work/zcrpc"; mkdir -p "$work/zcrpc/base"; echo '#include "zcrpc/rpc/channel.h"' >"$work/zcrpc/base/x.h"; \
  python3 "$checker" "$work/zcrpc" 2>&1 || true)
echo "the message names the layers"
