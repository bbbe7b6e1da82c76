"""CUB-200-2011: 200 bird species, official split (5,994 train / 5,794 test). B0-Inc20.

Layout: the official `CUB_200_2011/` folder (`images.txt`, `train_test_split.txt`,
`image_class_labels.txt`, `classes.txt`, `images/…`); data.root is that folder or its parent.
Native id = official class id - 1. Samples come in official image-id order.

Class names: "001.Black_footed_Albatross" -> "black footed albatross": the number is dropped, underscores
become spaces and everything is lower case. Lower case loses nothing for CLIP, whose tokenizer lower-cases
all text, and it keeps names like "Brewer_Blackbird" consistent with "black footed albatross". The list
ships with the package; at load time classes.txt is checked against it.

Template "a photo of a {}, a type of bird.": CLIP's prompt for its bird benchmark (Birdsnap); naming the
domain helps the text tower with species names that are also everyday words ("cardinal", "mockingbird").
"""
from __future__ import annotations

from pathlib import Path

from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES, Samples, SourceDefaults
from dmc.data.sources.files import (check_files_exist, check_root, check_split, read_package_lines, scanned_samples,
                                    unpacked_root)
from dmc.errors import DataError

_WHAT = "the extracted CUB_200_2011/ folder (images.txt, classes.txt, images/ …) or its parent"
_HOW_TO_GET = (
    "download CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/ and extract it"
)
_FOLDER = "CUB_200_2011"
_TABLES = ("images.txt", "train_test_split.txt", "image_class_labels.txt", "classes.txt")


def clean_cub_name(folder: str) -> str:
    """"001.Black_footed_Albatross" -> "black footed albatross"."""
    _, _, name = folder.partition(".")
    return " ".join((name or folder).replace("_", " ").split()).lower()


def cub_folders() -> list[str]:
    """The official class folder names ("001.Black_footed_Albatross", …) in native id order."""
    return list(read_package_lines("cub200_classes.txt"))


def cub_root(data: DataConfig) -> Path:
    """The CUB_200_2011 folder: data.root itself, or data.root/CUB_200_2011."""
    root = unpacked_root(check_root(data.root, _WHAT, _HOW_TO_GET), _FOLDER, lambda r: (r / "images.txt").is_file())
    missing = [t for t in _TABLES if not (root / t).is_file()]
    if missing:
        raise DataError(f"CUB-200-2011: {missing[0]} not found in {root}; data.root must be {_WHAT}; "
                        f"{_HOW_TO_GET}")
    return root


def read_table(path: Path) -> dict[int, str]:
    """An official "<id> <value>" file as {id: value}; malformed lines name file and line."""
    table: dict[int, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; the official CUB_200_2011 files are") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        if not key.isdigit() or not value.strip():
            raise DataError(f"{path}:{number}: expected '<id> <value>', got {line.strip()!r}")
        table[int(key)] = value.strip()
    return table


def _check_classes(root: Path) -> None:
    """classes.txt must be the official list: native ids and prompts rely on it."""
    found = read_table(root / "classes.txt")
    expected = cub_folders()
    listed = [found.get(i + 1) for i in range(len(expected))]
    if len(found) != len(expected) or listed != expected:
        first = next((i for i, (a, b) in enumerate(zip(listed, expected)) if a != b), len(expected))
        raise DataError(f"{root / 'classes.txt'} is not the official CUB-200-2011 class list "
                        f"({len(found)} classes; first difference at id {first + 1})")


def _lookup(table: dict[int, str], ids: list[int], path: Path) -> list[str]:
    """Values of `ids` in a table that must cover every image of images.txt."""
    absent = [i for i in ids if i not in table]
    if absent:
        raise DataError(f"{path}: {len(absent)} image ids of images.txt are missing, first: {absent[0]}")
    return [table[i] for i in ids]


def _labels(values: list[str], path: Path) -> list[int]:
    """Official 1-based class ids -> native ids."""
    n = len(cub_folders())
    bad = [v for v in values if not v.isdigit() or not 1 <= int(v) <= n]
    if bad:
        raise DataError(f"{path}: class ids must be 1..{n}, found {bad[0]!r}")
    return [int(v) - 1 for v in values]


class Cub200Source(SourceDefaults):
    name = "cub200"
    template = "a photo of a {}, a type of bird."
    default_increment = 20

    def class_names(self, data: DataConfig) -> list[str]:
        return [clean_cub_name(folder) for folder in cub_folders()]

    def load(self, data: DataConfig, split: str) -> Samples:
        check_split(split)
        root = cub_root(data)
        _check_classes(root)
        images = read_table(root / "images.txt")
        ids = sorted(images)
        split_file = root / "train_test_split.txt"
        flags = _lookup(read_table(split_file), ids, split_file)
        if any(f not in ("0", "1") for f in flags):
            raise DataError(f"{split_file}: flags must be 1 (train) or 0 (test)")
        label_file = root / "image_class_labels.txt"
        labels = _labels(_lookup(read_table(label_file), ids, label_file), label_file)
        want = "1" if split == "train" else "0"
        chosen = [k for k, flag in enumerate(flags) if flag == want]
        paths = [str(root / "images" / images[ids[k]]) for k in chosen]
        check_files_exist(paths, str(root / "images.txt"))
        return scanned_samples(paths, [labels[k] for k in chosen], data.skip_corrupt)


SOURCES.register("cub200")(Cub200Source())
