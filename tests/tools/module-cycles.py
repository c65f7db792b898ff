#!/usr/bin/env python3
"""Count import cycles between the top-level modules of each crate.

A crate's top-level modules are the files and folders directly under its
`src/` (`src/a.rs` or `src/a/`). Module A depends on B when any file of A
names `crate::B` (in a `use` or a path). A cycle is a strongly connected
group of two or more modules: A reaches B and B reaches A, directly or
through others. Binaries' `main.rs` and `lib.rs` are the roots, not modules.

Usage: module-cycles.py [REPO]   (prints each cycle; exit 1 if any)
"""
import os
import re
import sys

SKIP_DIRS = {"target", "fuzz", "tests", "benches", "examples", ".git"}


def crates(repo):
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")]
        if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
            yield dirpath


def top_module(src, path):
    rel = os.path.relpath(path, src).split(os.sep)
    first = rel[0]
    if first.endswith(".rs"):
        first = first[:-3]
    return first


def edges(src, prefix=()):
    """Dependencies between the modules directly inside `src`, whose module
    path below the crate root is `prefix`."""
    deps = {}
    path_re = r"\bcrate::" + "".join(p + "::" for p in prefix)
    for dirpath, _, filenames in os.walk(src):
        for f in filenames:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            mod = top_module(src, path)
            if mod in ("lib", "main", "mod") or os.path.relpath(path, src).startswith("bin"):
                continue
            text = open(path, encoding="utf-8", errors="replace").read()
            # Drop unit-test modules: `#[cfg(test)] mod tests { ... }` at the end of a file.
            cut = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
            if cut:
                text = text[: cut.start()]
            names = set(re.findall(path_re + r"(\w+)", text))
            for group in re.findall(path_re + r"\{([^}]*)\}", text):
                names.update(re.findall(r"(?:^|,)\s*(\w+)", group))
            if os.path.dirname(path) == src:
                # `super::x` from a direct child names a sibling (at the
                # crate root too: there `super::x` is `crate::x`).
                names.update(re.findall(r"\bsuper::(\w+)", text))
            deps.setdefault(mod, set()).update(n for n in names if n != mod)
    return deps


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else "."
    total = 0
    for crate in sorted(crates(repo)):
        src = os.path.join(crate, "src")
        for dirpath, dirnames, _ in os.walk(src):
            dirnames[:] = [d for d in dirnames if d != "bin"]
            prefix = tuple(os.path.relpath(dirpath, src).split(os.sep)) if dirpath != src else ()
            for comp in sccs(edges(dirpath, prefix)):
                where = "::".join(("crate",) + prefix)
                print(f"{os.path.relpath(crate, repo)} ({where}): {' <-> '.join(comp)}")
                total += 1
    print(f"cycles: {total}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
