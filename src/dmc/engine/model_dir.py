"""The folder of a model that learns class by class (`dmc learn`): its names, and which run directory holds
which version. Nothing here loads torch, so the command line checks a model folder before anything heavy.

    MODEL_DIR/
      .dmc-model            the mark: dmc created this folder for `dmc learn` (written first)
      .lock                 held while a `dmc learn` call writes here (the run directory's lock)
      model.json            {"tasks": K}: the versions committed; written last by each call, atomically
      images/task_KK/       copies of the images of call K (train/<class>/..., test/<class>/...)
      versions/task_KK/     version K: a finished run directory of tasks 1..K (config, plan, digests,
                            metrics lines, checkpoint K, summary), as `dmc run` writes one

A call that is killed leaves `model.json` as it was: the versions it names are untouched and usable. A
version is never changed once `model.json` names it.
"""
from __future__ import annotations

import json
import operator
from pathlib import Path

from dmc.errors import UserError

MODEL_MARK, POINTER, IMAGES, VERSIONS = ".dmc-model", "model.json", "images", "versions"


def task_folder(number: int) -> str:
    """`task_03` for the third call's images and its version."""
    return f"task_{number:02d}"


def is_model(path: Path) -> bool:
    """Whether `path` is a folder `dmc learn` created."""
    return (Path(path) / MODEL_MARK).is_file()


def committed(path: Path) -> int:
    """Versions of the model that a finished call committed (0 for a new model or a first call that was
    killed); an unreadable `model.json` is refused in one line."""
    f = Path(path) / POINTER
    if not f.exists():
        return 0
    try:
        tasks = json.loads(f.read_text(encoding="utf-8"))["tasks"]
        if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 0:
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{f} is unreadable or not what dmc wrote; restore it from a copy of the model") from None
    return tasks


def version_dir(path: Path, task: int) -> Path:
    return Path(path) / VERSIONS / task_folder(task)


def model_version(path: str | Path, task: int | None = None) -> tuple[Path, int | None]:
    """The run directory and task that `dmc predict PATH [--task K]` uses: for a model folder, version K
    (default: the last committed one); any other folder is a run directory, returned as it is."""
    path = Path(path)
    if not is_model(path):
        return path, task
    done = committed(path)
    if done == 0:
        raise UserError(f"{path} has learned no classes yet (its first dmc learn call did not finish): run "
                        "that call again")
    if task is not None:
        try:
            task = operator.index(task) if not isinstance(task, bool) else None
        except TypeError:
            task = None
        if task is None or not 1 <= task <= done:
            raise UserError(f"{path} has versions 1..{done}: --task must be one of them")
    task = done if task is None else task
    return version_dir(path, task), task
