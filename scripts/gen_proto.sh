#!/usr/bin/env bash
# Regenerates libs/proto/src from proto/ (Python messages, gRPC stubs and .pyi stubs).
# Usage: scripts/gen_proto.sh [OUT_DIR]   (default libs/proto/src)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-libs/proto/src}")
rm -rf "$out/p2engine"
mkdir -p "$out"
include=$(python -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
mapfile -t files < <(cd proto && find p2engine -name '*.proto' | sort)
(cd proto && python -m grpc_tools.protoc -I . -I "$include" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out="$out" --mypy_grpc_out="$out" "${files[@]}" 2> >(grep -v "^Writing mypy" >&2))
# Every generated directory is a regular package.
find "$out/p2engine" -type d -exec touch {}/__init__.py \;
