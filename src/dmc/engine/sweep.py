"""Sweeps: a grid of runs (benchmarks x methods x `--set` alternatives x seeds) in one folder.

Each run is an ordinary `dmc run` in its own run directory, named so that people and `dmc compare
--by-setting` can read it: `<benchmark>-<method>[-<setting>]-s<seed>`, where the setting lists the `--set`
keys that vary (`glyphs-dmc-ot-vision.lr=1e-5-s1`). The grid is recorded in the folder (`sweep.yaml`,
`dmc.engine.grid`), so the same command, or `dmc sweep --out DIR` alone, continues it: finished runs are
skipped, unfinished ones resumed (`dmc run --resume`), and the rest started.

Where runs go is the launcher's business, never the grid's:
- `process` (default): child processes on this machine, `jobs` at a time, each with cores // jobs threads;
  a child follows its sweep: if the sweep's process dies (killed, even by SIGKILL), its runs stop too
  (interrupted, resumable) instead of running on unseen and holding their folders;
- `local`: submitit's local executor, the same path as a cluster's, on this machine;
- `slurm`: submitit's Slurm executor (partition, GPUs per run, time limit); a run with more than one GPU
  is started by torchrun. Cluster jobs outlive the command that submitted them, by design.
Every launcher runs the same command line, `python -m dmc run ...`, and reports its exit code and the
error line it ended on.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dmc.engine.grid import GRID, Grid, Point, open_sweep, status
from dmc.errors import UserError
from dmc.rundir import RunDir

__all__ = ["GRID", "LAUNCHERS", "Grid", "Launch", "Outcome", "Point", "Result", "follow_parent", "open_sweep",
           "run_sweep", "status", "summarize"]
STOPPED = "not started: the sweep was interrupted"  # the outcome of a run a stopped sweep never started
PARENT = "DMC_SWEEP_PARENT"  # set for a sweep's child processes: the pid of the sweep they belong to
BUSY = "is in use by another dmc run"  # the line of a run whose folder another process holds

log = logging.getLogger(__name__)

LAUNCHERS = ("process", "local", "slurm")


# --------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """How one run of the sweep ended: its exit code and, if it failed, the line it failed with."""

    code: int
    error: str = ""


def run_command(cmd: list[str], env: dict[str, str] | None = None, children: Children | None = None) -> Outcome:
    """Run one `dmc run` command line to its end (here, or inside a cluster job). With `children`, the
    process is started only if the sweep is not stopping, and is known to it while it runs (so that one
    Ctrl-C stops it)."""
    popen = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                 stdin=subprocess.DEVNULL)
    if children is None:
        proc = subprocess.Popen(cmd, **popen)
    else:
        proc = children.start(cmd, popen)
        if proc is None:
            return Outcome(130, f"dmc: error: {STOPPED}")
    try:
        _, err = proc.communicate()
    finally:
        if children is not None:
            children.forget(proc)
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("dmc: error:")]
    return Outcome(proc.returncode, (errors or lines or [""])[-1])


class Children:
    """The runs a sweep started on this machine: once `stop` is called (the first Ctrl-C), no run starts
    and every running one is sent SIGINT, which stops it as Ctrl-C stops `dmc run` (resumable)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen] = set()
        self.stopped = False

    def start(self, cmd: list[str], popen: dict) -> subprocess.Popen | None:
        with self._lock:
            if self.stopped:
                return None
            proc = subprocess.Popen(cmd, **popen)
            self._running.add(proc)
            return proc

    def forget(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._running.discard(proc)

    def stop(self, sig: int = signal.SIGINT) -> None:
        with self._lock:
            self.stopped = True
            for proc in self._running:
                if proc.poll() is None:
                    proc.send_signal(sig)

    def wait(self) -> None:
        """Wait for the stopped runs to end (each writes why it stopped); a second Ctrl-C kills them."""
        with self._lock:
            running = list(self._running)
        try:
            for proc in running:
                proc.wait()
        except KeyboardInterrupt:
            self.stop(signal.SIGKILL)  # a killed run is resumable too, from its last whole task


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

    def runner(self, folder: Path, threads: int | None, children: Children) -> Callable[[list[str]], Outcome]:
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else {}
        if self.launcher == "process":
            env[PARENT] = str(os.getpid())
            return lambda argv: run_command(dmc_command(argv), env, children)
        return _submitit_runner(self, folder, env, children)


def _submitit_runner(launch: Launch, folder: Path, env: dict[str, str],
                     children: Children) -> Callable[[list[str]], Outcome]:
    if launch.launcher == "slurm" and shutil.which("srun") is None:
        raise UserError("--launcher slurm needs Slurm, and this machine has none (no srun on PATH); run the "
                        "sweep on the cluster's login node, or use --launcher process or local here")
    try:
        import submitit
    except ImportError:
        raise UserError(f"--launcher {launch.launcher} needs submitit: pip install 'dmc[cluster]'") from None
    try:
        executor = submitit.AutoExecutor(folder=folder / ".submitit", cluster=launch.launcher)
    except RuntimeError as exc:  # submitit finds no cluster of that kind
        raise UserError(f"--launcher {launch.launcher}: {str(exc).splitlines()[0]}; use --launcher process "
                        "or local on this machine") from None
    params = {"timeout_min": launch.time_min, "gpus_per_node": launch.gpus, "name": f"dmc-{folder.name}"}
    if launch.cpus or launch.threads:
        params["cpus_per_task"] = launch.cpus or launch.threads
    if launch.partition:
        params["slurm_partition"] = launch.partition
    executor.update_parameters(**params)
    lock = threading.Lock()

    def run(argv: list[str]) -> Outcome:
        with lock:  # one submission at a time; the jobs then run and are waited for in parallel
            if children.stopped:  # a stopped sweep submits nothing more
                return Outcome(130, f"dmc: error: {STOPPED}")
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
    children = Children()
    runner = launch.runner(folder, threads, children)
    outcomes: dict[str, Outcome] = {}
    pool = ThreadPoolExecutor(max_workers=launch.at_once(len(todo)))
    try:
        futures = {pool.submit(runner, p.argv(grid, folder, threads)): p for p in todo}
        for future in as_completed(futures):
            p = futures[future]
            outcomes[p.name] = future.result()
            done += 1
            log.info("[%d/%d] %s", done, len(points), _ended(folder / p.name, before[p.name], outcomes[p.name]))
    except KeyboardInterrupt:  # one Ctrl-C: nothing more starts, the running runs stop (resumable)
        children.stop()
        pool.shutdown(wait=False, cancel_futures=True)
        children.wait()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [Result(p, before[p.name], outcomes.get(p.name)) for p in points]


def _ended(path: Path, before: str, outcome: Outcome) -> str:
    what = "resumed" if before == "unfinished" else "ran"
    if outcome.code != 0 and BUSY in outcome.error:
        why = outcome.error.split(": ", 1)[-1]
        return f"{path.name} is still running in another process (not started again): {why}"
    if outcome.code != 0:
        return f"{path.name} failed ({what}, exit {outcome.code}): {outcome.error.removeprefix('dmc: error: ')}"
    try:
        s = RunDir(path).read_summary()
    except UserError as exc:
        return f"{path.name} ended without a summary ({exc})"
    return f"{path.name} {what}: Avg {s['avg']:.2f}, Last {s['last']:.2f} ({s['wall_time_s']:.0f} s)"


def summarize(folder: Path, results: list[Result], plot: Path | None = None) -> tuple[str, int]:
    """The table of `dmc compare --by-setting` over the finished runs (mean ± std over seeds, one table per
    benchmark), its plot written to `plot` (default: `compare.png` in the folder), and how many runs did
    not finish. A run is judged by its folder at the end: one that another process finished meanwhile is
    finished, not failed; one still running elsewhere is said to be."""
    from dmc.report import plot as plot_runs, read_runs, table  # matplotlib loads only to draw

    now = {r.point.name: status(folder / r.point.name) for r in results}
    finished = [folder / r.point.name for r in results if now[r.point.name] == "finished"]
    open_ = [r for r in results if r.outcome is not None and r.outcome.code != 0 and now[r.point.name] != "finished"]
    busy = [r.point.name for r in open_ if BUSY in r.outcome.error]
    failed = [r.point.name for r in open_ if BUSY not in r.outcome.error]
    lines = [f"{len(failed)} of {len(results)} runs failed: " + ", ".join(failed)] if failed else []
    lines += [f"{len(busy)} of {len(results)} runs are still running in other processes (run the sweep again when "
              "they end): " + ", ".join(busy)] if busy else []
    if not finished:
        return "\n".join(lines or ["no finished run"]), len(open_)
    runs = read_runs(finished)
    plot = plot or folder / "compare.png"
    try:
        plot_runs(runs, plot, by_setting=True)
        drawn = f"A_t curves (mean ± std over seeds): {plot}"
    except UserError as exc:  # a full or read-only disk: the table is still worth printing
        drawn = f"no plot: {exc}"
    return "\n".join([table(runs, by_setting=True), "", drawn, *lines]), len(open_)


def follow_parent() -> None:
    """In a sweep's child run (`DMC_SWEEP_PARENT` set): stop this run, as Ctrl-C would (it stays
    resumable), as soon as the sweep's process is gone, so that no run goes on unseen after its sweep was
    killed. SIGINT is made to raise KeyboardInterrupt here even if it was ignored when the process started
    (a sweep started in the background), so that the sweep's Ctrl-C and its death both stop the run. On
    Linux the kernel sends it when the sweep dies (the parent-death signal: no thread has to be scheduled
    for it, however loaded the machine); elsewhere a daemon thread checks the parent once a second."""
    parent = os.environ.get(PARENT)
    if not parent or not parent.isdigit() or os.getppid() != int(parent):
        return
    signal.signal(signal.SIGINT, _interrupt_once)
    if _parent_death_signal(signal.SIGINT):
        if os.getppid() != int(parent):  # the sweep died before the kernel was told: stop now
            os.kill(os.getpid(), signal.SIGINT)
        return

    def watch() -> None:
        while os.getppid() == int(parent):
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="follow-sweep", daemon=True).start()


def _interrupt_once(signum: int, frame: object) -> None:
    """SIGINT in a sweep's run: stop as Ctrl-C stops it, once. A terminal's Ctrl-C reaches the run and its
    sweep, which then passes it on: the second one must not cut the first stop short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send `sig` to this process when its parent ends (Linux `prctl(PR_SET_PDEATHSIG)`);
    False where the platform has no such call."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(sig), 0, 0, 0) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False
