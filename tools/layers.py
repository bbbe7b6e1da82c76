"""The import layers of dmc, read from the code: the check that every import points down, and the table of
docs/architecture.md.

A unit is a top-level module or package of dmc (`config`, `methods`, `report`, ...). Units stand in
layers, bottom to top; a unit may import units of its own layer or of a lower one, never of a higher one.
No units import each other in a circle, and no files do (files of one package included). Imports inside
functions count like any other.

    python tools/layers.py             # prints each offending arrow or circle, exits 1 if there is one
    python tools/layers.py --markdown  # the layers and what each unit imports, as in docs/architecture.md

tests/test_layers.py runs the same check, and fails when docs/architecture.md's table is not what
`--markdown` prints. A new unit must be given a layer here (the check says so).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS: list[tuple[str, str, tuple[str, ...]]] = [  # bottom to top: name, what it holds, units
    ("base", "one-line user errors, name registries, atomic writes, kill points for tests, safe YAML reading",
     ("errors", "registry", "files", "faults", "yamlio")),
    ("config", "every section with its check, the method table, presets, typed --set", ("config",)),
    ("numerics", "pure functions and small modules: metrics, statistics over seeds, schedules, ridge and "
     "discriminant read-outs, Gaussian memory, drift calibration",
     ("metrics", "stats", "schedule", "analytic", "discriminant", "memory", "calibration")),
    ("run records", "the run-directory format; tables and plots read from run directories", ("rundir", "report")),
    ("data", "benchmarks (class order, task split), sources, datasets, transforms", ("data",)),
    ("models", "the open_clip wrapper, the prompt learner, PROOF's fusion layer", ("models",)),
    ("catalog", "the names and data roots a run may use, checked before torch loads", ("catalog",)),
    ("training", "what methods train with: runtime, Task, the one optimisation loop, features, evaluation",
     ("training",)),
    ("methods", "each method a few hooks on the loop; the shared stages", ("methods",)),
    ("engine", "the one loop, its observers, a run's model on new images, sweeps", ("engine",)),
    ("lab", "on top of the library: the glyph world and its toy CLIP; the benches", ("world", "bench")),
    ("entry points", "the command line; `dmc` itself (`dmc.load`, the lab's registration)",
     ("cli", "__main__", "__init__")),
]
RANK = {unit: rank for rank, (_, _, units) in enumerate(LAYERS) for unit in units}
SRC = Path(__file__).resolve().parents[1] / "src" / "dmc"


def unit_of(module: str) -> str:
    """`dmc.methods.rapf` -> `methods`; the package `dmc` itself -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_of(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts)


def file_of(module: str, package: Path) -> Path | None:
    """The file a module is: `dmc.a.b` -> a/b.py or a/b/__init__.py (None if neither exists)."""
    base = package.parent.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path, package: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of the package in a file, at any depth; `from a import b` names the
    module a.b when b is one, else a."""
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
            subs = [f"{base}.{alias.name}" for alias in node.names]
            targets = [s for s in subs if file_of(s, package)] or [base]
        else:
            continue
        found += [(node.lineno, t) for t in dict.fromkeys(targets) if t.split(".")[0] == package.name]
    return found


def arrows(package: Path = SRC) -> list[tuple[str, int, str, str, str]]:
    """(file, line, importer's unit, imported module, imported unit) for every import between units."""
    out = []
    for path in sorted(package.rglob("*.py")):
        unit = unit_of(module_of(path, package))
        for line, target in imported_modules(path, package):
            if unit_of(target) != unit:
                out.append((str(path.relative_to(package.parent.parent)), line, unit, target, unit_of(target)))
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


def circles(edges: list[tuple[str, str, str]], what: str) -> list[str]:
    """Groups of nodes that import each other in a circle, each with the arrows that tie it.
    `edges`: (importer, imported, where), e.g. units or files."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for a, b, at in edges:
        graph.setdefault(a, set()).add(b)
        where.setdefault((a, b), at)
    reach = {u: _reachable(graph, u) for u in graph}
    groups = {frozenset({u} | {v for v in reach[u] if u in reach.get(v, ())}) for u in graph if u in reach[u]}
    out = []
    for group in sorted(groups, key=sorted):
        ties = [f"{a} -> {b} ({where[a, b]})" for a, b in sorted(where) if a in group and b in group]
        out.append(f"circle among {what} {', '.join(sorted(group))}: {'; '.join(ties)}")
    return out


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Nodes reachable from `start` in one step or more."""
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def file_edges(package: Path = SRC) -> list[tuple[str, str, str]]:
    """(importing file, imported file, line) between the package's files."""
    root = package.parent.parent
    out = []
    for path in sorted(package.rglob("*.py")):
        for line, target in imported_modules(path, package):
            other = file_of(target, package)
            if other is not None and other != path:
                out.append((str(path.relative_to(root)), str(other.relative_to(root)), f"line {line}"))
    return out


def check(package: Path = SRC) -> list[str]:
    """Every problem of the package's imports, one line each; empty when every arrow points down."""
    found = arrows(package)
    units = [(u, t, f"{file}:{line}") for file, line, u, _, t in found]
    return upward(found) + circles(units, "units") + circles(file_edges(package), "files")


def markdown(package: Path = SRC) -> str:
    """The layers, top to bottom, and for each unit the units it imports (read from the code)."""
    imports: dict[str, set[str]] = {}
    for _, _, unit, _, target in arrows(package):
        imports.setdefault(unit, set()).add(target)
    rows = ["| layer | what it holds | unit | imports |", "|---|---|---|---|"]
    for name, what, units in reversed(LAYERS):
        for i, unit in enumerate(units):
            shown = ", ".join(f"`{u}`" for u in sorted(imports.get(unit, ()), key=lambda u: (-RANK[u], u)))
            rows.append(f"| {name if i == 0 else ''} | {what if i == 0 else ''} | `{unit}` | {shown or '–'} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if argv[1:] == ["--markdown"]:
        print(markdown())
        return 0
    problems = check()
    for line in problems:
        print(line)
    if not problems:
        print("every import points down; no circles between units or files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
