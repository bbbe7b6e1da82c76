"""torch Datasets over `Samples` with remapped labels."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dmc.data.sources.base import Samples
from dmc.errors import DataError


class ImageDataset(Dataset):
    """(image tensor, remapped label) pairs; images come from file paths or an in-memory uint8 array."""

    def __init__(self, samples: Samples, labels: np.ndarray, transform: Callable) -> None:
        self.samples = samples
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = self.samples.items[i]
        if isinstance(item, str):
            try:
                with Image.open(item) as im:
                    item = im.convert("RGB")
            except OSError as exc:
                raise DataError(f"unreadable image {item}: {exc}") from None
        return self.transform(item), int(self.labels[i])


def select(dataset: ImageDataset, classes: list[int] | set[int]) -> ImageDataset:
    """The part of a dataset whose labels are in `classes`."""
    mask = np.isin(dataset.labels, np.asarray(sorted(classes)))
    return subset_dataset(dataset, np.nonzero(mask)[0])


def subset_dataset(dataset: ImageDataset, idx: np.ndarray) -> ImageDataset:
    items = dataset.samples.items
    items = items[idx] if isinstance(items, np.ndarray) else [items[i] for i in idx]
    return ImageDataset(Samples(items, dataset.samples.targets[idx]), dataset.labels[idx], dataset.transform)
