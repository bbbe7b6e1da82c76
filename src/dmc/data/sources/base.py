"""What a dataset source provides: class names without touching images, and samples per split.

A source never knows about class orders or tasks (that is `dmc.data.benchmark`). Labels here are the
dataset's *native* ids (0..n_classes-1 in the order of `class_names`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, Union

import numpy as np

from dmc.config import DataConfig
from dmc.registry import Registry


@dataclass
class Samples:
    """One split of a dataset.

    items: either a list of image file paths (str), or a uint8 array (N, H, W, 3) of images in memory.
    targets: int64 array (N,) of native class ids.
    """

    items: Union[Sequence[str], np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


class Source(Protocol):
    name: str
    template: str  # prompt template with one "{}" for the class name
    default_base: int
    default_increment: int
    needs_root: bool  # False for generated / downloadable-without-root sources

    def class_names(self, data: DataConfig) -> list[str]:
        """Class names in native id order, without loading images."""

    def load(self, data: DataConfig, split: str) -> Samples:
        """split is "train" or "test". Raise dmc.errors.DataError with one clear line on bad input."""


class SourceDefaults:
    """What most sources share: a first task as large as the others (B0), ten classes per task, images
    under a root folder. A source states its name and template, and only what differs from these."""

    default_base = 0
    default_increment = 10
    needs_root = True


SOURCES: Registry[Source] = Registry("benchmark")
