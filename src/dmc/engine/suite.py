"""The transfer suite: chosen contenders over a set of regimes, on their validation rows, paired by seed.

A default is only worth keeping if it travels: from the glyph world it was tuned on to other renderings,
other images per class, other splits and real images. The suite runs every contender (a method plus `--set`
items, named: `ranpac-adapt` is `ranpac` with `ranpac.adapt=true`) in every regime (a benchmark plus `--set`
items, and where needed a dataset written once to the user cache: `digits`), each on the validation split
(the grid file's `validation` items, `eval.split=val`), so that choosing defaults with it never reads the
test rows. Then it prints, per regime, each contender's Avg and Last (mean ± std over seeds) and its paired
difference to the reference contender with the 95 % Student-t interval (`dmc.stats`), and the worst case
over regimes: for each contender, its lowest mean Last minus the best other contender's, and where.

The runs are an ordinary sweep's (`dmc.engine.sweep`): one run directory per regime, contender and seed
(`<regime>-<contender>-s<seed>`) in one folder, started by the sweep's launcher, so the same command
continues the suite (finished runs skipped, unfinished ones resumed). The grid file lives in the package
(`configs/suites/transfer.yaml`); `docs/suite.md` says what each regime stands for and what it costs.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from dmc import catalog, stats
from dmc.engine.grid import Grid, Point, status
from dmc.errors import UserError
from dmc.files import write_text

RECORD = "suite.yaml"  # in the suite's folder: the definitions its runs were started with
NAME = re.compile(r"^[a-z0-9][a-z0-9.+_-]*$")


@dataclass(frozen=True)
class Contender:
    """A method and the `--set` items that make it this contender; `cost_s`: seconds of one run on the
    grid file's cost reference (world v2's validation rows, one thread), for --dry-run."""

    name: str
    method: str
    sets: tuple[str, ...] = ()
    cost_s: float | None = None


@dataclass(frozen=True)
class Regime:
    """A benchmark, its `--set` items and the dataset it reads (a name in `dmc.data.digits.EXPORTERS`,
    whose image folder becomes `data.root`); `scale`: its cost relative to the cost reference, a number or
    {contender: number, default: number} (RanPAC's M x M solve per task does not shrink with the images)."""

    name: str
    benchmark: str
    sets: tuple[str, ...] = ()
    dataset: str | None = None
    scale: float | dict = 1.0
    about: str = ""

    def scale_of(self, contender: str) -> float:
        if isinstance(self.scale, dict):
            return float(self.scale.get(contender, self.scale.get("default", 1.0)))
        return float(self.scale)


@dataclass
class Suite:
    contenders: dict[str, Contender]
    regimes: dict[str, Regime]
    seeds: list[int]
    reference: str
    validation: list[str] = field(default_factory=list)  # `--set` items of every run: the validation rows


# --------------------------------------------------------------------------- the grid file
def default_file() -> Path:
    return Path(str(resources.files("dmc") / "configs" / "suites" / "transfer.yaml"))


def load_suite(path: Path | None = None) -> Suite:
    """The suite of a grid file (default: the package's `transfer.yaml`), checked in one line per fault."""
    path = Path(path) if path is not None else default_file()
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the suite's grid file {path}: {str(exc).splitlines()[0]}") from None
    keys = ("validation", "seeds", "reference", "contenders", "regimes")
    if not isinstance(tree, dict) or sorted(tree) != sorted(keys):
        raise UserError(f"the suite's grid file {path} must be a mapping of exactly {', '.join(keys)}")
    try:
        contenders = {n: _entry(Contender, n, v, "method") for n, v in _mapping(tree, "contenders").items()}
        regimes = {n: _entry(Regime, n, v, "benchmark") for n, v in _mapping(tree, "regimes").items()}
        seeds, validation = tree["seeds"], tree["validation"]
        if not (isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds)):
            raise ValueError("seeds must be a list of integers")
        if not (isinstance(validation, list) and all(isinstance(s, str) and "=" in s for s in validation)):
            raise ValueError("validation must be a list of KEY=VALUE items")
    except (TypeError, ValueError) as exc:
        raise UserError(f"the suite's grid file {path}: {exc}") from None
    if tree["reference"] not in contenders:
        raise UserError(f"the suite's grid file {path}: reference {tree['reference']!r} is not a contender")
    return Suite(contenders, regimes, seeds, tree["reference"], validation)


def _mapping(tree: dict, key: str) -> dict:
    if not isinstance(tree[key], dict) or not tree[key]:
        raise ValueError(f"{key} must be a non-empty mapping of names")
    return tree[key]


def _entry(kind: type, name, value, required: str):
    """A Contender or Regime from its YAML mapping (`set:` is its list of `--set` items)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"bad name {name!r}: use lower-case letters, digits, '.', '+', '_' and '-'")
    if not isinstance(value, dict) or required not in value:
        raise ValueError(f"{name} must be a mapping with at least {required}:")
    value = {("sets" if k == "set" else k): v for k, v in value.items()}
    sets = value.get("sets", [])
    if not (isinstance(sets, list) and all(isinstance(s, str) and "=" in s for s in sets)):
        raise ValueError(f"{name}: set must be a list of KEY=VALUE items")
    scale = value.get("scale", 1.0)
    numbers = list(scale.values()) if isinstance(scale, dict) else [scale]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in numbers):
        raise ValueError(f"{name}: scale must be a number >= 0 or a mapping of contender names to them")
    known = {f.name for f in dataclasses.fields(kind)} - {"name"}
    if set(value) - known:
        unknown = ", ".join(sorted(set(value) - known))
        raise ValueError(f"{name}: unknown keys {unknown}; known: {', '.join(sorted(known))}")
    return kind(name=name, **{**value, "sets": tuple(sets)})


def select(suite: Suite, methods: list[str] | None, regimes: list[str] | None, seeds: list[int] | None,
           reference: str | None = None) -> Suite:
    """The suite restricted to the named contenders and regimes (all when None), on `seeds`."""
    def pick(names: list[str] | None, known: dict, what: str) -> dict:
        if names is None:
            return dict(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"unknown {what} {unknown[0]!r}; the suite's {what}s: {', '.join(known)}")
        return {n: known[n] for n in dict.fromkeys(names)}

    reference = reference or suite.reference
    if reference not in suite.contenders:
        raise UserError(f"unknown contender {reference!r} for --reference; the suite's contenders: "
                        f"{', '.join(suite.contenders)}")
    return Suite(pick(methods, suite.contenders, "contender"), pick(regimes, suite.regimes, "regime"),
                 seeds or suite.seeds, reference, suite.validation)


# --------------------------------------------------------------------------- the runs
@dataclass
class SuiteGrid(Grid):
    """The suite's runs as a sweep's grid: each point carries its own regime and contender `--set` items
    (a sweep's grid varies its items across every run, which a suite's regimes must not)."""

    runs: list[Point] = field(default_factory=list)

    def points(self) -> list[Point]:
        return list(self.runs)


def run_name(regime: str, contender: str, seed: int) -> str:
    return f"{regime}-{contender}-s{seed}"


def make_grid(suite: Suite, smoke: bool = False, roots: dict[str, Path] | None = None) -> SuiteGrid:
    """Every run of the suite (regime x contender x seed, in that order); `roots`: the image folder of each
    dataset a regime reads (written by `dataset_roots`)."""
    runs = []
    for r in suite.regimes.values():
        data = [f"data.root={(roots or {})[r.dataset]}"] if r.dataset else []
        for c in suite.contenders.values():
            for seed in suite.seeds:
                sets = [*suite.validation, *r.sets, *data, *c.sets]
                runs.append(Point(run_name(r.name, c.name, seed), r.benchmark, c.method, seed, sets))
    return SuiteGrid(benchmarks=sorted({r.benchmark for r in suite.regimes.values()}),
                     methods=sorted({c.method for c in suite.contenders.values()}), seeds=list(suite.seeds),
                     smoke=smoke, runs=runs)


def dataset_roots(suite: Suite) -> dict[str, Path]:
    """The image folder of every dataset the suite's regimes read, written to the user cache if missing."""
    from dmc.data.digits import EXPORTERS

    names = sorted({r.dataset for r in suite.regimes.values() if r.dataset})
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise UserError(f"unknown dataset {unknown[0]!r} in the suite's regimes; known: {', '.join(EXPORTERS)}")
    return {n: EXPORTERS[n]() for n in names}


def check_runs(grid: SuiteGrid) -> None:
    """Resolve and check every run's config: a bad name or value stops the suite before anything runs."""
    for p in grid.points():
        catalog.check(p.config(grid))


def open_suite(folder: Path, suite: Suite, grid: SuiteGrid) -> None:
    """Check every run's config (`check_runs`), then record
    the definitions in the folder. A regime or contender recorded there with another definition is
    refused in one line: its finished runs would be mixed with runs of something else under one name."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a folder; choose a folder for the suite")
    check_runs(grid)
    path = folder / RECORD
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read the suite's record {path}: {str(exc).splitlines()[0]}; restore it or "
                        "choose another --out") from None
    mine = _definitions(suite, grid.smoke)
    recorded = recorded if isinstance(recorded, dict) else {"validation": mine["validation"], "smoke": grid.smoke,
                                                            "contenders": {}, "regimes": {}}
    for key in ("validation", "smoke"):
        if recorded.get(key) != mine[key]:
            raise UserError(f"{folder} holds a suite run with {key} {recorded.get(key)!r}, not {mine[key]!r}; "
                            "choose another --out")
    for kind in ("contenders", "regimes"):
        for name, definition in mine[kind].items():
            old = recorded.setdefault(kind, {}).setdefault(name, definition)
            if old != definition:
                raise UserError(f"{folder} holds runs of {kind[:-1]} {name} defined otherwise ({old}); "
                                "choose another --out, or give it another name in the grid file")
    write_text(path, yaml.safe_dump(recorded, sort_keys=False))


def _definitions(suite: Suite, smoke: bool) -> dict:
    return {"validation": list(suite.validation), "smoke": smoke,
            "contenders": {c.name: {"method": c.method, "set": list(c.sets)} for c in suite.contenders.values()},
            "regimes": {r.name: {"benchmark": r.benchmark, "set": list(r.sets), "dataset": r.dataset}
                        for r in suite.regimes.values()}}


# --------------------------------------------------------------------------- cost
def estimate(suite: Suite, folder: Path, jobs: int = 1) -> str:
    """What --dry-run prints: each run with its state and estimated seconds, then the cost per contender
    (one thread per run: a contender's `cost_s` times the regime's `scale`) and the wall time at `jobs`."""
    lines: list[str] = []
    per = {c: [0.0, 0, 0] for c in suite.contenders}  # seconds to go, runs to go, runs of unknown cost
    for r in suite.regimes.values():
        for c in suite.contenders.values():
            for seed in suite.seeds:
                name = run_name(r.name, c.name, seed)
                state = status(folder / name)
                secs = None if c.cost_s is None else c.cost_s * r.scale_of(c.name)
                lines.append(f"{name}: {state}" + ("" if secs is None else f", about {secs:.0f} s"))
                if state != "finished":
                    per[c.name][1] += 1
                    per[c.name][0] += secs or 0.0
                    per[c.name][2] += secs is None
    lines += ["", "| contender | runs to go | estimated cost (1 thread) |", "|---|---|---|"]
    for name, (secs, todo, unknown) in per.items():
        what = _duration(secs) + (f" (+{unknown} runs of unknown cost)" if unknown else "")
        lines.append(f"| {name} | {todo} | {what} |")
    total = sum(v[0] for v in per.values())
    lines.append(f"\ntotal: {_duration(total)} of one thread; with --jobs {jobs} (one thread each, {jobs} free "
                 f"cores) about {_duration(total / jobs)}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------- tables
class Row(NamedTuple):
    """One finished run of the suite."""

    regime: str
    contender: str
    seed: int
    avg: float
    last: float
    seconds: float = float("nan")


def collect(folder: Path, suite: Suite) -> tuple[list[Row], list[str]]:
    """The finished runs of the suite in `folder` as rows, and the names of the runs not finished."""
    from dmc.rundir import RunDir

    rows, missing = [], []
    for r in suite.regimes:
        for c in suite.contenders:
            for seed in suite.seeds:
                path = folder / run_name(r, c, seed)
                try:
                    s = RunDir(path).read_summary() if status(path) == "finished" else None
                except UserError:
                    s = None
                if s is None:
                    missing.append(path.name)
                else:
                    rows.append(Row(r, c, seed, float(s["avg"]), float(s["last"]), float(s["wall_time_s"])))
    return rows, missing


def _mean_std(values: list[float]) -> str:
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():.2f} ± {arr.std(ddof=1):.2f}" if len(arr) > 1 else f"{arr.mean():.2f}"


def regime_table(rows: list[Row], reference: str, level: float = 0.95) -> str:
    """Markdown for the rows of one regime: per contender (in order of first appearance) its seeds, Avg and
    Last (mean ± std) and its paired difference to `reference` over shared seeds with the Student-t
    interval at `level`; the reference's own row says so."""
    by: dict[str, list[Row]] = {}
    for row in rows:
        by.setdefault(row.contender, []).append(row)
    ref = by.get(reference, [])
    pct = f"{100 * level:.0f} %"
    lines = [f"| contender | seeds | Avg | Last | Avg − {reference} [{pct} CI] | Last − {reference} [{pct} CI] | "
             "s per run |", "|---|---|---|---|---|---|---|"]
    for name, mine in by.items():
        diffs = ["reference", "reference"] if name == reference else [
            _paired(mine, ref, metric, level) for metric in ("avg", "last")]
        lines.append(f"| {name} | {', '.join(str(r.seed) for r in mine)} | {_mean_std([r.avg for r in mine])} | "
                     f"{_mean_std([r.last for r in mine])} | {diffs[0]} | {diffs[1]} | "
                     f"{np.mean([r.seconds for r in mine]):.0f} |")
    return "\n".join(lines)


def _paired(mine: list[Row], ref: list[Row], metric: str, level: float) -> str:
    values = {r.seed: getattr(r, metric) for r in mine}
    base = {r.seed: getattr(r, metric) for r in ref}
    if not set(values) & set(base):
        return "–"
    return str(stats.paired(values, base, level))


class Worst(NamedTuple):
    """A contender's worst regime: its mean Last minus the best other contender's there (`margin`)."""

    contender: str
    margin: float
    regime: str
    best_other: str
    regimes: int  # regimes where the contender had a rival to compare with


def worst_cases(rows: list[Row]) -> list[Worst]:
    """For each contender (order of first appearance): the minimum over regimes of its mean Last minus the
    highest mean Last of the other contenders in that regime, and which regime and rival that was.
    Regimes where it ran alone are left out; a contender with no rival anywhere is left out."""
    means: dict[str, dict[str, float]] = {}  # regime -> contender -> mean Last over its seeds
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row.regime, row.contender), []).append(row.last)
    for (regime, contender), lasts in groups.items():
        means.setdefault(regime, {})[contender] = float(np.mean(lasts))
    out = []
    for contender in dict.fromkeys(r.contender for r in rows):
        cases = []
        for regime, there in means.items():
            others = {c: v for c, v in there.items() if c != contender}
            if contender in there and others:
                rival = max(others, key=others.get)
                cases.append((there[contender] - others[rival], regime, rival))
        if cases:
            margin, regime, rival = min(cases)
            out.append(Worst(contender, margin, regime, rival, len(cases)))
    return out


def report(rows: list[Row], reference: str, regimes: list[str] | None = None) -> str:
    """The suite's tables: one per regime (in `regimes` order, else first appearance), then the worst case."""
    order = regimes or list(dict.fromkeys(r.regime for r in rows))
    parts = [f"### {name}\n\n{regime_table([r for r in rows if r.regime == name], reference)}"
             for name in order if any(r.regime == name for r in rows)]
    worst = worst_cases(rows)
    lines = ["### worst case over regimes (mean Last − the best other contender's mean Last)", "",
             "| contender | worst margin | regime | best other there | regimes compared |", "|---|---|---|---|---|"]
    lines += [f"| {w.contender} | {w.margin:+.2f} | {w.regime} | {w.best_other} | {w.regimes} |" for w in worst]
    return "\n\n".join(parts + ["\n".join(lines)]) if worst else "\n\n".join(parts or ["no finished run"])
