"""The run directory: resolved config, class plan, per-task metrics lines, checkpoints, summary, plot.

A run is finished exactly when `summary.json` exists (it is written last, atomically). A finished run is
never overwritten; an unfinished one is continued with `--resume`. The format is defined here once, below
both the loop that writes run directories and the report that reads them.

What keeps a run directory whole, whatever happens to the process that writes it:
- every file is written beside its target and renamed over it (`dmc.files`), so a killed run leaves
  either the old file or the new one;
- `run.json`, written when the run starts, records digests of the resolved config and of the plan, and
  `--resume` refuses a run whose `config.yaml` or class plan no longer match them (a hand edit);
- a process owns the folder through an OS lock on `.lock` (a POSIX record lock: it dies with the process,
  so a killed run can be resumed at once, and data-loader workers forked from the owner do not inherit it),
  and a second process is refused in one line instead of writing beside it;
- on resume, an unreadable metrics line or checkpoint (a copy cut short, a full disk) is detected and the
  run continues after the last task whose line and checkpoint are both good;
- a folder whose run finished no task holds nothing worth keeping: a new run may take it over, so the
  advice of an error ("--set vision.lr=1e-5") works on the same `--out`.

Tasks are numbered for people, from 1: the first task is `task 1` in the console, `"task": 1` in
`metrics.jsonl` and `checkpoints/task_01.safetensors`. Run directories written before (numbered from 0)
are read, resumed and continued in their own numbering; every method here takes and returns tasks from 1.

The process that owns the folder also keeps its console log there (`run.log`: what the run logged, and
the error or traceback it stopped on).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

from typing import TYPE_CHECKING

from dmc import faults
from dmc.errors import UserError
from dmc.files import atomic_path, write_text

if TYPE_CHECKING:  # torch is imported where checkpoints are read or written, so reading a run is quick
    import torch

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented in the README's limits)
    fcntl = None

log = logging.getLogger(__name__)

CONFIG, PLAN, METRICS, SUMMARY, PLOT = "config.yaml", "plan.json", "metrics.jsonl", "summary.json", "accuracy.png"
STATE, LOCK, CHECKPOINTS, SPLIT, LOG = "run.json", ".lock", "checkpoints", "split.txt", "run.log"
VAL = "val_rows.json"  # the validation split: fraction, seed and the held-out training-set rows
# What a run directory may hold; anything else means the folder is not (only) a run, and is left alone.
KNOWN = {CONFIG, PLAN, METRICS, SUMMARY, PLOT, STATE, LOCK, CHECKPOINTS, SPLIT, LOG, VAL}


def default_out(benchmark: str, method: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{benchmark}-{method}"


def digest(tree: object) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys): what `run.json` records."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode("utf-8")).hexdigest()


_HELD: set[Path] = set()  # folders this process has locked (POSIX locks do not exclude their own process)


def _number_of(name: str) -> int | None:
    """`task_07.safetensors` -> 7 (the number in the file name); None for any other name."""
    stem = name.removesuffix(".safetensors")
    return int(stem[5:]) if stem.startswith("task_") and stem[5:].isdigit() and stem != name else None


def _is_temporary(name: str) -> bool:
    """Temporary files of `dmc.files.atomic_path` (`.name.PID.tmp.suffix`), left behind by a killed run."""
    return name.startswith(".") and ".tmp" in name


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._log: logging.Handler | None = None
        self._level_before: int | None = None
        self._first: int | None = None  # the number of the first task in the files: 1, or 0 (older runs)

    # ---------------------------------------------------------------- owning a folder
    @classmethod
    def create(cls, path: Path) -> "RunDir":
        """Take `path` for a new run: created if missing, locked, and emptied if it holds a run that
        finished no task. Refused (one line) when it holds a finished run, a run with finished tasks,
        other files, or is owned by another process."""
        rundir = cls(path)
        rundir._acquire()
        try:
            rundir._check_new()
            rundir._clear()
            rundir._start_log()
        except BaseException:
            rundir.close()
            raise
        return rundir

    @staticmethod
    def config_of(path: Path) -> Path:
        """The saved config of the run at `path`, which must exist (else: not a run, one line)."""
        if not (Path(path) / CONFIG).is_file():
            raise UserError(f"{path} is not a run directory (no {CONFIG}); nothing to resume")
        return Path(path) / CONFIG

    @classmethod
    def open_for_resume(cls, path: Path, lock: bool = True) -> "RunDir":
        """An unfinished run to continue; locked unless `lock` is false (torchrun ranks other than 0)."""
        path = Path(path)
        cls.config_of(path)
        rundir = cls(path)
        if lock:
            rundir._acquire()
        if (path / SUMMARY).exists():
            rundir.close()
            raise UserError(f"{path} is already finished; nothing to resume")
        if lock:
            rundir._start_log()
        return rundir

    def _acquire(self) -> None:
        """Create the folder if needed and hold its lock until `close` or the end of the process."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder; choose a folder for the run")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot create the run directory {self.path}: {exc.strerror or exc}") from None
        key = self.path.resolve()
        try:
            if key in _HELD:
                raise BlockingIOError
            if fcntl is not None:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UserError(f"{self.path} is in use by another dmc run (pid {owner}); wait for it to end "
                            "or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        _HELD.add(key)

    def close(self) -> None:
        """Stop the log and release the lock (the OS releases it too when the process ends, however it ends)."""
        self._stop_log()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor drops the process's lock
            self._lock_fd = None
            _HELD.discard(self.path.resolve())

    def _check_new(self) -> None:
        if (self.path / SUMMARY).exists():
            raise UserError(f"{self.path} holds a finished run; choose another --out (finished runs are never overwritten)")
        done = self.done_tasks()
        if done:
            raise UserError(f"{self.path} holds an unfinished run ({done} tasks done); continue it with "
                            f"--resume {self.path}, or choose another --out to start over with other settings")
        other = sorted(e.name for e in self.path.iterdir() if e.name not in KNOWN and not _is_temporary(e.name))
        if other:
            raise UserError(f"--out {self.path} holds files that are not a dmc run (first: {other[0]}); "
                            "choose a new or empty folder")

    def _clear(self) -> None:
        """Remove what a run that finished no task left behind; the lock stays."""
        left = [e for e in self.path.iterdir() if e.name != LOCK]
        if any(e.name in (CONFIG, METRICS) for e in left):
            log.info("%s held a run that finished no task; starting it again", self.path)
        for entry in left:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        (self.path / CHECKPOINTS).mkdir()

    # ---------------------------------------------------------------- the console log
    def _start_log(self) -> None:
        """Append what dmc logs (INFO and up) to `run.log` while this process owns the folder."""
        handler = logging.FileHandler(self.path / LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handler.setLevel(logging.INFO)
        logger = logging.getLogger("dmc")
        if logger.getEffectiveLevel() > logging.INFO:  # a library caller that configured no logging
            self._level_before = logger.level
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        self._log = handler

    def _stop_log(self) -> None:
        if self._log is None:
            return
        logger = logging.getLogger("dmc")
        logger.removeHandler(self._log)
        self._log.close()
        self._log = None
        if self._level_before is not None:
            logger.setLevel(self._level_before)
            self._level_before = None

    def log_failure(self, exc: BaseException) -> None:
        """Record in `run.log` (only: the console shows it already) why the run stopped: the one line of
        a user error, or the traceback of anything else."""
        if self._log is None:
            return
        if isinstance(exc, UserError):
            msg, info = f"error: {exc}", None
        elif isinstance(exc, KeyboardInterrupt):
            msg, info = "interrupted", None
        else:
            msg, info = "the run stopped on an internal error", (type(exc), exc, exc.__traceback__)
        self._log.handle(logging.LogRecord("dmc", logging.ERROR, __file__, 0, msg, None, info))

    # ---------------------------------------------------------------- the record of what the run is
    def seal(self, config_sha256: str, plan_sha256: str) -> None:
        """Record the digests of the resolved config and the plan (after `config.yaml` and `plan.json`)."""
        write_text(self.path / STATE, json.dumps({"config_sha256": config_sha256, "plan_sha256": plan_sha256},
                                                 indent=1))

    def verify(self, config_sha256: str, plan_sha256: str) -> None:
        """Refuse to continue a run whose config or plan differ from those it started with."""
        try:
            state = json.loads((self.path / STATE).read_text())
        except FileNotFoundError:
            log.warning("%s has no %s (made by an older dmc): its config.yaml cannot be checked", self.path, STATE)
            return
        except (OSError, json.JSONDecodeError):
            raise UserError(f"{self.path / STATE} is unreadable; the run cannot be checked, so it is not resumed")
        if state.get("config_sha256") != config_sha256:
            raise UserError(f"{self.path / CONFIG} was changed after the run started (its digest differs from "
                            f"{STATE}); restore it, or start a new run with the new settings and another --out")
        if state.get("plan_sha256") != plan_sha256:
            raise UserError(f"the class plan of {self.path} differs from the one it started with (class order "
                            "file or dataset changed); restore it, or start a new run with another --out")

    # ---------------------------------------------------------------- metrics and checkpoints
    def _lines(self) -> list[str]:
        f = self.path / METRICS
        return [line for line in f.read_text(errors="replace").splitlines() if line.strip()] if f.exists() else []

    def _numbering(self) -> int:
        """The number of the first task in this folder's files: 0 for runs written before tasks were
        numbered from 1 (their first metrics line says `"task": 0`), else 1."""
        if self._first is None:
            lines = self._lines()
            try:
                self._first = 0 if lines and json.loads(lines[0]).get("task") == 0 else 1
            except (json.JSONDecodeError, AttributeError):
                self._first = 1
        return self._first

    def _read_records(self) -> tuple[list[dict], int | None]:
        """The metrics lines up to the first unreadable one (tasks numbered from 1, whatever the file's
        numbering), and that line's number (None if all read)."""
        out: list[dict] = []
        shift = 1 - self._numbering()
        for number, line in enumerate(self._lines(), start=1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                return out, number
            if not isinstance(rec, dict) or rec.get("task") != len(out) + 1 - shift:
                return out, number
            out.append({**rec, "task": rec["task"] + shift})
        return out, None

    def records(self) -> list[dict]:
        return self._read_records()[0]

    def done_tasks(self) -> int:
        """Number of leading tasks with a metrics line whose last one also has a checkpoint file."""
        n = len(self.records())
        while n > 0 and not self.checkpoint_path(n).exists():
            n -= 1
        return n

    def resume_point(self) -> tuple[int, dict[str, torch.Tensor] | None, list[str]]:
        """Where a resumed run continues: (tasks done, the last one's checkpoint, notes on what was
        unreadable). Tasks are done when their metrics line and the checkpoint of the last of them read."""
        records, bad_line = self._read_records()
        notes = [f"{METRICS} line {bad_line} is unreadable"] if bad_line is not None else []
        n = len(records)
        while n > 0:
            path = self.checkpoint_path(n)
            if path.exists():
                try:
                    return n, self.load_checkpoint(n), notes
                except Exception as exc:  # safetensors raises its own error types for a cut file
                    notes.append(f"checkpoint {path.name} is unreadable ({type(exc).__name__})")
            n -= 1
        return 0, None, notes

    def keep_tasks(self, n: int) -> list[dict]:
        """Drop everything after task n (metrics lines, later checkpoints, temporary files); returns the
        kept metrics lines. The writer calls it once before continuing a run."""
        recs = self.records()[:n]
        last = self._numbering() + n - 1  # the file number of task n
        self._write_records(recs)
        for ckpt in (self.path / CHECKPOINTS).glob("*"):
            number = _number_of(ckpt.name)
            if _is_temporary(ckpt.name) or (number is not None and number > last):
                ckpt.unlink()
        for entry in self.path.iterdir():
            if _is_temporary(entry.name):
                entry.unlink()
        return recs

    def append_record(self, record: dict) -> None:
        self._write_records([*self.records(), record])

    def _write_records(self, records: list[dict]) -> None:
        """The whole file is rewritten (a few lines per task): a killed run never leaves half a line.
        `records` number tasks from 1; the file keeps its own numbering (an empty file starts afresh)."""
        first = self._numbering() if records else 1
        with atomic_path(self.path / METRICS) as tmp:
            tmp.write_text("".join(json.dumps({**r, "task": r["task"] - 1 + first}) + "\n" for r in records),
                           encoding="utf-8")
            faults.point(f"write:{METRICS}")
        self._first = first

    def checkpoint_path(self, task: int) -> Path:
        """The checkpoint after task `task` (from 1): `task_01.safetensors` for the first task."""
        return self.path / CHECKPOINTS / f"task_{task - 1 + self._numbering():02d}.safetensors"

    def checkpoints(self) -> list[int]:
        """The tasks (from 1) whose checkpoint file is present."""
        shift = 1 - self._numbering()
        found = (_number_of(p.name) for p in (self.path / CHECKPOINTS).glob("task_*.safetensors"))
        return sorted(n + shift for n in found if n is not None and n + shift >= 1)

    def save_checkpoint(self, task: int, state: dict[str, torch.Tensor], keep: str = "all") -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        path = self.checkpoint_path(task)
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"task": str(_number_of(path.name))})
            faults.point(f"write:{path.name}")
        if keep == "last" and task > 1:
            self.checkpoint_path(task - 1).unlink(missing_ok=True)

    def load_checkpoint(self, task: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.checkpoint_path(task)))

    # ---------------------------------------------------------------- using what was trained
    def plan(self) -> dict:
        """The class plan the run recorded (`plan.json`: class order, each task's class names)."""
        try:
            plan = json.loads((self.path / PLAN).read_text())
        except (OSError, json.JSONDecodeError):
            plan = None
        if not isinstance(plan, dict) or not isinstance(plan.get("tasks"), list):
            raise UserError(f"{self.path} has no readable {PLAN}: not a run directory")
        return plan

    def trained_task(self, task: int | None = None) -> int:
        """The task (from 1) whose trained model to use: `task`, or by default the last one of a finished
        run. Refused in one line when the folder is not a run, or that task is out of range, not finished or
        has no checkpoint."""
        if not self.path.is_dir():
            raise UserError(f"no such run directory: {self.path}")
        if not (self.path / CONFIG).is_file():
            raise UserError(f"{self.path} is not a run directory (no {CONFIG})")
        n_tasks, done = len(self.plan()["tasks"]), self.done_tasks()
        if task is None:
            if not (self.path / SUMMARY).exists():
                which = f"; or use one of its finished tasks (1..{done})" if done else ""
                raise UserError(f"{self.path} is an unfinished run ({done} of {n_tasks} tasks done): finish it with "
                                f"dmc run --resume {self.path}{which}")
            task = n_tasks
        if not 1 <= task <= n_tasks:
            raise UserError(f"task {task} is out of range: {self.path} has tasks 1..{n_tasks}")
        if task > done:
            raise UserError(f"task {task} of {self.path} is not finished ({done} of {n_tasks} tasks done)")
        if not self.checkpoint_path(task).exists():
            kept = ", ".join(map(str, self.checkpoints())) or "none"
            raise UserError(f"{self.path} kept no checkpoint of task {task} (checkpoint.keep=last keeps only the "
                            f"last task's); tasks with a checkpoint: {kept}")
        return task

    def write_summary(self, summary: dict) -> None:
        write_text(self.path / SUMMARY, json.dumps(summary, indent=1))

    def read_summary(self) -> dict:
        try:
            return json.loads((self.path / SUMMARY).read_text())
        except (OSError, json.JSONDecodeError):
            raise UserError(f"{self.path} has no readable {SUMMARY}: not a finished run") from None
