"""The names of a run directory and the rules that say which of its files dmc wrote.

Only files dmc wrote, in a folder it marked as its own, may ever be removed (a user's folder never loses
a file to `--out`). The mark is a small file, `.dmc-run`, written when dmc creates the run directory;
what dmc writes there is a fixed set of names (below), the checkpoints `checkpoints/task_KK.safetensors`
and the temporary files of `dmc.files.atomic_path` beside any of them. Everything else is the user's.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

from dmc.errors import UserError

CONFIG, PLAN, METRICS, SUMMARY, PLOT = "config.yaml", "plan.json", "metrics.jsonl", "summary.json", "accuracy.png"
STATE, LOCK, CHECKPOINTS, SPLIT, LOG = "run.json", ".lock", "checkpoints", "split.txt", "run.log"
VAL = "val_rows.json"  # the validation split: fraction, seed and the held-out training-set rows
MARKER = ".dmc-run"  # written first, when dmc creates the folder: the folder is a dmc run directory
WRITTEN = (CONFIG, PLAN, METRICS, SUMMARY, PLOT, STATE, SPLIT, LOG, VAL)  # the files dmc writes at the top level
_TEMPORARY = re.compile(r"\.(?P<stem>.+)\.[0-9]+\.tmp(?P<suffix>\.[^.]+)?")  # dmc.files.atomic_path's names


def default_out(benchmark: str, method: str) -> Path:
    """`runs/<time>-<benchmark>-<method>`, created here, empty: runs started in the same second (two
    default `dmc run`s started together) get `-2`, `-3`, ... rather than one folder for both."""
    base = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{benchmark}-{method}"
    for k in range(1, 1000):
        path = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()  # atomic: exactly one process creates each name
            return path
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create the run directory {path}: {exc.strerror or exc}; choose one with "
                            "--out") from None
    raise UserError(f"{base}: more than 999 runs started in one second; choose folders with --out")


def digest(tree: object) -> str:
    """sha256 of a JSON-able value in canonical form (sorted keys): what `run.json` and every metrics
    line record, so that a hand edit shows."""
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (a checkpoint's digest, recorded when it is written)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_name(number: int) -> str:
    """The file of the checkpoint numbered `number` in the folder's own numbering."""
    return f"task_{number:02d}.safetensors"


def number_of(name: str) -> int | None:
    """`task_07.safetensors` -> 7 (the number in the file name); None for any other name."""
    stem = name.removesuffix(".safetensors")
    return int(stem[5:]) if stem.startswith("task_") and stem[5:].isdigit() and stem != name else None


def temporary_of(name: str) -> str | None:
    """The file a temporary file of `atomic_path` stands for (`.config.123.tmp.yaml` -> `config.yaml`)."""
    match = _TEMPORARY.fullmatch(name)
    return None if match is None else match["stem"] + (match["suffix"] or "")


def written_here(name: str) -> bool:
    """A top-level name that dmc writes (or its temporary file); the folders and the lock aside."""
    return name in WRITTEN or temporary_of(name) in WRITTEN


def written_in_checkpoints(name: str) -> bool:
    """A name in `checkpoints/` that dmc writes: a task's checkpoint, or its temporary file."""
    target = temporary_of(name)
    return number_of(name) is not None or (target is not None and number_of(target) is not None)


def foreign_files(folder: Path) -> list[str]:
    """What a run directory holds that dmc did not write (relative paths, sorted): a user's files."""
    out = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.name == CHECKPOINTS and entry.is_dir():
            out += [f"{CHECKPOINTS}/{e.name}" for e in sorted(entry.iterdir()) if not written_in_checkpoints(e.name)
                    or not e.is_file()]
        elif entry.name not in (MARKER, LOCK) and not (written_here(entry.name) and entry.is_file()):
            out.append(entry.name)
    return out
