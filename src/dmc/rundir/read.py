"""Reading a run directory: its records, checked against each other before anything is trusted.

Anyone may read a run directory without owning it (`dmc compare`, `dmc predict`, a sweep's status). What
is read is checked: every metrics line carries the digest of its content and the digest of its task's
checkpoint, `run.json` the digests of the resolved config and of the plan; a line, a checkpoint, a config
or a plan that no longer matches is refused in one line saying which, never used. A line or checkpoint
that is cut short (a copy cut, a full disk) is what a crash can leave: resuming continues after the last
task whose line and checkpoint are both good.
"""
from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import TYPE_CHECKING

from dmc.errors import UserError
from dmc.rundir.layout import (CHECKPOINTS, CONFIG, MARKER, METRICS, PLAN, STATE, SUMMARY, checkpoint_name, digest,
                               file_sha256, number_of)

if TYPE_CHECKING:  # torch is imported where checkpoints are read, so reading a run's records is quick
    import torch


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, cut short, changed since it was written, or non-finite."""


def read_json(path: Path, what: str) -> object:
    """A JSON file's value; unreadable (missing, not UTF-8, not JSON) is a UserError naming `what`."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path.parent} has no readable {path.name}: {what}") from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, not JSON
        raise UserError(f"{path} is unreadable ({type(exc).__name__}): {what}") from None


class RunDir:
    """A run directory as it is on disk, read only (the writer is `dmc.rundir.write.RunWriter`)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._first: int | None = None  # the number of the first task in the files: 1, or 0 (older runs)

    def is_marked(self) -> bool:
        """Whether dmc created this folder (its mark, `.dmc-run`, is there)."""
        return (self.path / MARKER).is_file()

    # ---------------------------------------------------------------- metrics lines
    def _lines(self) -> list[str]:
        f = self.path / METRICS
        if not f.exists():
            return []
        return [line for line in f.read_bytes().decode("utf-8", "replace").splitlines() if line.strip()]

    def _numbering(self) -> int:
        """The number of the first task in this folder's files: 0 for runs written before tasks were
        numbered from 1 (their first metrics line says `"task": 0`), else 1."""
        if self._first is None:
            lines = self._lines()
            try:
                self._first = 0 if lines and json.loads(lines[0]).get("task") == 0 else 1
            except (ValueError, AttributeError):
                self._first = 1
        return self._first

    def _read_records(self) -> tuple[list[dict], int | None]:
        """The metrics lines up to the first unreadable one (tasks numbered from 1, whatever the file's
        numbering), and that line's number (None if all read). A readable line whose digest differs from
        its content was edited: refused (UserError), never used."""
        out: list[dict] = []
        shift = 1 - self._numbering()
        for number, line in enumerate(self._lines(), start=1):
            try:
                rec = json.loads(line)
            except ValueError:
                return out, number
            if not isinstance(rec, dict) or rec.get("task") != len(out) + 1 - shift:
                return out, number
            sealed = rec.pop("sha256", None)
            if sealed is not None and sealed != digest(rec):
                raise UserError(f"{self.path / METRICS} line {number} (task {len(out) + 1}) was changed after it "
                                "was written (its digest differs from its content); restore the file, or start a "
                                "new run with another --out")
            out.append({**rec, "task": rec["task"] + shift})
        return out, None

    def records(self) -> list[dict]:
        """The readable metrics lines, tasks numbered from 1."""
        return self._read_records()[0]

    def done_tasks(self) -> int:
        """Number of leading tasks with a metrics line whose last one also has a checkpoint file."""
        n = len(self.records())
        while n > 0 and not self.checkpoint_path(n).exists():
            n -= 1
        return n

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_path(self, task: int) -> Path:
        """The checkpoint after task `task` (from 1): `task_01.safetensors` for the first task."""
        return self.path / CHECKPOINTS / checkpoint_name(task - 1 + self._numbering())

    def checkpoints(self) -> list[int]:
        """The tasks (from 1) whose checkpoint file is present."""
        shift = 1 - self._numbering()
        found = (number_of(p.name) for p in (self.path / CHECKPOINTS).glob("task_*.safetensors"))
        return sorted(n + shift for n in found if n is not None and n + shift >= 1)

    def load_checkpoint(self, task: int, record: dict | None = None) -> dict[str, torch.Tensor]:
        """The tensors of checkpoint `task`, checked against the digest its metrics line recorded (runs
        written before digests were recorded are only checked for finite values). CheckpointError (one
        line) when it is missing, cut short, changed since it was written, or holds NaN or inf."""
        from safetensors.torch import load_file

        path = self.checkpoint_path(task)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path.name} is missing")
        if record is None:
            records = self.records()
            record = records[task - 1] if task <= len(records) else {}
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for a cut file
            raise CheckpointError(f"checkpoint {path.name} is unreadable ({type(exc).__name__})") from None
        recorded = record.get("checkpoint_sha256")
        if recorded is not None and file_sha256(path) != recorded:
            raise CheckpointError(f"checkpoint {path.name} differs from the one written after task {task} "
                                  "(its sha256 does not match metrics.jsonl: damaged or replaced)")
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
        if bad:
            raise CheckpointError(f"checkpoint {path.name} holds NaN or infinite values ({bad[0]})")
        return state

    def check_checkpoints_agree(self, n_records: int) -> None:
        """Checkpoints may run one task ahead of the metrics lines (a run killed between the two writes),
        never more: more means the records were lost or cut by hand, and the run is refused."""
        ahead = [t for t in self.checkpoints() if t > n_records + 1]
        if ahead:
            raise UserError(f"{self.path} has the checkpoint of task {ahead[-1]} but metrics lines for only "
                            f"{n_records} tasks: its records disagree ({METRICS} lost or cut?); restore it, or "
                            "start a new run with another --out")

    def resume_point(self, below: int | None = None
                     ) -> tuple[int, dict[str, torch.Tensor] | None, list[str], list[dict]]:
        """Where a resumed run continues: (tasks done, the last one's checkpoint, notes on what could not be
        used, the metrics lines of the tasks done, read once here). Tasks are done when their metrics lines
        read and the checkpoint of the last of them is good; `below` leaves out that task and later ones (a
        checkpoint that turned out not to fit the model)."""
        records, bad_line = self._read_records()
        self.check_checkpoints_agree(len(records))
        notes = [f"{METRICS} line {bad_line} is unreadable"] if bad_line is not None else []
        n = len(records) if below is None else min(len(records), below - 1)
        while n > 0:
            try:
                return n, self.load_checkpoint(n, records[n - 1]), notes, records[:n]
            except CheckpointError as exc:
                notes.append(str(exc))
            n -= 1
        return 0, None, notes, []

    # ---------------------------------------------------------------- what the run is
    def state(self) -> dict:
        """`run.json`: the digests the run started with. Missing or malformed: refused (one line)."""
        path = self.path / STATE
        state = read_json(path, "the run's config and plan cannot be checked against what it started with, so "
                                "it is not used (a copied config.yaml is not a run: start one with dmc run --out)")
        if not isinstance(state, dict) or not all(isinstance(state.get(k), str)
                                                  for k in ("config_sha256", "plan_sha256")):
            raise UserError(f"{path} is not what dmc wrote (a JSON object with config_sha256 and plan_sha256); "
                            "restore it, or start a new run with another --out")
        return state

    def verify(self, plan_sha256: str | None = None) -> dict:
        """Refuse a run whose records disagree: `config.yaml` or `plan.json` changed since the run started,
        or (`plan_sha256`: the plan its config builds now) a class order file or dataset that changed."""
        from dmc.config import saved_tree

        state = self.state()
        if digest(saved_tree(self.path / CONFIG)) != state["config_sha256"]:
            raise UserError(f"{self.path / CONFIG} was changed after the run started (its digest differs from "
                            f"{STATE}); restore it, or start a new run with the new settings and another --out")
        if digest(self.plan()) != state["plan_sha256"]:
            raise UserError(f"{self.path / PLAN} was changed after the run started (its digest differs from "
                            f"{STATE}); restore it, or start a new run with another --out")
        if plan_sha256 is not None and plan_sha256 != state["plan_sha256"]:
            raise UserError(f"the class plan of {self.path} differs from the one it started with (class order "
                            "file or dataset changed); restore it, or start a new run with another --out")
        return state

    def plan(self) -> dict:
        """The class plan the run recorded (`plan.json`: class order, each task's class names)."""
        plan = read_json(self.path / PLAN, "not a run directory")
        tasks = plan.get("tasks") if isinstance(plan, dict) else None
        if not isinstance(tasks, list) or not all(isinstance(t, list) for t in tasks):
            raise UserError(f"{self.path} has no readable {PLAN}: not a run directory")
        return plan

    def read_summary(self) -> dict:
        """`summary.json`, checked before any of its numbers is shown: its seal (the digest of its content;
        summaries written before seals were recorded have none) and its accuracies against the metrics
        lines, task by task. Unreadable, edited or disagreeing: refused in one line saying which."""
        path = self.path / SUMMARY
        summary = read_json(path, "not a finished run")
        if not isinstance(summary, dict):
            raise UserError(f"{path} is not a JSON object: not a finished run (restore it from a copy of the run)")
        sealed = summary.pop("sha256", None)
        if sealed is not None and sealed != digest(summary):
            raise UserError(f"{path} was changed after it was written (its digest differs from its content); "
                            "restore it from a copy of the run")
        why = _disagreement(summary, self.records())
        if why:
            raise UserError(f"{path} disagrees with {METRICS} ({why}); restore the run from a copy")
        return summary

    def trained_task(self, task: int | None = None) -> int:
        """The task (from 1) whose trained model to use: `task`, or by default the last one of a finished
        run. Refused in one line when the folder is not a run, its records disagree, or that task is not a
        whole number, out of range, not finished or has no checkpoint."""
        if not self.path.is_dir():
            raise UserError(f"no such run directory: {self.path}")
        if not (self.path / CONFIG).is_file():
            raise UserError(f"{self.path} is not a run directory (no {CONFIG})")
        task = _whole_number(task)
        self.verify()
        n_tasks, done = len(self.plan()["tasks"]), self.done_tasks()
        if task is None:
            if not (self.path / SUMMARY).exists():
                which = f"; or use one of its finished tasks (1..{done})" if done else ""
                raise UserError(f"{self.path} is an unfinished run ({done} of {n_tasks} tasks done): finish it with "
                                f"dmc run --resume {self.path}{which}")
            self.read_summary()  # its numbers agree with the metrics lines of the model loaded
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


def _disagreement(summary: dict, records: list[dict], tol: float = 1e-6) -> str | None:
    """What in a summary does not match the metrics lines it was made from (None when all does): the
    number of tasks, each task's A_t and accuracy row, Avg and Last."""
    tasks, matrix = summary.get("tasks"), summary.get("acc_matrix")
    odd = next((k for k in ("avg", "last") if k in summary and not _is_number(summary[k])), None)
    if odd is not None:
        return f"{odd} is not a number"
    if not isinstance(tasks, int) or len(records) != tasks:
        return f"{tasks!r} tasks in the summary, {len(records)} metrics lines"
    curve = summary.get("incremental")
    try:
        for t, rec in enumerate(records):
            if curve is not None and abs(float(curve[t]) - float(rec["A_t"])) > tol:
                return f"A_t of task {t + 1}"
            if matrix is not None and any(abs(float(a) - float(b)) > tol
                                          for a, b in zip(matrix[t][: t + 1], rec["acc_row"], strict=True)):
                return f"the accuracies of task {t + 1}"
        a_t = [float(rec["A_t"]) for rec in records]
        if records and abs(float(summary["last"]) - a_t[-1]) > tol:
            return "Last"
        if records and abs(float(summary["avg"]) - sum(a_t) / len(a_t)) > tol:
            return "Avg"
    except (KeyError, TypeError, ValueError, IndexError):
        return "a value missing or not a number"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole_number(task: object) -> int | None:
    """`task` as an int (numpy integers too); a string, a float or a bool is refused in one line."""
    if task is None:
        return None
    try:
        if isinstance(task, bool):
            raise TypeError
        return operator.index(task)
    except TypeError:
        raise UserError(f"task must be a whole number (1 for the first task), got {task!r}") from None
