"""What a dataset source provides: class names without touching images, and samples per split.

A source never knows about class orders or tasks (that is `dmc.data.benchmark`). Labels here are the
dataset's *native* ids (0..n_classes-1 in the order of `class_names`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, Union

import numpy as np

from dmc.data.world_config import WorldConfig
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


@dataclass
class DataConfig:
    root: str | None = None  # dataset root folder (real benchmarks); [reconstruction] no default path
    download: bool = False  # allow torchvision to download (CIFAR-100 only)
    split_file: str | None = None  # ImageNet-R: optional list file with `train` / `test` sections
    split_seed: int = 0  # ImageNet-R: seed of the per-class 80/20 split when no split file is given
    skip_corrupt: bool = False  # skip unreadable images (reported) instead of stopping
    num_workers: int = 0  # DataLoader workers
    world: WorldConfig = field(default_factory=WorldConfig)  # the offline glyph world (benchmark `glyphs`)


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


SOURCES: Registry[Source] = Registry("benchmark")
