"""Experiment trackers (`--log csv|tensorboard|wandb`): a run's figures where users already follow runs.

What is logged: per epoch of every stage its mean loss and seconds; per task A_t, old / new accuracy,
forgetting so far and seconds; at the end Avg, Last, forgetting and the accuracy matrix as an image (the
run's `accuracy.png`). The run directory stays the record; trackers get copies of its figures.

Trackers are switched on around a library call (`tracking(...)`); the loop tells them of a run's start,
each finished task and the finished run, the optimisation loop of each epoch (`dmc.training.fit`). Each
tracker's package is an optional extra (`pip install "dmc[tensorboard]"`, `"dmc[wandb]"`); `check` says
which is missing in one line before anything runs. W&B runs offline (its files under the log folder)
unless `WANDB_MODE` says otherwise or an API key is set. Every tracker counts the seconds spent in it
(`overhead_s`), reported when it closes.
"""
from __future__ import annotations

import csv
import importlib.util
import logging
import os
import queue
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from dmc import config, metrics
from dmc.errors import UserError

log = logging.getLogger(__name__)

TRACKERS = ("csv", "tensorboard", "wandb")
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}  # tracker -> the package its extra installs
_SWEEP_RUN = re.compile(r"(?P<setting>.+)-s(?P<seed>-?\d+)")  # a sweep's run folder: <setting>-s<seed>


def check(names: list[str]) -> list[str]:
    """The trackers asked for, without repeats; an unknown one, or one whose package is not installed, is
    refused in one line naming the extra to install."""
    out = list(dict.fromkeys(names))
    for name in out:
        if name not in TRACKERS:
            raise UserError(f"unknown tracker for --log: {name!r}; choose from {', '.join(TRACKERS)}")
        package = PACKAGES.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise UserError(f"--log {name} needs the {package} package: pip install \"dmc[{name}]\"")
    return out


@dataclass
class RunInfo:
    """Where and under which names a run is logged."""

    log_dir: Path
    name: str  # the run's name in the tracker (its folder's name; a model's name for dmc learn)
    group: str | None = None  # a sweep's setting (runs of one setting over seeds), or None
    config: dict = field(default_factory=dict)


class Tracker:
    """One tracker; subclasses write. Each call is timed into `overhead_s`."""

    def __init__(self, info: RunInfo) -> None:
        self.info, self.overhead_s, self.tasks = info, 0.0, 0

    def epoch(self, stage: str, epoch: int, loss: float, seconds: float) -> None: ...

    def task(self, record: dict, R: np.ndarray) -> None: ...

    def finish(self, summary: dict, image: Path | None) -> None: ...

    def close(self) -> None: ...


def task_scalars(record: dict, R: np.ndarray) -> dict[str, float]:
    """The per-task figures: A_t, old / new accuracy, forgetting so far (over the tasks done), seconds."""
    out = {"A_t": record["A_t"], "old": record.get("old"), "new": record.get("new"),
           "forgetting": metrics.forgetting(R), "seconds": record.get("time_s", {}).get("total")}
    return {k: float(v) for k, v in out.items() if v is not None}


def stage_of(desc: str) -> tuple[int | None, str]:
    """"task 2 stage 1" -> (2, "stage 1"): the task and the stage's name within a task."""
    found = re.fullmatch(r"task (\d+) (.+)", desc)
    return (int(found[1]), found[2]) if found else (None, desc)


class CsvTracker(Tracker):
    """One long CSV per run (`<log_dir>/csv/<group>/<name>.csv`): run, group, task, stage, epoch, metric,
    value, a row per figure; appended by a resumed run."""

    COLUMNS = ["run", "group", "task", "stage", "epoch", "metric", "value"]

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        self.path = info.log_dir / "csv" / (info.group or "") / f"{info.name}.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self._file = open(self.path, "a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(self.COLUMNS)

    def _row(self, task, stage, epoch, metric, value) -> None:
        self._csv.writerow([self.info.name, self.info.group or "", task, stage, epoch, metric, value])

    def epoch(self, stage, epoch, loss, seconds) -> None:
        task, name = stage_of(stage)
        self._row(task, name, epoch, "loss", loss)
        self._row(task, name, epoch, "seconds", seconds)

    def task(self, record, R) -> None:
        for k, v in task_scalars(record, R).items():
            self._row(record["task"], "", "", k, v)
        self._file.flush()

    def finish(self, summary, image) -> None:
        for k in ("avg", "last", "forgetting"):
            self._row("", "", "", k, summary[k])
        for i, row in enumerate(summary["acc_matrix"], 1):
            for j, v in enumerate(row, 1):
                if v is not None:
                    self._row(i, "", "", f"acc_matrix[{i},{j}]", v)

    def close(self) -> None:
        self._file.close()


class TensorBoardTracker(Tracker):
    """Event files in `<log_dir>/tensorboard/<group>/<name>`: `loss/<stage>` and `epoch_seconds/<stage>`
    by the stage's epochs over the run, `task/<figure>` by task, `final/avg`, `final/last`,
    `final/forgetting` and the image `accuracy` (the run's plot of A_t and the accuracy matrix)."""

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        from torch.utils.tensorboard import SummaryWriter

        self.path = info.log_dir / "tensorboard" / (info.group or "") / info.name
        self.writer = SummaryWriter(str(self.path))
        self._steps: dict[str, int] = {}

    def epoch(self, stage, epoch, loss, seconds) -> None:
        name = stage_of(stage)[1]
        step = self._steps[name] = self._steps.get(name, 0) + 1  # the stage's epochs over all tasks
        self.writer.add_scalar(f"loss/{name}", loss, step)
        self.writer.add_scalar(f"epoch_seconds/{name}", seconds, step)

    def task(self, record, R) -> None:
        for k, v in task_scalars(record, R).items():
            self.writer.add_scalar(f"task/{k}", v, record["task"])
        self.writer.flush()

    def finish(self, summary, image) -> None:
        T = summary["tasks"]
        for k in ("avg", "last", "forgetting"):
            self.writer.add_scalar(f"final/{k}", summary[k], T)
        if image is not None and image.is_file():
            from PIL import Image

            with Image.open(image) as im:
                self.writer.add_image("accuracy", np.asarray(im.convert("RGB")), T, dataformats="HWC")  # (H, W, 3)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """A W&B run in project `dmc` (group: a sweep's setting, or the model for dmc learn), its files under
    `<log_dir>/wandb`; offline unless WANDB_MODE is set or an API key is. W&B's start (a service process)
    takes seconds: it starts, and logs, on a thread of its own, so the run does not wait for it; `close`
    waits for what is left."""

    def __init__(self, info: RunInfo) -> None:
        super().__init__(info)
        import wandb

        self.wandb, self.run, self.error = wandb, None, None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="dmc-wandb", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        info, wandb = self.info, self.wandb
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        info.log_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "dmc"), name=info.name,
                              group=info.group or info.name, dir=str(info.log_dir), config=info.config, mode=mode,
                              settings=wandb.Settings(console="off", silent=True))
        self.run.define_metric("task")
        self.run.define_metric("task/*", step_metric="task")

    def _work(self) -> None:
        """The thread: start the W&B run, then apply each queued call until None arrives."""
        try:
            self._start()
            for call in iter(self._queue.get, None):
                call()
        except Exception as exc:  # reported once by close; the run itself goes on
            self.error = exc
            while self._queue.get() is not None:  # drain, so that close does not wait forever
                pass

    def epoch(self, stage, epoch, loss, seconds) -> None:
        name = stage_of(stage)[1]
        self._queue.put(lambda: self.run.log({f"loss/{name}": loss, f"epoch_seconds/{name}": seconds}))

    def task(self, record, R) -> None:
        values = {"task": record["task"], **{f"task/{k}": v for k, v in task_scalars(record, R).items()}}
        self._queue.put(lambda: self.run.log(values))

    def finish(self, summary, image) -> None:
        def write() -> None:
            for k in ("avg", "last", "forgetting"):
                self.run.summary[k] = summary[k]
            self.run.summary["acc_matrix"] = summary["acc_matrix"]
            if image is not None and image.is_file():
                self.run.log({"accuracy": self.wandb.Image(str(image))})

        self._queue.put(write)

    def close(self) -> None:
        self._queue.put(lambda: self.run.finish())
        self._queue.put(None)
        self._thread.join()
        if self.error is not None:
            log.warning("--log wandb stopped: %s", str(self.error).splitlines()[0] if str(self.error) else
                        type(self.error).__name__)


KINDS = {"csv": CsvTracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker}


# ---------------------------------------------------------------- switched on around a library call
@dataclass
class _Active:
    names: list[str]
    log_dir: Path
    name: str | None  # the run's name in the trackers (None: its run directory's name)
    trackers: list[Tracker] = field(default_factory=list)


_ACTIVE: list[_Active] = []


@contextmanager
def tracking(names: list[str], log_dir: str | Path = "logs", name: str | None = None) -> Iterator[None]:
    """Trackers `names` for the runs started inside the block (none: nothing happens); they are closed,
    and their overhead reported, when the block ends."""
    if not names:
        yield
        return
    from dmc.training import fit  # torch loads with the run, not with the command line's checks

    active = _Active(check(names), Path(log_dir).absolute(), name)
    _ACTIVE.append(active)
    fit.EPOCH_LISTENERS.append(_epoch)
    try:
        yield
    finally:
        fit.EPOCH_LISTENERS.remove(_epoch)
        _ACTIVE.remove(active)
        _close(active)


def _timed(tracker: Tracker, method: str, *args) -> None:
    start = time.perf_counter()
    try:
        getattr(tracker, method)(*args)
    finally:
        tracker.overhead_s += time.perf_counter() - start


def begin(run_dir: Path | None, cfg) -> None:
    """A run starts (or resumes) in `run_dir` (None on ranks that write no run directory): the active
    trackers open, named by the run (a sweep's run `<setting>-s<seed>` is grouped by its setting)."""
    if not _ACTIVE or run_dir is None:
        return
    active = _ACTIVE[-1]
    _close(active)
    name = active.name or run_dir.name
    found = _SWEEP_RUN.fullmatch(run_dir.name) if os.environ.get("DMC_LOG_SWEEP") else None
    group = f"{os.environ['DMC_LOG_SWEEP']}/{found['setting']}" if found else None
    info = RunInfo(active.log_dir, name, group, config.to_dict(cfg))
    for kind in active.names:
        start = time.perf_counter()
        tracker = KINDS[kind](info)
        tracker.overhead_s += time.perf_counter() - start
        active.trackers.append(tracker)


def _epoch(stage: str, epoch: int, loss: float, seconds: float) -> None:
    for tracker in _ACTIVE[-1].trackers if _ACTIVE else []:
        _timed(tracker, "epoch", stage, epoch, loss, seconds)


def task_done(record: dict, R: np.ndarray) -> None:
    """Task `record["task"]` is written; `R` is the accuracy matrix of the tasks done (t x t)."""
    for tracker in _ACTIVE[-1].trackers if _ACTIVE else []:
        tracker.tasks += 1
        _timed(tracker, "task", record, R)


def run_done(summary: dict, image: Path | None) -> None:
    """The run is finished: its summary and its plot (`accuracy.png`)."""
    for tracker in _ACTIVE[-1].trackers if _ACTIVE else []:
        _timed(tracker, "finish", summary, image)


def _close(active: _Active) -> None:
    for tracker in active.trackers:
        _timed(tracker, "close")
        per_task = tracker.overhead_s / max(tracker.tasks, 1)
        log.info("--log %s: %.3f s in all, %.3f s per task", type(tracker).__name__.removesuffix("Tracker").lower(),
                 tracker.overhead_s, per_task)
    active.trackers = []
