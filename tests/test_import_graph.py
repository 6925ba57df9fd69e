"""The import graph of src/jigcnn: no cycles, and the layering that docs/design.md states is the one the code has.

Every import counts, also those inside functions (a lazy import still ties two modules), and
``from pkg import name`` counts as importing the submodule ``pkg.name`` when there is one, else
``pkg``. docs/design.md lists the levels between the ``import-layers`` markers, lowest first, one
level a line (module names; ``pkg.*`` for a package and everything under it); a module imports
only modules of its own level or lower.
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def modules() -> dict[str, pathlib.Path]:
    """Module name -> file, for every module of src/jigcnn."""
    out = {}
    for path in (SRC / "jigcnn").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the jigcnn modules it imports anywhere in its file."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for a in node.names:
                    edges.add(f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base)
        graph[name] = {e for e in edges if e in mods and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layers_from_design_doc() -> list[list[str]]:
    """The levels listed in docs/design.md between the import-layers markers, lowest first."""
    text = (ROOT / "docs" / "design.md").read_text()
    block = re.search(r"<!-- import-layers -->(.*?)<!-- /import-layers -->", text, re.S)
    assert block, "docs/design.md has no <!-- import-layers --> block"
    levels = []
    for line in block.group(1).splitlines():
        line = line.strip().strip("`")
        m = re.match(r"^\d+\.\s*(.*)$", line)
        if m:
            levels.append([p.strip().strip("`") for p in m.group(1).split(",") if p.strip()])
    return levels


def level_of(module: str, levels: list[list[str]]) -> int | None:
    """The level whose patterns match `module` (``pkg.*`` matches pkg and everything under it)."""
    for i, patterns in enumerate(levels):
        for pat in patterns:
            if module == pat or (pat.endswith(".*") and (module == pat[:-2] or fnmatch.fnmatch(module, pat))):
                return i
    return None


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles in src/jigcnn: {found}"


def test_the_cycle_finder_finds_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_design_doc_layering_is_the_import_graph():
    levels = layers_from_design_doc()
    assert len(levels) >= 4
    graph = import_graph()
    unplaced = sorted(m for m in graph if level_of(m, levels) is None)
    assert not unplaced, f"modules docs/design.md does not place in a level: {unplaced}"
    upward = sorted(f"{m} (level {level_of(m, levels)}) -> {d} (level {level_of(d, levels)})"
                    for m, deps in graph.items() for d in deps if level_of(d, levels) > level_of(m, levels))
    assert not upward, f"imports against the layering of docs/design.md: {upward}"
