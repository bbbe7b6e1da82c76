"""torch Datasets over `Samples` with remapped labels."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from dmc.data.decode import read_rgb, to_rgb

from dmc.data.sources.base import Samples
from dmc.errors import DataError


class ImageDataset(Dataset):
    """(image tensor, remapped label) pairs; images come from file paths or an in-memory uint8 array.

    A dataset made by `select` / `subset_dataset` remembers the dataset it was cut from (`base`) and its
    positions there (`index`), so that data loaders with worker processes are built once per base dataset
    and only handed indices afterwards. A key may be `(i, seed)`: the transform then draws its randomness
    (crops, flips) from `seed` alone, so an augmented sample does not depend on which process or worker
    loads it.
    """

    def __init__(self, samples: Samples, labels: np.ndarray, transform: Callable,
                 base: ImageDataset | None = None, index: np.ndarray | None = None) -> None:
        self.samples = samples
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.base = base  # the dataset this one was cut from (None: it is a base)
        self.index = index  # positions in `base`, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, seed = key if isinstance(key, tuple) else (key, None)
        item = self.samples.items[i]
        if isinstance(item, str):
            try:
                item = read_rgb(item)  # 16-bit, palette, CMYK, alpha: 8-bit RGB (dmc.data.decode)
            except (OSError, ValueError, SyntaxError) as exc:  # cut short after an intact header, too
                raise DataError(f"unreadable image {item} ({exc}); set data.skip_corrupt=true to skip unreadable "
                                "images (each is then decoded once before training)") from None
        elif not isinstance(item, np.ndarray) and getattr(item, "mode", "RGB") != "RGB":
            item = to_rgb(item)  # a PIL image given as it is (dmc.load(...).predict)
        if seed is None:
            return self.transform(item), int(self.labels[i])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(item), int(self.labels[i])

    def root(self) -> tuple[ImageDataset, np.ndarray]:
        """The base dataset and this dataset's positions in it."""
        if self.base is None:
            return self, np.arange(len(self))
        return self.base, self.index


def select(dataset: ImageDataset, classes: list[int] | set[int]) -> ImageDataset:
    """The part of a dataset whose labels are in `classes`."""
    mask = np.isin(dataset.labels, np.asarray(sorted(classes)))
    return subset_dataset(dataset, np.nonzero(mask)[0])


def subset_dataset(dataset: ImageDataset, idx: np.ndarray) -> ImageDataset:
    idx = np.asarray(idx, dtype=np.int64)
    items = dataset.samples.items
    items = items[idx] if isinstance(items, np.ndarray) else [items[i] for i in idx]
    base, index = dataset.root()
    return ImageDataset(Samples(items, dataset.samples.targets[idx]), dataset.labels[idx], dataset.transform,
                        base=base, index=index[idx])
