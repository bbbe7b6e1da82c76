"""Any dataset laid out as `train/<class>/…` and `test/<class>/…` under data.root. B0-Inc10 by default.

Native ids follow the sorted class folder names (the ImageFolder convention every peer uses); the display
name of a class is its folder name with underscores as spaces. Images may sit in nested folders below a
class folder; they are found recursively in sorted order.
"""
from __future__ import annotations

from pathlib import Path

from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES, Samples, SourceDefaults
from dmc.data.sources.files import SPLITS, check_root, check_split, list_images, list_subfolders, scanned_samples
from dmc.errors import DataError


def underscore_name(folder: str) -> str:
    """"golden_retriever" -> "golden retriever" (runs of separators collapse to one space)."""
    return " ".join(folder.replace("_", " ").split())


def _first(names: set[str]) -> str:
    return sorted(names)[0]


def _compare_splits(found: dict[str, list[str]], root: Path) -> None:
    """Train and test must name the same classes, else native ids would mean different things."""
    train, test = set(found["train"]), set(found["test"])
    if train == test:
        return
    parts = []
    if train - test:
        parts.append(f"{len(train - test)} only in train/ (first: {_first(train - test)})")
    if test - train:
        parts.append(f"{len(test - train)} only in test/ (first: {_first(test - train)})")
    raise DataError(f"train/ and test/ class folders in {root} differ: {', '.join(parts)}")


def _check_unique(names: list[str], folders: list[str]) -> None:
    """Two folders with the same display name ("a_b", "a b") would get the same prompt."""
    seen: dict[str, str] = {}
    for name, folder in zip(names, folders):
        if name in seen:
            raise DataError(f"class folders {seen[name]!r} and {folder!r} both read as class {name!r}")
        seen[name] = folder


class ImageFolderSource(SourceDefaults):
    """Subclasses change the name, template, defaults, help texts and `display_name`."""

    name = "imagefolder"
    template = "a photo of a {}."
    what = "a folder with train/<class name>/ and test/<class name>/ subfolders of images"
    how_to_get = "arrange your images that way (folder names are the class names)"

    def display_name(self, folder: str) -> str:
        return underscore_name(folder)

    def root(self, data: DataConfig) -> Path:
        """data.root, checked to hold both split folders."""
        root = check_root(data.root, self.what, self.how_to_get)
        missing = [s for s in SPLITS if not (root / s).is_dir()]
        if missing:
            raise DataError(f"{root} has no {missing[0]}/ folder; expected {self.what}; {self.how_to_get}")
        return root

    def class_folders(self, data: DataConfig) -> list[str]:
        """Sorted class folder names; native id = position. Train and test must agree."""
        root = self.root(data)
        found = {split: list_subfolders(root / split) for split in SPLITS}
        _compare_splits(found, root)
        if not found["train"]:
            raise DataError(f"{root / 'train'} has no class folders; expected {self.what}")
        return found["train"]

    def class_names(self, data: DataConfig) -> list[str]:
        folders = self.class_folders(data)
        names = [self.display_name(f) for f in folders]
        _check_unique(names, folders)
        return names

    def load(self, data: DataConfig, split: str) -> Samples:
        check_split(split)
        root = self.root(data)
        paths: list[str] = []
        targets: list[int] = []
        empty: list[str] = []
        for label, folder in enumerate(self.class_folders(data)):
            images = list_images(root / split / folder)
            if not images:
                empty.append(f"{split}/{folder}")
            paths.extend(images)
            targets.extend([label] * len(images))
        if empty:
            raise DataError(f"{len(empty)} class folders in {root} hold no images, first: {empty[0]}")
        return scanned_samples(paths, targets, data.skip_corrupt)


SOURCES.register("imagefolder")(ImageFolderSource())
