"""The names of a run directory and the rules that say which of its files dmc wrote.

Only files dmc wrote, in a folder it marked as its own, may ever be removed (a user's folder never loses
a file to `--out`). The mark is a small file, `.dmc-run`, written when dmc creates the run directory;
what dmc writes there is a fixed set of names (below), the checkpoints `checkpoints/task_KK.safetensors`
and the temporary files of `dmc.files.atomic_path` beside any of them. Everything else is the user's.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
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


def is_link(path: Path) -> bool:
    """Whether `path` is a symbolic link (checked with lstat: the link itself, never what it points to)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def refuse_links(folder: Path, what: str = "run directory") -> None:
    """dmc never follows a symbolic link in a folder it writes: a link among the names it writes or removes
    (top level, and in `checkpoints/`) is refused in one line naming it, before anything is written."""
    folder = Path(folder)
    names = [folder / n for n in os.listdir(folder)] if folder.is_dir() else []
    if (folder / CHECKPOINTS).is_dir() and not is_link(folder / CHECKPOINTS):
        names += [folder / CHECKPOINTS / n for n in os.listdir(folder / CHECKPOINTS)]
    link = next((p for p in sorted(names) if is_link(p)), None)
    if link is not None:
        raise UserError(f"{link} is a symbolic link: dmc never writes through links in a {what}; replace it "
                        "with the file or folder itself, or choose another --out")


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """`os.open` that refuses a symbolic link at `path` (O_NOFOLLOW): a UserError in one line naming it."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError:
        if is_link(path):
            raise UserError(f"{path} is a symbolic link: dmc never writes through links; remove it, or choose "
                            "another --out") from None
        raise


def foreign_files(folder: Path) -> list[str]:
    """What a run directory holds that dmc did not write (relative paths, sorted): a user's files."""
    out = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if is_link(entry):
            out.append(entry.name)
        elif entry.name == CHECKPOINTS and entry.is_dir():
            out += [f"{CHECKPOINTS}/{e.name}" for e in sorted(entry.iterdir()) if not written_in_checkpoints(e.name)
                    or not e.is_file()]
        elif entry.name not in (MARKER, LOCK) and not (written_here(entry.name) and entry.is_file()):
            out.append(entry.name)
    return out
