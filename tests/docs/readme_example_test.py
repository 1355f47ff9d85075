#!/usr/bin/env python3
"""The README's complete example is examples/consumer/main.cc, which the
install test compiles with -Wall -Wextra -Werror and runs: this checks the
README shows that file as it is, from its first #include on."""
import pathlib
import sys

root = pathlib.Path(sys.argv[1])
readme = (root / "README.md").read_text()
source = (root / "examples/consumer/main.cc").read_text()
source = source[source.index("#include <cstdio>"):]
start = readme.index("```cpp\n#include <cstdio>") + len("```cpp\n")
shown = readme[start:readme.index("```\n", start)]
if shown != source:
    import difflib
    sys.stdout.writelines(difflib.unified_diff(source.splitlines(True), shown.splitlines(True),
                                               "examples/consumer/main.cc", "README.md"))
    sys.exit(1)
print("README example == examples/consumer/main.cc")
