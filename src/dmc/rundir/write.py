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
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from dmc import faults
from dmc.errors import UserError
from dmc.files import atomic_path, write_text
from dmc.rundir.layout import (CHECKPOINTS, LOCK, MARKER, METRICS, STATE, SUMMARY, digest, file_sha256,
                               foreign_files, is_link, number_of, open_nofollow, refuse_links, temporary_of,
                               written_here, written_in_checkpoints)
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
            refuse_links(path)
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
            refuse_links(run.path)
            if (run.path / SUMMARY).exists():
                run.read_summary()  # an unreadable or unsealed one says so
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
        self._append_record({**record, "checkpoint_sha256": sha})
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
        self._write(METRICS, lambda: self._cut_records(n))
        for ckpt in (self.path / CHECKPOINTS).glob("*"):
            number = number_of(ckpt.name)
            stray = temporary_of(ckpt.name) and written_in_checkpoints(ckpt.name)
            if stray or (number is not None and number > last):
                self._write(CHECKPOINTS, ckpt.unlink)
        for entry in self.path.iterdir():
            if temporary_of(entry.name) and written_here(entry.name):
                self._write(entry.name, entry.unlink)
        return recs

    def _cut_records(self, n: int) -> None:
        """Keep the first n lines of `metrics.jsonl` as they are (the file is cut after them, never written
        again): what followed (a line cut short by a crash, a later task's line) goes."""
        path = self.path / METRICS
        if not path.exists() and n == 0:
            return
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
        try:
            with os.fdopen(fd, "r+b") as f:
                lines, kept = f.read().splitlines(keepends=True), 0
                end = 0
                for line in lines:
                    if kept == n:
                        break
                    end += len(line)
                    kept += bool(line.strip())
                f.truncate(end)
                if end and not _ends_line(f, end):
                    f.seek(end)
                    f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
        finally:
            self.run._first = None

    def _append_record(self, record: dict) -> None:
        """Append the metrics line of one task (sealed with the digest of its content); lines written before
        are never read back or written again. A crash mid-line leaves a line whose digest or JSON fails:
        `--resume` drops it. `record` numbers tasks from 1; the file keeps its own numbering."""
        first = self.run._numbering()
        rec = {k: v for k, v in record.items() if k != "sha256"} | {"task": record["task"] - 1 + first}
        line = (json.dumps({**rec, "sha256": digest(rec)}) + "\n").encode("utf-8")

        def write() -> None:
            fd = open_nofollow(self.path / METRICS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                half = len(line) // 2  # a crash here leaves the torn line that resuming must drop
                os.write(fd, line[:half])
                faults.point(f"write:{METRICS}")
                os.write(fd, line[half:])
                os.fsync(fd)
            finally:
                os.close(fd)

        self._write(METRICS, write)
        self.run._first = first

    def write_summary(self, summary: dict) -> None:
        """`summary.json`, sealed like every record: its `sha256` is the digest of the rest."""
        summary = {k: v for k, v in summary.items() if k != "sha256"}
        sealed = json.dumps({**summary, "sha256": digest(summary)}, indent=1)
        self._write(SUMMARY, lambda: write_text(self.path / SUMMARY, sealed))

    def _write(self, what: str, write):
        """Run one write of the folder, after checking that this process still owns it; a full or
        read-only disk ends the run in one line."""
        self.owner.check()
        refuse_links(self.path)
        folder = self.path / CHECKPOINTS
        if os.path.lexists(folder) and not folder.is_dir():
            raise UserError(f"{folder} is not a folder (a file took its place); move it out of {self.path} "
                            "(dmc never removes what it did not write)")
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
        shutil.rmtree(entry) if entry.is_dir() and not is_link(entry) else entry.unlink()
    (path / CHECKPOINTS).mkdir()


def _ends_line(f, end: int) -> bool:
    """Whether the byte before `end` in the open file `f` is a newline."""
    f.seek(end - 1)
    return f.read(1) == b"\n"


def _reason(exc: Exception) -> str:
    """The OS's words in a safetensors error (`... message: "No space left on device" ...`), else its text."""
    found = re.search(r'message: "([^"]+)"', str(exc))
    return found.group(1) if found else str(exc).splitlines()[0][:200]
