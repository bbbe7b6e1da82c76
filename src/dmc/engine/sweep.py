"""Sweeps: a grid of runs (benchmarks x methods x `--set` alternatives x seeds) in one folder.

Each run is an ordinary `dmc run` in its own run directory, named so that people and `dmc compare
--by-setting` can read it: `<benchmark>-<method>[-<setting>]-s<seed>`, where the setting lists the `--set`
keys that vary (`glyphs-dmc-ot-vision.lr=1e-5-s1`). The grid is recorded in the folder (`sweep.yaml`), so
the same command, or `dmc sweep --out DIR` alone, continues it: finished runs are skipped, unfinished ones
resumed (`dmc run --resume`), and the rest started.

Where runs go is the launcher's business, never the grid's:
- `process` (default): child processes on this machine, `jobs` at a time, each with cores // jobs threads;
- `local`: submitit's local executor, the same path as a cluster's, on this machine;
- `slurm`: submitit's Slurm executor (partition, GPUs per run, time limit); a run with more than one GPU
  is started by torchrun.
Every launcher runs the same command line, `python -m dmc run ...`, and reports its exit code and the
error line it ended on.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from dmc import catalog, config
from dmc.config import RunConfig
from dmc.errors import UserError
from dmc.files import write_text
from dmc.rundir import SUMMARY, RunDir

log = logging.getLogger(__name__)

GRID = "sweep.yaml"
LAUNCHERS = ("process", "local", "slurm")


@dataclass
class Grid:
    """What a sweep runs: every benchmark x method x setting x seed. `sets` are `--set KEY=VALUE` items; a
    key given more than once varies (its values are alternatives), a key given once applies to every run."""

    benchmarks: list[str] = field(default_factory=lambda: [RunConfig().benchmark.name])
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
    if recorded is None:
        write_text(folder / GRID, yaml.safe_dump(asdict(grid), sort_keys=False))
    return grid


def _read_grid(path: Path) -> Grid | None:
    if not path.exists():
        return None
    try:
        return Grid(**(yaml.safe_load(path.read_text()) or {}))
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise UserError(f"cannot read the sweep's grid {path}: {exc}") from None


def _describe(grid: Grid) -> str:
    parts = [f"benchmarks {', '.join(grid.benchmarks)}", f"methods {', '.join(grid.methods)}",
             f"seeds {', '.join(map(str, grid.seeds))}"]
    return "; ".join(parts + ([f"--set {' '.join(grid.sets)}"] if grid.sets else []) + (["smoke"] if grid.smoke else []))


# --------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """How one run of the sweep ended: its exit code and, if it failed, the line it failed with."""

    code: int
    error: str = ""


def run_command(cmd: list[str], env: dict[str, str] | None = None) -> Outcome:
    """Run one `dmc run` command line to its end (here, or inside a cluster job)."""
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})})
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("dmc: error:")]
    return Outcome(proc.returncode, (errors or lines or [""])[-1])


def dmc_command(argv: list[str], gpus: int = 0) -> list[str]:
    """`python -m dmc ARGV`, under torchrun when a run has more than one GPU."""
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                "-m", "dmc", *argv]
    return [sys.executable, "-m", "dmc", *argv]


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class Launch:
    """Where the runs go: `launcher` (process, local, slurm), how many at once, and per run the threads,
    GPUs, time limit and Slurm partition."""

    launcher: str = "process"
    jobs: int | None = None  # None: 1 here, every run at once on Slurm
    threads: int | None = None  # None: cores // jobs here, the scheduler's CPUs on Slurm
    gpus: int = 0
    time_min: int = 24 * 60
    partition: str | None = None
    cpus: int | None = None

    def check(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise UserError(f"bad value for --launcher: {self.launcher!r}; choose one of: {', '.join(LAUNCHERS)}")
        for flag, value, least in (("jobs", self.jobs, 1), ("threads", self.threads, 1), ("gpus-per-run", self.gpus, 0),
                                   ("time", self.time_min, 1), ("cpus-per-run", self.cpus, 1)):
            if value is not None and value < least:
                raise UserError(f"bad value for --{flag}: {value}; must be >= {least}")
        if self.launcher != "slurm" and self.partition:
            raise UserError("--partition is an option of --launcher slurm")

    def at_once(self, pending: int) -> int:
        return self.jobs or (max(1, pending) if self.launcher == "slurm" else 1)

    def threads_per_run(self, pending: int) -> int | None:
        if self.threads or self.launcher == "slurm":
            return self.threads or self.cpus
        return max(1, cores() // self.at_once(pending))

    def runner(self, folder: Path, threads: int | None) -> Callable[[list[str]], Outcome]:
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
        if self.launcher == "process":
            return lambda argv: run_command(dmc_command(argv), env)
        return _submitit_runner(self, folder, env)


def _submitit_runner(launch: Launch, folder: Path, env: dict[str, str]) -> Callable[[list[str]], Outcome]:
    try:
        import submitit
    except ImportError:
        raise UserError(f"--launcher {launch.launcher} needs submitit: pip install 'dmc[cluster]'") from None
    executor = submitit.AutoExecutor(folder=folder / ".submitit", cluster=launch.launcher)
    params = {"timeout_min": launch.time_min, "gpus_per_node": launch.gpus, "name": f"dmc-{folder.name}"}
    if launch.cpus or launch.threads:
        params["cpus_per_task"] = launch.cpus or launch.threads
    if launch.partition:
        params["slurm_partition"] = launch.partition
    executor.update_parameters(**params)
    lock = threading.Lock()

    def run(argv: list[str]) -> Outcome:
        with lock:  # one submission at a time; the jobs then run and are waited for in parallel
            job = executor.submit(run_command, dmc_command(argv, launch.gpus), env)
        try:
            return job.result()
        except Exception as exc:  # the job itself ended badly (time limit, cancelled, node failure)
            return Outcome(1, f"job {job.job_id} failed: {str(exc).strip().splitlines()[-1][:300]}")

    return run


@dataclass
class Result:
    point: Point
    status: str  # what it was before: finished (skipped), unfinished (resumed), new (started)
    outcome: Outcome | None  # None when skipped


def run_sweep(folder: Path, grid: Grid, launch: Launch) -> list[Result]:
    """Run every point of the grid that is not finished (in parallel as `launch` says); returns what
    happened to each, in grid order. A failed run is reported and the others go on."""
    launch.check()
    points = grid.points()
    before = {p.name: status(folder / p.name) for p in points}
    todo = [p for p in points if before[p.name] != "finished"]
    done = len(points) - len(todo)
    log.info("sweep %s: %d runs, %d finished, %d to resume, %d to start", folder, len(points), done,
             sum(before[p.name] == "unfinished" for p in todo), sum(before[p.name] == "new" for p in todo))
    if not todo:
        return [Result(p, "finished", None) for p in points]
    threads = launch.threads_per_run(len(todo))
    runner = launch.runner(folder, threads)
    outcomes: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=launch.at_once(len(todo))) as pool:
        futures = {}
        for p in todo:
            futures[pool.submit(runner, p.argv(grid, folder, threads))] = p
        for future in as_completed(futures):
            p = futures[future]
            outcomes[p.name] = future.result()
            done += 1
            log.info("[%d/%d] %s", done, len(points), _ended(folder / p.name, before[p.name], outcomes[p.name]))
    return [Result(p, before[p.name], outcomes.get(p.name)) for p in points]


def _ended(path: Path, before: str, outcome: Outcome) -> str:
    what = "resumed" if before == "unfinished" else "ran"
    if outcome.code != 0:
        return f"{path.name} failed ({what}, exit {outcome.code}): {outcome.error.removeprefix('dmc: error: ')}"
    try:
        s = RunDir(path).read_summary()
    except UserError as exc:
        return f"{path.name} ended without a summary ({exc})"
    return f"{path.name} {what}: Avg {s['avg']:.2f}, Last {s['last']:.2f} ({s['wall_time_s']:.0f} s)"


def summarize(folder: Path, results: list[Result], plot: Path | None = None) -> tuple[str, int]:
    """The table of `dmc compare --by-setting` over the finished runs (mean ± std over seeds, one table per
    benchmark), its plot written to `plot` (default: `compare.png` in the folder), and how many runs failed."""
    from dmc.report import plot as plot_runs, read_runs, table  # matplotlib loads only to draw

    finished = [folder / r.point.name for r in results if status(folder / r.point.name) == "finished"]
    failed = [r for r in results if r.outcome is not None and r.outcome.code != 0]
    lines = [f"{len(failed)} of {len(results)} runs failed: " + ", ".join(r.point.name for r in failed)] if failed else []
    if not finished:
        return "\n".join(lines or ["no finished run"]), len(failed)
    runs = read_runs(finished)
    plot = plot or folder / "compare.png"
    plot_runs(runs, plot, by_setting=True)
    return "\n".join([table(runs, by_setting=True), "", f"A_t curves (mean ± std over seeds): {plot}", *lines]), len(failed)
