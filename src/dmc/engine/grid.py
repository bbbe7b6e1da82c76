"""The grid of a sweep: what it runs (benchmarks x methods x `--set` alternatives x seeds), each run's
name and command line, and the record of the grid in the sweep's folder (`sweep.yaml`).

The recorded grid decides what a sweep continued later runs, so it must be whole: a file cut short or edited
(a key missing, a value of another type, a seed out of range) is refused in one line, never completed with
defaults that would start a different experiment in the same folder.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from dmc import catalog, config, yamlio
from dmc.config import RunConfig
from dmc.errors import UserError
from dmc.files import write_text
from dmc.rundir import SUMMARY, RunDir
from dmc.rundir.own import take_lock

GRID = "sweep.yaml"
SWEEP_MARK = ".dmc-sweep"  # written when dmc creates a sweep's folder: the folder is a dmc sweep
SWEEP_LOCK = ".lock"  # a POSIX record lock held by the one sweep running in the folder
_LOCKS: dict[Path, int] = {}  # sweep folders this process holds (POSIX locks do not exclude their own process)


@dataclass
class Grid:
    """What a sweep runs: every benchmark x method x setting x seed. `sets` are `--set KEY=VALUE` items; a
    key given more than once varies (its values are alternatives), a key given once applies to every run."""

    benchmarks: list[str] = field(default_factory=lambda: [catalog.DEFAULT_BENCHMARK])  # the command line's
    methods: list[str] = field(default_factory=lambda: [RunConfig().method])
    seeds: list[int] = field(default_factory=lambda: [RunConfig().seed])
    sets: list[str] = field(default_factory=list)
    smoke: bool = False
    backbone: str | None = None

    def settings(self) -> list[list[tuple[str, str]]]:
        """Every combination of the alternatives, as (key, raw value) pairs, keys in the order given."""
        values: dict[str, list[str]] = {}
        for item in self.sets:
            key, _ = config.parse_set(item)
            values.setdefault(key, []).append(item.split("=", 1)[1].strip())
        return [list(zip(values, combo)) for combo in itertools.product(*values.values())]

    def varying(self) -> set[str]:
        keys = [config.parse_set(item)[0] for item in self.sets]
        return {k for k in keys if keys.count(k) > 1}

    def points(self) -> list[Point]:
        varying = self.varying()
        out = []
        for bench, method, setting, seed in itertools.product(self.benchmarks, self.methods, self.settings(),
                                                               self.seeds):
            label = ",".join(f"{k}={_safe(v)}" for k, v in setting if k in varying)
            name = "-".join([bench, method] + ([label] if label else []) + [f"s{seed}"])
            out.append(Point(name, bench, method, seed, [f"{k}={v}" for k, v in setting]))
        return out


def _safe(value: str) -> str:
    """A value as it can stand in a folder name (path separators and spaces become `_`)."""
    return re.sub(r"[\s/\\:]+", "_", value) or "empty"


@dataclass
class Point:
    """One run of the grid."""

    name: str
    benchmark: str
    method: str
    seed: int
    sets: list[str]

    def config(self, grid: Grid) -> RunConfig:
        overrides = {"seed": self.seed, **({"model.backbone": grid.backbone} if grid.backbone else {})}
        return config.resolve(self.benchmark, self.method, overrides, self.sets, smoke=grid.smoke)

    def argv(self, grid: Grid, folder: Path, threads: int | None) -> list[str]:
        """The `dmc run` arguments of this point: a new run, or `--resume` of the one in its folder."""
        out = folder / self.name
        extra = ["--quiet"] + (["--threads", str(threads)] if threads else [])
        if status(out) == "unfinished":
            return ["run", "--resume", str(out), *extra]
        argv = ["run", "--benchmark", self.benchmark, "--method", self.method, "--seed", str(self.seed),
                "--out", str(out), *extra] + [a for s in self.sets for a in ("--set", s)]
        return argv + (["--smoke"] if grid.smoke else []) + (["--backbone", grid.backbone] if grid.backbone else [])


def status(path: Path) -> str:
    """`finished`, `unfinished` (tasks done: resumed) or `new` (nothing, or a run that finished no task)."""
    if (path / SUMMARY).exists():
        return "finished"
    if path.is_dir() and RunDir(path).done_tasks() > 0:
        return "unfinished"
    return "new"


# --------------------------------------------------------------------------- the folder
def open_sweep(folder: Path, grid: Grid | None) -> Grid:
    """The grid of the sweep in `folder`: `grid` (recorded in `sweep.yaml` when new), or the recorded one
    when `grid` is None. A different grid than the recorded one is refused in one line. Every run's config
    is resolved and checked first, so a bad name or value stops the sweep before anything runs."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a folder; choose a folder for the sweep")
    recorded = _read_grid(folder / GRID)
    if grid is None:
        grid = recorded or Grid()
    elif recorded is not None and recorded != grid:
        raise UserError(f"{folder} holds another sweep ({_describe(recorded)}); run it again with the same grid "
                        "or with no grid options, or choose another --out")
    points = grid.points()
    if len({p.name for p in points}) < len(points):
        raise UserError("two runs of the grid would share a folder name (a --set value repeated?); list each "
                        "alternative once")
    for p in points:
        catalog.check(p.config(grid))
    take_folder(folder, recorded is not None)
    for p in points:
        check_adoptable(folder / p.name, p.config(grid))
    if recorded is None:
        write_text(folder / GRID, yaml.safe_dump(asdict(grid), sort_keys=False))
    return grid


def take_folder(folder: Path, recorded: bool) -> None:
    """Claim the sweep's folder as `dmc run --out` claims a run directory: a new or empty folder is marked,
    a folder holding files is refused unless dmc marked it (or it holds a recorded grid: a sweep made
    before marks); then lock it, so that a second sweep on the same folder stops in one line."""
    from dmc.rundir.layout import is_link, open_nofollow, refuse_links

    mark = folder / SWEEP_MARK
    marked = (mark.is_file() and not is_link(mark)) or recorded
    held = sorted(os.listdir(folder)) if folder.is_dir() else []
    if held and not marked:
        raise UserError(f"--out {folder} holds files that are not a dmc sweep (first: {held[0]}); choose a new or "
                        "empty folder (dmc never writes into a folder it did not make)")
    folder.mkdir(parents=True, exist_ok=True)
    refuse_links(folder, "sweep's folder")
    key = folder.resolve()
    if key not in _LOCKS:
        fd = open_nofollow(folder / SWEEP_LOCK, os.O_RDWR | os.O_CREAT)
        take_lock(fd, folder, "sweep")
        _LOCKS[key] = fd
    if not mark.is_file():
        write_text(mark, "a dmc sweep: its runs and records are dmc's, nothing else here is\n")


def expected_digest(cfg: RunConfig) -> str:
    """The digest a run started with `cfg` records for its config (`run.json`): that of the values its
    `config.yaml` holds, as written and read back."""
    from dmc.rundir import digest

    return digest(yamlio.loads(yaml.safe_dump(config.to_dict(cfg), sort_keys=False, allow_unicode=True), "config"))


def check_adoptable(path: Path, cfg: RunConfig) -> None:
    """A run found at one of the sweep's run names is the sweep's only if its config is the one the sweep
    would have given it (its recorded digest says so); any other run is refused in one line."""
    if status(path) == "new":
        return
    if RunDir(path).state()["config_sha256"] != expected_digest(cfg):
        raise UserError(f"{path} holds a run whose config is not the one this sweep gives it (another method, "
                        "seed or setting); move it out of the sweep's folder, or choose another --out")


def _read_grid(path: Path) -> Grid | None:
    """The grid recorded in `path` (None if there is none); refused in one line unless it is whole."""
    if not path.exists():
        return None
    redo = "restore it, or start the sweep in another folder"
    try:
        tree = yamlio.read(path, f"the sweep's grid {path}")
    except UserError as exc:
        raise UserError(f"{exc}; {redo}") from None
    names = [f.name for f in dataclasses.fields(Grid)]
    if not isinstance(tree, dict):
        raise UserError(f"the sweep's grid {path} is not a mapping of {', '.join(names)}; {redo}")
    missing, extra = [k for k in names if k not in tree], [k for k in tree if k not in names]
    if missing or extra:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown keys {', '.join(map(str, extra))}"
        raise UserError(f"the sweep's grid {path} {what} (cut short or edited?); {redo}")
    bad = _odd_field(tree)
    if bad:
        raise UserError(f"the sweep's grid {path} has a bad {bad} (edited?); {redo}")
    return Grid(**tree)


def _odd_field(tree: dict) -> str | None:
    """The first field of a recorded grid whose value is not of its kind (None when all are)."""
    def words(v) -> bool:
        return isinstance(v, list) and all(isinstance(x, str) and x for x in v)

    checks = {"benchmarks": lambda v: words(v) and v, "methods": lambda v: words(v) and v,
              "seeds": lambda v: isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool)
                                                                   for x in v),
              "sets": words, "smoke": lambda v: isinstance(v, bool),
              "backbone": lambda v: v is None or (isinstance(v, str) and v)}
    return next((k for k, ok in checks.items() if not ok(tree[k])), None)


def _describe(grid: Grid) -> str:
    parts = [f"benchmarks {', '.join(grid.benchmarks)}", f"methods {', '.join(grid.methods)}",
             f"seeds {', '.join(map(str, grid.seeds))}"]
    parts += [f"--set {' '.join(grid.sets)}"] if grid.sets else []
    return "; ".join(parts + (["smoke"] if grid.smoke else []))
