"""Real handwritten digits as an image folder: scikit-learn's `load_digits` (1,797 images of 8 x 8 pixels,
10 classes, about 180 per class; the UCI "Optical Recognition of Handwritten Digits" test set) written
once under the user cache as `train/<class>/*.png` and `test/<class>/*.png`, the layout the `imagefolder`
benchmark reads. It ships inside scikit-learn's wheel, so nothing is downloaded.

Why these folder names: the image folder's class name is its folder name with `_` as spaces, and the
glyph world names its digit classes by their Unicode names ("digit zero", "digit two", ...), so the
folders are `digit_zero` ... `digit_nine` and the toy CLIP's text tower reads names it was pretrained on
(except "digit one": the world has no class for "1", it looks too much like "l" and "I").

Each image is upscaled (bicubic) to `size` pixels, dark ink on white like the glyph renditions. The
train/test split is fixed: a seeded quarter of each class's images is the test split.
"""
from __future__ import annotations

import os
import shutil
import unicodedata
from pathlib import Path

import numpy as np

from dmc.errors import UserError

DIGITS = "digits"  # the dataset's name in the suite's grid file (`dataset: digits`)
TEST_SHARE = 0.25  # of each class's images, drawn by a permutation seeded by the class id
SPLIT_SEED = 0
DONE = ".complete"  # written last: a folder without it was cut short and is written again


def folder_names() -> list[str]:
    """`digit_zero` ... `digit_nine`: the Unicode names of "0".."9", as folder names."""
    return [unicodedata.name(str(d)).lower().replace(" ", "_") for d in range(10)]


def load() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (N, 8, 8) ink values in [0, 16] and (N,) labels 0..9; one line naming the extra
    when scikit-learn is missing."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError('the digits dataset needs scikit-learn: pip install "dmc[suite]"') from None
    d = load_digits()
    return np.asarray(d.images), np.asarray(d.target, dtype=np.int64)


def split(targets: np.ndarray, share: float = TEST_SHARE, seed: int = SPLIT_SEED) -> np.ndarray:
    """A boolean mask (N,) of the test rows: round(share * n_c) of each class's n_c rows, drawn by a
    permutation seeded by (seed, class), so the split never depends on the other classes."""
    test = np.zeros(len(targets), dtype=bool)
    for c in np.unique(targets):
        rows = np.nonzero(targets == c)[0]
        perm = np.random.default_rng([seed, int(c)]).permutation(len(rows))
        test[rows[perm[: int(round(share * len(rows)))]]] = True
    return test


def to_image(ink: np.ndarray, size: int):
    """An (8, 8) ink image in [0, 16] -> an RGB PIL image of size x size, dark ink on white."""
    from PIL import Image

    grey = np.clip(255.0 * (1.0 - ink / 16.0), 0, 255).astype(np.uint8)  # (8, 8)
    return Image.fromarray(grey, mode="L").resize((size, size), Image.BICUBIC).convert("RGB")


def export_digits(root: Path, size: int = 32) -> Path:
    """Write the digits under `root` (train/ and test/ class folders) unless a complete copy is there;
    returns `root`. Written in a sibling folder and renamed into place, so a copy cut short is never read."""
    root = Path(root)
    if (root / DONE).exists():
        return root
    images, targets = load()
    test = split(targets)
    names = folder_names()
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for i, (ink, label) in enumerate(zip(images, targets.tolist())):
            folder = tmp / ("test" if test[i] else "train") / names[label]
            folder.mkdir(parents=True, exist_ok=True)
            to_image(ink, size).save(folder / f"{i:04d}.png")
        (tmp / DONE).write_text(f"scikit-learn load_digits, {size} px, test share {TEST_SHARE}\n")
        shutil.rmtree(root, ignore_errors=True)  # an earlier copy cut short
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if (root / DONE).exists():  # another process wrote it meanwhile
            return root
        raise UserError(f"cannot write the digits image folder {root}: {exc.strerror or exc}") from None
    return root


def cache_root() -> Path:
    """The user cache the glyph world uses too: $DMC_CACHE, else $XDG_CACHE_HOME/dmc or ~/.cache/dmc (the
    data layer may not import the world, so the rule is stated here as well)."""
    if os.environ.get("DMC_CACHE"):
        return Path(os.environ["DMC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dmc"


def digits_root(size: int = 32) -> Path:
    """The digits image folder in the user cache (`cache_root`), written on first use."""
    return export_digits(cache_root() / "datasets" / f"digits-{size}px", size)


EXPORTERS = {DIGITS: digits_root}  # dataset name -> function returning its image folder (written once)
