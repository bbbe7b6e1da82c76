"""Helpers shared by the file-based sources: find images, check roots, catch unreadable files early.

Why scan at all: one truncated download otherwise surfaces as a DataLoader worker crash hours into a run,
with a traceback that names neither the file nor the fix. Opening each header with PIL is cheap (it reads a
few bytes, not the pixels) and turns that into one clear line before training starts.
"""
from __future__ import annotations

import functools
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from dmc.data.decode import open_image
from dmc.data.sources.base import Samples
from dmc.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = ("train", "test")
_UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def check_split(split: str) -> None:
    """Sources only know "train" and "test"; anything else is a bug in the caller."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def is_image_file(name: str) -> bool:
    """Image by extension (case-insensitive). Hidden files are skipped: macOS archives carry `._x.jpg`
    resource forks that look like images by name but are not."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | Path) -> list[str]:
    """All image files under `folder` (recursively), as paths, sorted by their path relative to `folder`.

    Sorting happens at every level (folders and files), so the order never depends on the file system.
    """
    found: list[str] = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(top, f) for f in sorted(files) if is_image_file(f))
    return found


def list_subfolders(folder: str | Path) -> list[str]:
    """Names of the (non-hidden) subfolders of `folder`, sorted: the native class order of folder datasets."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def check_root(root: str | None, what: str, how_to_get: str) -> Path:
    """The dataset root as a Path, or a DataError saying what belongs there and where the data comes from.

    what: the expected folder, e.g. "the CUB_200_2011/ folder (images.txt, images/, ...)".
    how_to_get: where the data comes from, e.g. "download CUB_200_2011.tgz from ... and extract it".
    """
    if not root:
        raise DataError(f"data.root is not set: pass --set data.root=DIR with DIR = {what}; {how_to_get}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data.root {str(path)!r} is not a folder; expected {what}; {how_to_get}")
    return path


def unpacked_root(root: Path, folder: str, holds: Callable[[Path], bool]) -> Path:
    """`root`, or `root/folder` when the data sits one level down (an archive extracted as it came) and
    `root` itself does not hold it (`holds`)."""
    return root / folder if not holds(root) and (root / folder).is_dir() else root


def check_files_exist(paths: Sequence[str], listed_in: str) -> None:
    """Files named by a list (CUB's images.txt, a split file) must exist: a wrong root shows up here."""
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise DataError(f"{len(missing)} images listed in {listed_in} do not exist, first: {missing[0]}")


def scan_images(paths: Sequence[str], skip_corrupt: bool) -> list[int]:
    """Indices of the images PIL can read.

    Unreadable images raise a DataError (count + first path) unless `skip_corrupt`, in which case they are
    logged once and left out. Without `skip_corrupt` only headers are read (a few bytes each), so a file
    cut short after its header passes here and stops the run when it is loaded, in one line that says how
    to skip it; with `skip_corrupt` every image is decoded once, so that such files are found and skipped.
    """
    bad: list[int] = []
    first_reason = ""
    for i, path in enumerate(paths):
        try:
            with open_image(path) as im:
                if skip_corrupt:
                    im.load()
        except (*_UNREADABLE, DataError) as err:
            if not bad:
                first_reason = f"{type(err).__name__}: {err}"
            bad.append(i)
    if not bad:
        return list(range(len(paths)))
    first = paths[bad[0]]
    if not skip_corrupt:
        raise DataError(
            f"{len(bad)} unreadable images, first: {first} ({first_reason}); "
            "set data.skip_corrupt=true to skip them"
        )
    log.warning("skipping %d unreadable images, first: %s (%s)", len(bad), first, first_reason)
    skipped = set(bad)
    return [i for i in range(len(paths)) if i not in skipped]


def scanned_samples(paths: Sequence[str], targets: Sequence[int], skip_corrupt: bool) -> Samples:
    """Samples of the readable images among `paths` (see `scan_images`), targets as int64."""
    keep = scan_images(paths, skip_corrupt)
    labels = np.asarray(targets, dtype=np.int64).reshape(-1)
    return Samples(items=[str(paths[i]) for i in keep], targets=labels[keep])


def collect_images(inputs: Sequence[str | Path]) -> list[str]:
    """Image files named by `inputs` (files, or folders searched recursively in sorted order), each checked
    to open; a missing path, a folder without images or an unreadable file is a DataError (one line)."""
    found: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = list_images(item)
            if not images:
                raise DataError(f"{item} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            found += images
        elif item.is_file():
            found.append(str(item))
        else:
            raise DataError(f"no such image or folder: {item}")
    check_readable(found, decode=True)  # a few images to predict: decoding them all costs little
    return found


def check_readable(paths: Sequence[str | Path], decode: bool = False) -> None:
    """Every path is an image file whose header PIL reads (with `decode`, whose pixels it decodes: a file
    cut short after its header is found too); else a DataError naming the first that is not."""
    for path in paths:
        if Path(path).is_dir():
            raise DataError(f"{path} is a folder, not an image file")
        try:
            with open_image(path) as im:
                if decode:
                    im.load()
        except FileNotFoundError:
            raise DataError(f"no such image: {path}") from None
        except _UNREADABLE as err:
            raise DataError(f"unreadable image {path} ({type(err).__name__}: {err})") from None


@functools.lru_cache(maxsize=None)
def read_package_lines(filename: str) -> tuple[str, ...]:
    """Non-empty, non-comment (#) lines of a class-list file shipped in `dmc.data` (package data)."""
    text = resources.files("dmc.data").joinpath(filename).read_text(encoding="utf-8")
    lines = (line.strip() for line in text.splitlines())
    return tuple(line for line in lines if line and not line.startswith("#"))
