"""`synthetic`: a tiny generated benchmark (coloured shapes on noise) for tests and quick checks.

12 classes = 4 colours x 3 shapes, 32x32 images, deterministic from `data.world.seed`. It is far simpler
than the glyph world and exists so the harness can be exercised in seconds.
"""
from __future__ import annotations

import numpy as np

from dmc.config import DataConfig
from dmc.data.sources.base import SOURCES, Samples, SourceDefaults

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40)}
SHAPES = ("square", "disc", "bar")
SIZE = 32


def _mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    if shape == "square":
        return (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
    if shape == "disc":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    return (abs(xx - cx) <= r * 1.4) & (abs(yy - cy) <= r * 0.4)


def render(n_per_class: int, seed: int) -> Samples:
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for cid, (colour, shape) in enumerate((c, s) for c in COLOURS for s in SHAPES):
        for _ in range(n_per_class):
            img = rng.integers(0, 90, size=(SIZE, SIZE, 3)).astype(np.float32)
            cx, cy, r = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(5, 8)
            img[_mask(shape, cx, cy, r)] = COLOURS[colour]
            images.append(np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8))
            targets.append(cid)
    return Samples(np.stack(images), np.asarray(targets, dtype=np.int64))


class SyntheticSource(SourceDefaults):
    name = "synthetic"
    template = "a picture of a {}."
    default_increment = 4
    needs_root = False

    def class_names(self, data: DataConfig) -> list[str]:
        return [f"{c} {s}" for c in COLOURS for s in SHAPES]

    def load(self, data: DataConfig, split: str) -> Samples:
        n = 16 if split == "train" else 8
        return render(n, data.world.seed * 2 + (split == "test"))


SOURCES.register("synthetic")(SyntheticSource())
