"""Writing files so that no reader ever sees half of one.

Every file the project writes (run directories, caches, plots) goes through `atomic_path`: the content is
written beside the target under a temporary name and renamed over it in one step, so a killed run leaves
either the old file or the new one, never a torn one (a resumed run still checks what it finds). A disk
that is full or read-only is the user's to fix: it ends in one line naming the file, not a traceback.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from dmc.errors import UserError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` when the block ends without an error.

    The temporary name keeps the suffix, so writers that choose the format by it (numpy's `.npz`,
    matplotlib's `.png`) write the right thing. The parent folder is created if needed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb") as f:  # on disk before the rename: a power cut leaves no empty file either
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # a read-only folder: nothing was written there either
            pass


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def cache_dir() -> Path:
    """Where dmc keeps what it builds once (rendered glyphs, the toy CLIP, exported datasets): $DMC_CACHE, else
    $XDG_CACHE_HOME/dmc or ~/.cache/dmc."""
    if os.environ.get("DMC_CACHE"):
        return Path(os.environ["DMC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dmc"
