"""Shared test helpers: a tiny, fast configuration of any method."""
from __future__ import annotations

from dmc import config

TINY = {
    "model.backbone": "tiny",
    "vision.epochs": 1,
    "vision.batch_size": 16,
    "prompt.epochs": 2,
    "prompt.batch_size": 16,
    "benchmark.train_per_class": 8,
    "benchmark.test_per_class": 4,
    "calibration.samples_per_class": 16,
}


def tiny_cfg(method: str, **extra) -> config.RunConfig:
    overrides = {**TINY, **{k.replace("__", "."): v for k, v in extra.items()}}
    return config.resolve("synthetic", method, overrides)


def killed_copy(full, dest, finished_tasks: int):
    """A copy of a finished run as if it had been killed after `finished_tasks` tasks."""
    import shutil
    from pathlib import Path

    dest = Path(dest)
    shutil.copytree(full, dest)
    (dest / "summary.json").unlink()
    for ckpt in sorted((dest / "checkpoints").glob("task_*.safetensors"))[finished_tasks:]:
        ckpt.unlink()
    lines = (dest / "metrics.jsonl").read_text().splitlines()
    (dest / "metrics.jsonl").write_text("\n".join(lines[:finished_tasks]) + "\n")
    return dest


SMOKE = ["run", "--benchmark", "synthetic", "--method", "dmc", "--smoke", "--quiet"]  # a tiny `dmc run`


def cli(capsys, *argv):
    """Run the command line; returns (exit code, stdout, stderr, its `dmc: error:` lines)."""
    from dmc.cli import main

    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("dmc: error:")]
    return code, out, err, errors
