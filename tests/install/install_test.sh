#!/usr/bin/env bash
# Installs zcrpc from BUILD_DIR into a temporary prefix, then configures,
# builds and runs examples/consumer against it from a separate directory:
# find_package(zcrpc), zcrpc_generate() and zcrpc::zcrpc as a user has them.
set -euo pipefail
build_dir=$1
source_dir=$2
# The consumer is compiled like zcrpc itself (e.g. with ASan in the asan build).
cxx_flags=${3:-}
linker_flags=${4:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -x "$work/prefix/bin/protoc-gen-zcrpc"
test -f "$work/prefix/lib/cmake/zcrpc/zcrpcConfig.cmake"
# A user's own headers named like zcrpc's internals must not shadow them:
# every zcrpc header is reached as <zcrpc/...>. These poison files sit
# first on the include path; including any of them fails the build.
for h in rpc/status.h rpc/channel.h transport/transport.h base/status.h status.h; do
  mkdir -p "$work/shadow/$(dirname "$h")"
  echo "#error a user's own $h shadowed zcrpc's" >"$work/shadow/$h"
done
cmake -S "$source_dir/examples/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_FLAGS="-I$work/shadow $cxx_flags" -DCMAKE_EXE_LINKER_FLAGS="$linker_flags" >/dev/null
cmake --build "$work/build" >/dev/null
out=$("$work/build/greeter")
echo "$out"
[ "$out" = "hello, world" ]
