"""The import layers of dmc, and the check that every import points down.

A unit is a top-level module or package of dmc (`config`, `methods`, `report`, ...). Units stand in
layers, bottom to top; a unit may import units of its own layer or of a lower one, never of a higher one,
and no units may import each other in a circle. Imports inside functions count like any other.

    python tools/layers.py      # prints each offending arrow, exits 1 if there is one

tests/test_layers.py runs the same check, so an arrow that points up fails the test suite. A new unit
must be given a layer here (the check says so).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS: list[tuple[str, tuple[str, ...]]] = [  # bottom to top
    ("base", ("errors", "registry", "files", "faults")),
    ("config", ("config",)),
    ("numerics, data, models, run directories",
     ("metrics", "stats", "schedule", "analytic", "discriminant", "memory", "calibration", "data", "models", "rundir", "report", "catalog")),
    ("training support", ("training",)),
    ("methods", ("methods",)),
    ("engine", ("engine",)),
    ("entry points", ("cli", "__main__", "__init__")),  # `dmc.load` imports the engine when called
]
RANK = {unit: rank for rank, (_, units) in enumerate(LAYERS) for unit in units}
SRC = Path(__file__).resolve().parents[1] / "src" / "dmc"


def unit_of(module: str) -> str:
    """`dmc.methods.rapf` -> `methods`; the package `dmc` itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_of(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts)


def imported_units(path: Path, package: Path) -> list[tuple[int, str, str]]:
    """(line, imported module, its unit) for every import of the package in a file, at any depth."""
    module = module_of(path, package)
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join(anchor + ([base] if base else []))
            # `from dmc import config` imports the unit `config`, not the package's __init__
            targets = [f"{base}.{alias.name}" for alias in node.names] if base == package.name else [base]
        else:
            continue
        found += [(node.lineno, t, unit_of(t)) for t in targets if t.split(".")[0] == package.name]
    return found


def arrows(package: Path = SRC) -> list[tuple[str, int, str, str, str]]:
    """(file, line, importer's unit, imported module, imported unit) for every import between units."""
    out = []
    for path in sorted(package.rglob("*.py")):
        unit = unit_of(module_of(path, package))
        for line, target, target_unit in imported_units(path, package):
            if target_unit != unit:
                out.append((str(path.relative_to(package.parent.parent)), line, unit, target, target_unit))
    return out


def upward(found: list[tuple[str, int, str, str, str]]) -> list[str]:
    """Arrows from a lower layer to a higher one, and units that are in no layer."""
    problems = []
    for file, line, unit, target, target_unit in found:
        for u in (unit, target_unit):
            if u not in RANK:
                problems.append(f"{file}:{line}: unit {u!r} is in no layer; give it one in tools/layers.py")
        if unit in RANK and target_unit in RANK and RANK[unit] < RANK[target_unit]:
            problems.append(f"{file}:{line}: {unit} ({LAYERS[RANK[unit]][0]}) imports {target} "
                            f"({LAYERS[RANK[target_unit]][0]}), a higher layer")
    return sorted(set(problems))


def circles(found: list[tuple[str, int, str, str, str]]) -> list[str]:
    """Groups of units that import each other in a circle, each with the arrows that tie it."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for file, line, unit, _, target_unit in found:
        graph.setdefault(unit, set()).add(target_unit)
        where.setdefault((unit, target_unit), f"{file}:{line}")
    reach = {u: _reachable(graph, u) for u in graph}
    groups = {frozenset({u} | {v for v in reach[u] if u in reach.get(v, ())}) for u in graph if u in reach[u]}
    out = []
    for group in sorted(groups, key=sorted):
        ties = [f"{a} -> {b} ({where[a, b]})" for a, b in sorted(where) if a in group and b in group]
        out.append(f"circle among {', '.join(sorted(group))}: {'; '.join(ties)}")
    return out


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Units reachable from `start` in one step or more."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def check(package: Path = SRC) -> list[str]:
    """Every problem of the package's imports, one line each; empty when every arrow points down."""
    found = arrows(package)
    return upward(found) + circles(found)


def main() -> int:
    problems = check()
    for line in problems:
        print(line)
    if not problems:
        print("every import points down; no circles")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
