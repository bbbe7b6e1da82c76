"""Writing a run directory: the one process that owns it records the run, task by task.

A new run takes a folder (`RunWriter.create`): a new or empty one, or one dmc marked whose run finished no
task, whose files dmc then removes (only those it wrote). An unfinished run is continued
(`RunWriter.resume`). Each task ends with its checkpoint (its sha256 taken as it is written), then its
metrics line (sealed with its own digest and the checkpoint's), then the previous checkpoint is dropped
under `checkpoint.keep=last`: a run killed between any two of these steps resumes to the same result.
Every file is written beside its target and renamed over it (`dmc.files`); a disk that is full or
read-only stops the run in one line, and `--resume` continues after the last task written whole.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dmc import faults
from dmc.errors import UserError
from dmc.files import atomic_path, write_text
from dmc.rundir.layout import (CHECKPOINTS, LOCK, MARKER, METRICS, STATE, SUMMARY, digest, file_sha256,
                               foreign_files, number_of, temporary_of, written_here, written_in_checkpoints)
from dmc.rundir.own import Ownership, mark
from dmc.rundir.read import RunDir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class RunWriter:
    """The owner of a run directory: `run` reads it, the methods below write it, `close` ends it all."""

    def __init__(self, run: RunDir, owner: Ownership) -> None:
        self.run, self.owner = run, owner

    @property
    def path(self) -> Path:
        return self.run.path

    # ---------------------------------------------------------------- taking a folder
    @classmethod
    def create(cls, path: Path) -> RunWriter:
        """Take `path` for a new run: created and marked if new or empty, locked, and emptied of what dmc
        wrote there if it holds a run that finished no task. Refused (one line) when it holds a finished
        run, a run with finished tasks, files dmc did not write, or is owned by another process."""
        path = Path(path)
        mark(path)
        writer = cls(RunDir(path), Ownership(path))
        try:
            writer.owner.acquire()
            _check_new(writer.run)
            _clear(path)
            writer.owner.start_log()
        except BaseException:
            writer.owner.close()
            raise
        return writer

    @classmethod
    def resume(cls, path: Path) -> RunWriter:
        """An unfinished run to continue, locked; refused when finished or when its records disagree."""
        run = RunDir(path)
        check_resumable(run)
        writer = cls(run, Ownership(run.path))
        try:
            writer.owner.acquire()
            if (run.path / SUMMARY).exists():
                raise UserError(f"{run.path} is already finished; nothing to resume")
            writer.owner.start_log()
        except BaseException:
            writer.owner.close()
            raise
        return writer

    def close(self, exc: BaseException | None = None) -> None:
        """The one way a run lets go of its folder: why it stopped goes to `run.log` (when it failed), then
        the log stops and the lock is released."""
        if exc is not None:
            self.owner.log_failure(exc)
        self.owner.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.close(exc)

    # ---------------------------------------------------------------- the record of what the run is
    def seal(self, config_sha256: str, plan_sha256: str, threads: int | None = None) -> None:
        """Record the digests of the resolved config and the plan (after `config.yaml` and `plan.json`),
        and the torch threads the run computes with (CPU sums are split by thread)."""
        state = {"config_sha256": config_sha256, "plan_sha256": plan_sha256}
        if threads is not None:
            state["threads"] = threads
        self._write(STATE, lambda: write_text(self.path / STATE, json.dumps(state, indent=1)))

    def adopt(self) -> None:
        """Mark a run made before dmc marked its folders, once its records are checked (`RunDir.verify`):
        from then on dmc may remove what it wrote there, as in any run directory it created."""
        if not self.run.is_marked():
            self._write(MARKER, lambda: write_text(self.path / MARKER, "a dmc run directory\n"))

    # ---------------------------------------------------------------- tasks
    def finish_task(self, record: dict, state: dict[str, torch.Tensor], keep: str = "all") -> None:
        """Write task `record["task"]`: its checkpoint, then its metrics line with the checkpoint's digest,
        then (keep="last") drop the previous checkpoint."""
        task = record["task"]
        sha = self.save_checkpoint(task, state)
        self._write_records([*self.run.records(), {**record, "checkpoint_sha256": sha}])
        if keep == "last" and task > 1:
            self._write(CHECKPOINTS, lambda: self.run.checkpoint_path(task - 1).unlink(missing_ok=True))

    def save_checkpoint(self, task: int, state: dict[str, torch.Tensor]) -> str:
        """Write checkpoint `task`; returns the sha256 of the file (taken before it replaces the old one)."""
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        path = self.run.checkpoint_path(task)

        def write() -> str:
            with atomic_path(path) as tmp:
                try:
                    save_file(state, str(tmp), metadata={"task": str(number_of(path.name))})
                except Exception as exc:  # SafetensorError for a full or read-only disk
                    raise OSError(_reason(exc)) from None
                sha = file_sha256(tmp)
                faults.point(f"write:{path.name}")
            return sha

        return self._write(path.name, write)

    def keep_tasks(self, n: int) -> list[dict]:
        """Drop everything after task n (metrics lines, later checkpoints, dmc's temporary files); returns
        the kept metrics lines. The writer calls it once before continuing a run."""
        recs = self.run.records()[:n]
        last = self.run._numbering() + n - 1  # the file number of task n
        self._write_records(recs)
        for ckpt in (self.path / CHECKPOINTS).glob("*"):
            number = number_of(ckpt.name)
            stray = temporary_of(ckpt.name) and written_in_checkpoints(ckpt.name)
            if stray or (number is not None and number > last):
                ckpt.unlink()
        for entry in self.path.iterdir():
            if temporary_of(entry.name) and written_here(entry.name):
                entry.unlink()
        return recs

    def _write_records(self, records: list[dict]) -> None:
        """The whole file is rewritten (a few lines per task): a killed run never leaves half a line. Each
        line is sealed with the digest of its content. `records` number tasks from 1; the file keeps its
        own numbering (an empty file starts afresh)."""
        first = self.run._numbering() if records else 1
        lines = []
        for r in records:
            rec = {k: v for k, v in r.items() if k != "sha256"} | {"task": r["task"] - 1 + first}
            lines.append(json.dumps({**rec, "sha256": digest(rec)}) + "\n")

        def write() -> None:
            with atomic_path(self.path / METRICS) as tmp:
                tmp.write_text("".join(lines), encoding="utf-8")
                faults.point(f"write:{METRICS}")

        self._write(METRICS, write)
        self.run._first = first

    def write_summary(self, summary: dict) -> None:
        self._write(SUMMARY, lambda: write_text(self.path / SUMMARY, json.dumps(summary, indent=1)))

    def _write(self, what: str, write):
        """Run one write of the folder, after checking that this process still owns it; a full or
        read-only disk ends the run in one line."""
        self.owner.check()
        try:
            return write()
        except OSError as exc:
            raise UserError(f"cannot write {what} in {self.path}: {exc.strerror or exc}") from None


def check_resumable(run: RunDir) -> None:
    """What `--resume` needs before anything loads: a run directory with its config, its plan and the
    record of their digests (a folder holding only a copied config.yaml is not a run)."""
    if not (run.path / "config.yaml").is_file():
        raise UserError(f"{run.path} is not a run directory (no config.yaml); nothing to resume")
    run.state()
    run.plan()


def _check_new(run: RunDir) -> None:
    """A marked folder may be taken by a new run only if its run finished no task and nothing in it is
    someone else's; otherwise one line says what it holds and what to do."""
    path = run.path
    if (path / SUMMARY).exists():
        raise UserError(f"{path} holds a finished run; choose another --out (finished runs are never overwritten)")
    done, kept = run.done_tasks(), run.checkpoints()
    if done:
        raise UserError(f"{path} holds an unfinished run ({done} tasks done); continue it with "
                        f"--resume {path}, or choose another --out to start over with other settings")
    if kept or run._lines():
        what = f"the checkpoint of task {kept[-1]}" if kept else f"unreadable {METRICS} lines"
        raise UserError(f"{path} holds {what} but no finished task: its records disagree ({METRICS} lost or "
                        f"cut?); restore it and --resume {path}, or choose another --out")
    other = foreign_files(path)
    if other:
        raise UserError(f"--out {path} holds files dmc did not write (first: {other[0]}); move them, or choose "
                        "another --out (dmc never removes files it did not write)")


def _clear(path: Path) -> None:
    """Remove what a run that finished no task wrote (`_check_new` found nothing else); the mark and the
    lock stay."""
    left = [e for e in path.iterdir() if e.name not in (MARKER, LOCK)]
    if any(e.name in ("config.yaml", METRICS) for e in left):
        log.info("%s held a run that finished no task; starting it again", path)
    for entry in left:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (path / CHECKPOINTS).mkdir()


def _reason(exc: Exception) -> str:
    """The OS's words in a safetensors error (`... message: "No space left on device" ...`), else its text."""
    found = re.search(r'message: "([^"]+)"', str(exc))
    return found.group(1) if found else str(exc).splitlines()[0][:200]
