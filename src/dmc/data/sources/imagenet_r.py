"""ImageNet-R: 200 ImageNet classes as art, cartoons, sketches, toys… (30,000 images). B0-Inc20.

Layout: the extracted `imagenet-r/<wnid>/*.jpg`; data.root is that folder or its parent. Native ids follow
the 200 WordNet ids in sorted order (shipped in `dmc/data/imagenet_r_classes.txt` with their names).

ImageNet-R has no official train/test split. Two ways to get one:

* default, seeded per-class 80/20 split. For each class, its images (paths relative to the imagenet-r
  folder, "/"-separated) are ordered by the hex SHA-256 of f"{data.split_seed}/{relative path}"; the first
  floor(0.8 * n) go to train, the other n - floor(0.8 * n) to test. A hash instead of an RNG keeps the split
  identical across numpy versions and machines, and an image's side does not depend on any other file.
  Each class needs at least 2 images. PyCIL-style code splits globally (24,000 / 6,001); per class is
  stratified, so its totals differ by a few images.
* data.split_file: a text file with a `train` line followed by relative paths (one per line), then a
  `test` line followed by relative paths. Blank lines and lines starting with # are ignored; paths may be
  prefixed with "imagenet-r/". `write_split` writes the split a run used in this format.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePath, PurePosixPath
from typing import Sequence

import numpy as np

from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES, Samples, SourceDefaults
from dmc.data.sources.files import (
    SPLITS,
    check_files_exist,
    check_root,
    check_split,
    list_images,
    read_package_lines,
    scanned_samples,
    unpacked_root,
)
from dmc.errors import DataError
from dmc.files import write_text

_WHAT = "the extracted imagenet-r/ folder (200 <wnid>/ subfolders) or its parent"
_HOW_TO_GET = "download imagenet-r.tar from https://people.eecs.berkeley.edu/~hendrycks/imagenet-r.tar"
_FOLDER = "imagenet-r"

Split = dict[str, tuple[list[str], list[int]]]  # split -> (relative paths, native ids)


def imagenet_r_classes() -> list[tuple[str, str]]:
    """(wnid, class name) of the 200 classes in native id order."""
    return [tuple(line.split("\t", 1)) for line in read_package_lines("imagenet_r_classes.txt")]


def imagenet_r_root(data: DataConfig) -> Path:
    """The folder holding the <wnid>/ folders: data.root itself, or data.root/imagenet-r.

    Exposed for `write_split(train, test, imagenet_r_root(data), path)`; `ImagenetRSource.save_split` does both.
    """
    wnids = [wnid for wnid, _ in imagenet_r_classes()]
    root = unpacked_root(check_root(data.root, _WHAT, _HOW_TO_GET), _FOLDER,
                         lambda r: any((r / w).is_dir() for w in wnids))
    missing = [w for w in wnids if not (root / w).is_dir()]
    if missing:
        raise DataError(f"ImageNet-R: {len(missing)} of {len(wnids)} class folders missing in {root} "
                        f"(first: {missing[0]}); data.root must be {_WHAT}; {_HOW_TO_GET}")
    return root


def train_count(n: int) -> int:
    """Images of a class with n images that go to train: floor(0.8 n)."""
    return (4 * n) // 5


def _hash_key(seed: int, rel: str) -> str:
    return hashlib.sha256(f"{seed}/{rel}".encode("utf-8")).hexdigest()


def seeded_split(root: Path, seed: int) -> Split:
    """The default per-class 80/20 split (rule in the module docstring); both sides in sorted path order."""
    out: Split = {s: ([], []) for s in SPLITS}
    for label, (wnid, _) in enumerate(imagenet_r_classes()):
        rels = sorted(Path(p).relative_to(root).as_posix() for p in list_images(root / wnid))
        if len(rels) < 2:
            raise DataError(f"ImageNet-R class folder {root / wnid} has {len(rels)} images; "
                            "a train/test split needs at least 2")
        ranked = sorted(rels, key=lambda rel: _hash_key(seed, rel))
        n_train = train_count(len(rels))
        chosen = {"train": sorted(ranked[:n_train]), "test": sorted(ranked[n_train:])}
        for split in SPLITS:
            out[split][0].extend(chosen[split])
            out[split][1].extend([label] * len(chosen[split]))
    return out


def _normalise(line: str) -> str:
    """Backslashes, "./" and a leading "imagenet-r/" are accepted in split files."""
    parts = [p for p in PurePosixPath(line.replace("\\", "/")).parts if p not in (".", "")]
    if len(parts) > 2 and parts[0] == _FOLDER:
        parts = parts[1:]
    return "/".join(parts)


def _parse_split_lines(lines: list[str], where: str) -> dict[str, list[str]]:
    """Sections of a split file: {"train": [...], "test": [...]}; errors name the file and line."""
    sections: dict[str, list[str]] = {}
    current = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower() in SPLITS:
            current = line.lower()
            if current in sections:
                raise DataError(f"{where}:{number}: second {current!r} header")
            sections[current] = []
        elif current is None:
            raise DataError(f"{where}:{number}: path before a 'train' or 'test' header line")
        else:
            sections[current].append(_normalise(line))
    absent = [s for s in SPLITS if s not in sections]
    if absent:
        raise DataError(f"split file {where} has no {absent[0]!r} header line")
    return sections


def read_split_file(path: str | Path, root: Path) -> Split:
    """A split file (format in the module docstring), checked: known classes, files present, disjoint."""
    where = str(path)
    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"cannot read data.split_file {where}: it is not UTF-8 text") from None
    except OSError as err:
        raise DataError(f"cannot read data.split_file {where}: {err}") from err
    sections = _parse_split_lines(lines, where)
    overlap = sorted(set(sections["train"]) & set(sections["test"]))
    if overlap:
        raise DataError(f"split file {where}: {len(overlap)} paths in both train and test, first: {overlap[0]}")
    label_of = {wnid: i for i, (wnid, _) in enumerate(imagenet_r_classes())}
    out: Split = {}
    for split in SPLITS:
        rels = sections[split]
        unknown = [rel for rel in rels if rel.split("/")[0] not in label_of or "/" not in rel]
        if unknown:
            raise DataError(f"split file {where}: {len(unknown)} {split} paths are not <wnid>/<file> of an "
                            f"ImageNet-R class, first: {unknown[0]}")
        check_files_exist([str(root / rel) for rel in rels], where)
        out[split] = (rels, [label_of[rel.split("/")[0]] for rel in rels])
    return out


def write_split(train: Samples, test: Samples, root: str | Path, path: str | Path) -> None:
    """Write the split a run used in the split-file format, so `data.split_file=PATH` repeats it exactly.

    root: the folder the paths are relative to (`imagenet_r_root(data)`); items must be file paths under it.
    """
    lines = ["train", *_relative(train.items, root), "test", *_relative(test.items, root)]
    write_text(path, "\n".join(lines) + "\n")


def _relative(items: Sequence[str] | np.ndarray, root: str | Path) -> list[str]:
    """"/"-separated paths relative to root; absolute and relative spellings of the same folder both work."""
    if isinstance(items, np.ndarray):
        raise TypeError("write_split needs samples of file paths, not in-memory images")
    base = os.path.abspath(root)
    rels = [os.path.relpath(os.path.abspath(item), base) for item in items]
    outside = [rel for rel in rels if rel.split(os.sep)[0] == os.pardir]
    if outside:
        raise ValueError(f"write_split: {len(outside)} images are not under {root}, first: {outside[0]}")
    return [PurePath(rel).as_posix() for rel in rels]


class ImagenetRSource(SourceDefaults):
    name = "imagenet-r"
    template = "a photo of a {}."
    default_increment = 20

    def class_names(self, data: DataConfig) -> list[str]:
        return [name for _, name in imagenet_r_classes()]

    def load(self, data: DataConfig, split: str) -> Samples:
        """The split's readable images; unreadable ones are dropped after splitting, so skipping one never
        moves another image to the other side."""
        check_split(split)
        root = imagenet_r_root(data)
        if data.split_file:
            rels, targets = read_split_file(data.split_file, root)[split]
        else:
            rels, targets = seeded_split(root, data.split_seed)[split]
        return scanned_samples([str(root / rel) for rel in rels], targets, data.skip_corrupt)

    def save_split(self, data: DataConfig, train: Samples, test: Samples, path: str | Path) -> None:
        """What a run directory calls to record the split it used (see `write_split`)."""
        write_split(train, test, imagenet_r_root(data), path)


SOURCES.register("imagenet-r")(ImagenetRSource())
