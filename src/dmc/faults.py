"""Named points where a run can be killed on purpose, to check that every run survives any crash.

The loop, the optimisation loop, the feature encoder and the run-directory writer call `point(name)` at
the moments a crash would hurt most (inside a stage, between a temporary file and its rename, ...).
Normally nothing happens. With the environment variable `DMC_KILL_AT=NAME` (or `NAME#K`: the K-th time
NAME is reached, 1-based) the process kills itself with SIGKILL there: no handler, no `finally`, exactly
what a crashed machine or an out-of-memory killer leaves behind. Tests may install `HOOK` instead, a
function called with every point's name (it may raise to stop the run in-process).

Names: `fit:<stage description>` at each optimisation step (e.g. `fit:task 2 stage 1`),
`encode:<description>` at each encoded batch, `eval:task N` before a task's evaluation, `predict:<...>` at
each evaluated batch, `write:<file name>` after a run-directory file is written but before it replaces the
old one, and `finish` between the plot and the summary of a finished run.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Callable

ENV = "DMC_KILL_AT"
HOOK: Callable[[str], None] | None = None
_reached: Counter[str] = Counter()


def point(name: str) -> None:
    """A place where a crash is survivable by design; kills the process here if `DMC_KILL_AT` names it."""
    if HOOK is not None:
        HOOK(name)
    target = os.environ.get(ENV)
    if not target:
        return
    _reached[name] += 1
    wanted, _, nth = target.partition("#")
    if wanted == name and _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
