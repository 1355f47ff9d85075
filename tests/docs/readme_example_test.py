#!/usr/bin/env python3
"""The README's examples are files the build compiles with -Wall -Wextra
-Werror and runs: examples/consumer/main.cc (also built against an installed
zcrpc by the install test), examples/streaming/main.cc and reactors.cc,
examples/grpc/main.cc. This checks the
README shows each file as it is, from its first #include on."""
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
readme = (root / "README.md").read_text()
failed = False
for example, first_line in [("examples/consumer/main.cc", "#include <cstdio>"),
                            ("examples/streaming/main.cc", "#include <cinttypes>"),
                            ("examples/streaming/reactors.cc", "// The callback (reactor) API on ticker.proto"),
                            ("examples/grpc/main.cc", "// demo.Greeter served to stock gRPC clients")]:
    source = (root / example).read_text()
    source = source[source.index(first_line):]
    start = readme.index("```cpp\n" + first_line) + len("```cpp\n")
    shown = readme[start:readme.index("```\n", start)]
    if shown != source:
        import difflib
        sys.stdout.writelines(difflib.unified_diff(source.splitlines(True), shown.splitlines(True), example,
                                                   "README.md"))
        failed = True
    else:
        print(f"README example == {example}")
sys.exit(1 if failed else 0)
