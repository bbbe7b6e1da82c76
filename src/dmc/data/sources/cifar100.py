"""CIFAR-100 through torchvision: 100 classes, 500 train / 100 test 32x32 images each. B0-Inc10.

Native ids are torchvision's label ids (the `fine_label_names` order of the dataset's meta file, i.e.
alphabetical). The names ship with the package so prompts can be built without the data; at load time
they are checked against the meta file.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES, Samples, SourceDefaults
from dmc.data.sources.files import check_split, read_package_lines
from dmc.errors import DataError

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR100

_HOW_TO_GET = (
    "pass --set data.root=DIR and --set data.download=true on a machine with internet (torchvision fetches "
    "cifar-100-python.tar.gz into DIR), or copy an extracted cifar-100-python/ folder into DIR"
)


def cifar100_names() -> list[str]:
    """The 100 fine label names in label-id order, underscores as spaces ("aquarium fish")."""
    return [name.replace("_", " ") for name in read_package_lines("cifar100_classes.txt")]


def _open(data: DataConfig, train: bool) -> CIFAR100:
    """torchvision's dataset, with its RuntimeError / network errors turned into one DataError line.

    torchvision is imported here, not at module level, so listing benchmarks stays fast.
    """
    from torchvision.datasets import CIFAR100

    if not data.root:
        raise DataError(f"CIFAR-100 needs data.root; {_HOW_TO_GET}")
    try:
        return CIFAR100(os.path.expanduser(data.root), train=train, download=data.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted" (md5 check)
        raise DataError(
            f"CIFAR-100 not found or corrupted (md5 check) in {data.root}/cifar-100-python; {_HOW_TO_GET}"
        ) from err
    except OSError as err:  # includes URLError: download attempted without internet
        raise DataError(f"CIFAR-100 download into {data.root} failed ({err}); {_HOW_TO_GET}") from err


class Cifar100Source(SourceDefaults):
    name = "cifar100"
    template = "a photo of a {}."

    def class_names(self, data: DataConfig) -> list[str]:
        return cifar100_names()

    def load(self, data: DataConfig, split: str) -> Samples:
        """Images as one uint8 array (N, 32, 32, 3) straight from torchvision's `.data`."""
        check_split(split)
        dataset = _open(data, train=split == "train")
        found = [name.replace("_", " ") for name in dataset.classes]
        if found != cifar100_names():
            raise DataError(f"CIFAR-100 meta file in {data.root} lists unexpected class names: {found[:3]}...")
        items = np.ascontiguousarray(dataset.data, dtype=np.uint8)  # (N, 32, 32, 3)
        targets = np.asarray(dataset.targets, dtype=np.int64)  # (N,)
        if items.ndim != 4 or items.shape[1:] != (32, 32, 3) or len(items) != len(targets):
            raise DataError(f"CIFAR-100 in {data.root} has unexpected arrays: images {items.shape}, "
                            f"{len(targets)} labels")
        return Samples(items=items, targets=targets)


SOURCES.register("cifar100")(Cifar100Source())
