#!/usr/bin/env bash
# Installs the Debian packages zcrpc needs, if any is missing. Idempotent and
# quick when everything is present; non-interactive.
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config
  protobuf-compiler libprotobuf-dev libprotoc-dev
  libabsl-dev libboost-dev libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev protobuf-compiler-grpc grpc-proto
  libibverbs-dev librdmacm-dev
  python3 python3-matplotlib python3-jsonschema util-linux
  python3-grpcio python3-protobuf
  clang libclang-rt-14-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
