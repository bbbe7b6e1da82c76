"""The run directory: resolved config, class plan, per-task metrics lines, checkpoints, summary, plot.

A run is finished exactly when `summary.json` exists (it is written last, atomically). A finished run is
never overwritten; an unfinished one is continued with `--resume`. The format is defined here once, below
both the loop that writes run directories and the report that reads them, in three parts along a run's
life: `own` (taking a folder: its mark, its lock, its log), `write` (the owner records the run, task by
task) and `read` (anyone reads it, checking that its records agree); `layout` names the files.

Tasks are numbered for people, from 1: the first task is `task 1` in the console, `"task": 1` in
`metrics.jsonl` and `checkpoints/task_01.safetensors`. Run directories written before (numbered from 0)
are read, resumed and continued in their own numbering; every method here takes and returns tasks from 1.
"""
from dmc.rundir.layout import (CHECKPOINTS, CONFIG, LOCK, LOG, MARKER, METRICS, PLAN, PLOT, SPLIT, STATE, SUMMARY,
                               VAL, default_out, digest)
from dmc.rundir.read import CheckpointError, RunDir
from dmc.rundir.write import RunWriter, check_resumable

__all__ = ["CHECKPOINTS", "CONFIG", "LOCK", "LOG", "MARKER", "METRICS", "PLAN", "PLOT", "SPLIT", "STATE", "SUMMARY",
           "VAL", "CheckpointError", "RunDir", "RunWriter", "check_resumable", "default_out", "digest"]
