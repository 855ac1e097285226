"""Imports in `clinsum/` only run down the floors, and never in a circle.

The floors are declared once, in ARCHITECTURE.md's "Floors" table, which this test reads: a
module may import from its own floor or below. Every import statement of every module counts,
function-level (lazy) ones too, and relative ones (`from . import x`, `from ..store import y`);
imports under `if TYPE_CHECKING:` do not, since they never run. A name imported from a package
that is a submodule of it (`from clinsum.store import csvfile`) counts as that submodule.

A table entry names a module or a package (`store` covers `clinsum/store/*`); the longest entry
that matches a module decides its floor, so `legacy.data` can sit below the rest of `legacy`.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "clinsum"
ARCHITECTURE = REPO / "ARCHITECTURE.md"
ROOT = "clinsum"


@dataclass(frozen=True)
class Import:
    source: str  # dotted, without "clinsum."
    target: str
    where: str  # path:line


def read_floors(text: str) -> dict[str, int]:
    """`{module or package: floor}` from the table under the "## Floors" heading."""
    section = re.search(r"^## Floors\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "ARCHITECTURE.md has no '## Floors' section"
    floors: dict[str, int] = {}
    for line in section[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        for name in re.findall(r"`([^`]+)`", cells[1]):
            key = name.removesuffix("/*").removesuffix("/").removesuffix(".py").replace("/", ".")
            assert key not in floors, f"{name} is on two floors in ARCHITECTURE.md"
            floors[key] = int(cells[0])
    assert floors, "the Floors table in ARCHITECTURE.md lists no modules"
    return floors


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)  # "" for clinsum/__init__.py


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def _import_statements(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """The import statements in `body` and the blocks nested in it (functions, classes, if,
    try, with, loops), skipping `if TYPE_CHECKING:` bodies; expressions are never walked."""
    found: list[ast.Import | ast.ImportFrom] = []
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            found.append(stmt)
            continue
        if isinstance(stmt, ast.If):
            test = stmt.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name != "TYPE_CHECKING":
                found += _import_statements(stmt.body)
            found += _import_statements(stmt.orelse)
            continue
        for field in ("body", "orelse", "finalbody"):
            found += _import_statements(getattr(stmt, field, None) or [])
        for part in [*getattr(stmt, "handlers", []), *getattr(stmt, "cases", [])]:
            found += _import_statements(part.body)
    return found


def imports(known: dict[str, Path], package: Path) -> list[Import]:
    """Every import from one module of ours to another."""
    found = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        relative = path.relative_to(package.parent)
        for node in _import_statements(tree.body):
            where = f"{relative}:{node.lineno}"
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    here = [ROOT, *name.split(".")] if name else [ROOT]
                    if not is_package:
                        here = here[:-1]
                    base = here[: len(here) - (node.level - 1)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = node.module or ""
                # `from package import submodule` depends on the submodule itself
                subs = [f"{module}.{a.name}" for a in node.names]
                in_ours = [s for s in subs if s.removeprefix(f"{ROOT}.") in known]
                targets = in_ours + ([module] if len(in_ours) < len(subs) else [])
            for target in targets:
                if target != ROOT and not target.startswith(f"{ROOT}."):
                    continue
                short = target.removeprefix(ROOT).removeprefix(".")
                while short not in known and "." in short:  # a name inside a module
                    short = short.rsplit(".", 1)[0]
                if short in known and short != name:
                    found.append(Import(name, short, where))
    return found


def floor_of(name: str, floors: dict[str, int]) -> int | None:
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in floors:
            return floors[key]
    return None


def cycles(edges: list[Import]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe_cycle(component: list[str], edges: list[Import]) -> str:
    """The shortest circle inside one knot of modules, each import with its line."""
    inside = {
        (e.source, e.target): e for e in reversed(edges) if {e.source, e.target} <= set(component)
    }
    best: list[str] = []
    for start in component:  # breadth-first from each module back to itself
        paths = {start: [start]}
        queue = [start]
        while queue:
            v = queue.pop(0)
            for s, w in inside:
                if s != v:
                    continue
                if w == start and (not best or len(paths[v]) < len(best)):
                    best = paths[v]
                    queue = []
                    break
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    queue.append(w)
    steps = [*best, best[0]]
    path = " -> ".join(steps)
    where = ", ".join(inside[(s, w)].where for s, w in itertools.pairwise(steps))
    knot = f"; in one knot: {', '.join(component)}" if len(component) > len(best) else ""
    return f"cycle {path} ({where}){knot}"


def check(floors: dict[str, int], package: Path = PACKAGE) -> list[str]:
    """Every problem, one line each: modules without a floor, upward imports, cycles."""
    known = modules(package)
    problems = []
    for name in known:
        if name and floor_of(name, floors) is None:
            problems.append(f"{name} has no floor: add it to the Floors table in ARCHITECTURE.md")
    edges = imports(known, package)
    for e in edges:
        below, above = floor_of(e.source, floors), floor_of(e.target, floors)
        if e.source == "":
            problems.append(f"clinsum/__init__.py imports {e.target} ({e.where}): keep it empty")
        elif below is not None and above is not None and above > below:
            problems.append(f"{e.source} -> {e.target} (floor {below} -> floor {above}, {e.where})")
    problems += [describe_cycle(c, edges) for c in cycles(edges)]
    return problems


def test_floors_name_only_modules_that_exist() -> None:
    floors = read_floors(ARCHITECTURE.read_text(encoding="utf-8"))
    known = modules()
    stale = [f for f in floors if not any(m == f or m.startswith(f + ".") for m in known)]
    assert not stale, f"the Floors table names modules that do not exist: {stale}"


def test_imports_run_down_the_floors_without_cycles() -> None:
    problems = check(read_floors(ARCHITECTURE.read_text(encoding="utf-8")))
    assert not problems, f"{len(problems)} layering problem(s):\n" + "\n".join(problems)


def test_the_check_reports_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """The check itself, on a made-up package: it must see what it exists to see."""
    (tmp_path / "clinsum" / "low").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "low/__init__.py": "from . import leaf\n",
        "low/leaf.py": "def f():\n    from ..high import g\n",  # up, and lazily
        "high.py": "from typing import TYPE_CHECKING\nfrom .low.leaf import f\n"
        "if TYPE_CHECKING:\n    from clinsum import other\n",
        "other.py": "import clinsum.high\n",
    }
    for name, text in files.items():
        (tmp_path / "clinsum" / name).write_text(text)
    problems = check({"low": 0, "high": 1, "other": 1}, tmp_path / "clinsum")
    assert problems == [
        "low.leaf -> high (floor 0 -> floor 1, clinsum/low/leaf.py:2)",
        "cycle high -> low.leaf -> high (clinsum/high.py:2, clinsum/low/leaf.py:2)",
    ], problems
