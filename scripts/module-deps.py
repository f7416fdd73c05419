#!/usr/bin/env python3
"""Prints which top-level modules of src/ each module imports (`crate::X` in non-test code), then
every cycle.

    scripts/module-deps.py        exit status 1 when a cycle exists

The intended direction (docs/architecture.md): reference -> layout/oci -> store/sign -> index ->
federation -> serve|publish -> commands, with registry/ a leaf.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
MODULES = re.findall(r"^pub mod (\w+);", (SRC / "lib.rs").read_text(), re.M)


def files_of(module):
    single = SRC / f"{module}.rs"
    tree = SRC / module
    found = [single] if single.exists() else []
    if tree.is_dir():
        found += sorted(tree.rglob("*.rs"))
    return found


def code_of(path):
    """The file's non-test code, without comments: test modules may import anything."""
    if path.name == "tests.rs" or "tests" in path.relative_to(SRC).parts[:-1]:
        return ""
    text = path.read_text().split("#[cfg(test)]\nmod tests")[0]
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))


def imports_of(module):
    deps = set()
    for f in files_of(module):
        deps.update(re.findall(r"crate::(\w+)", code_of(f)))
    return sorted(d for d in deps if d in MODULES and d != module)


graph = {m: imports_of(m) for m in MODULES}
for m in MODULES:
    print(f"{m:12} -> {' '.join(graph[m]) or '-'}")

# Every module that can reach itself, with one path back to it.
cycles = set()
for start in MODULES:
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                cycle = path
                i = cycle.index(min(cycle))
                cycles.add(tuple(cycle[i:] + cycle[:i]))
            elif nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))

print()
if not cycles:
    print("no cycles")
    sys.exit(0)
for c in sorted(cycles, key=len):
    print("cycle: " + " -> ".join(c + (c[0],)))
sys.exit(1)
