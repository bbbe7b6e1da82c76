"""The run directory: resolved config, class plan, per-task metrics lines, checkpoints, summary, plot.

A run is finished exactly when `summary.json` exists (it is written last, atomically). A finished run is
never overwritten; an unfinished one is continued with `--resume`. The format is defined here once, below
both the loop that writes run directories and the report that reads them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dmc.errors import UserError
from dmc.files import atomic_path, write_text

CONFIG, PLAN, METRICS, SUMMARY, PLOT = "config.yaml", "plan.json", "metrics.jsonl", "summary.json", "accuracy.png"


def default_out(benchmark: str, method: str) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{benchmark}-{method}"


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, path: Path) -> "RunDir":
        path = Path(path)
        if (path / SUMMARY).exists():
            raise UserError(f"{path} holds a finished run; choose another --out (finished runs are never overwritten)")
        if path.exists() and any(path.iterdir()):
            raise UserError(f"{path} holds an unfinished run; continue it with --resume {path} or choose another --out")
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def open_for_resume(cls, path: Path) -> "RunDir":
        path = Path(path)
        if not (path / CONFIG).exists():
            raise UserError(f"{path} is not a run directory (no {CONFIG}); nothing to resume")
        if (path / SUMMARY).exists():
            raise UserError(f"{path} is already finished; nothing to resume")
        return cls(path)

    @property
    def finished(self) -> bool:
        return (self.path / SUMMARY).exists()

    def records(self) -> list[dict]:
        f = self.path / METRICS
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    def done_tasks(self) -> int:
        """Number of leading tasks with a metrics line whose last one also has a checkpoint."""
        n = 0
        for rec in self.records():
            if rec.get("task") != n:
                break
            n += 1
        while n > 0 and not self.checkpoint_path(n - 1).exists():
            n -= 1
        return n

    def truncate_records(self, n: int) -> list[dict]:
        recs = self.records()[:n]
        self._write_records(recs)
        return recs

    def append_record(self, record: dict) -> None:
        self._write_records([*self.records(), record])

    def _write_records(self, records: list[dict]) -> None:
        """The whole file is rewritten (a few lines per task): a killed run never leaves half a line."""
        write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in records))

    def checkpoint_path(self, task: int) -> Path:
        return self.path / "checkpoints" / f"task_{task:02d}.safetensors"

    def save_checkpoint(self, task: int, state: dict[str, torch.Tensor], keep: str = "all") -> None:
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        with atomic_path(self.checkpoint_path(task)) as tmp:
            save_file(state, str(tmp), metadata={"task": str(task)})
        if keep == "last" and task > 0:
            self.checkpoint_path(task - 1).unlink(missing_ok=True)

    def load_checkpoint(self, task: int) -> dict[str, torch.Tensor]:
        return load_file(str(self.checkpoint_path(task)))

    def write_summary(self, summary: dict) -> None:
        write_text(self.path / SUMMARY, json.dumps(summary, indent=1))

    def read_summary(self) -> dict:
        try:
            return json.loads((self.path / SUMMARY).read_text())
        except (OSError, json.JSONDecodeError):
            raise UserError(f"{self.path} has no readable {SUMMARY}: not a finished run") from None
