#!/usr/bin/env python3
"""Fails (exit 1) when a file under zcrpc/ includes a header of a layer it
may not use. The layers and what each may include (docs/architecture.md):

  base                 zcrpc/base
  transport API        zcrpc/base, zcrpc/transport/*.h, zcrpc/transport/internal
  transport <kind>     the above, and its own zcrpc/transport/<kind>
  runtime (rpc)        zcrpc/base, zcrpc/transport/*.h (the contract, not internal/)
  umbrella             anything (zcrpc/zcrpc.h, zcrpc/builtin_transports.cc)

Usage: check_layers.py ZCRPC_SOURCE_DIR   (the folder named zcrpc)
"""
import pathlib
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](zcrpc/[^">]+)[">]')


def layer_of(rel: str) -> str:
    """The layer a path (relative to the folder above zcrpc/) belongs to."""
    parts = rel.split("/")
    if len(parts) == 2:
        return "umbrella"  # zcrpc/zcrpc.h, zcrpc/builtin_transports.cc
    top = parts[1]
    if top == "base":
        return "base"
    if top == "rpc":
        return "runtime"
    if top == "transport":
        if len(parts) == 3 or parts[2] == "internal":
            return "transport-api"
        return "transport/" + parts[2]
    return "unknown:" + top


def allowed(source_layer: str, target_layer: str) -> bool:
    if source_layer in ("umbrella", target_layer):
        return True
    if target_layer == "base":
        return True  # every layer stands on base
    if target_layer == "transport-api":
        return source_layer in ("runtime",) or source_layer.startswith("transport/")
    return False  # upwards, or sideways between transports


def check(root: pathlib.Path) -> list[str]:
    base = root.parent
    errors = []
    for path in sorted(root.rglob("*")):
        if path.suffix not in (".h", ".cc") or not path.is_file():
            continue
        rel = path.relative_to(base).as_posix()
        source = layer_of(rel)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            target_path = m.group(1)
            target = layer_of(target_path)
            ok = allowed(source, target)
            # The runtime sees the transport contract, never the shared
            # internals the transports are built from.
            if ok and source == "runtime" and target_path.startswith("zcrpc/transport/internal/"):
                ok = False
            if not ok:
                errors.append(f"{rel}:{number}: includes {target_path}: the {source} layer may not "
                              f"use the {target} layer (docs/architecture.md, 'Layers')")
    return errors


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = pathlib.Path(sys.argv[1]).resolve()
    errors = check(root)
    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
