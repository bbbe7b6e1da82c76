"""Settings of the offline glyph world (see dmc.data.glyphs)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorldConfig:
    seed: int = 0  # rendering seed: the benchmark's images are the same for every run seed
    train_per_class: int = 80  # renditions per class for training
    test_per_class: int = 30  # renditions per class for testing
    severity: float = 0.25  # renditions severity s in [0, 1]
    system_fonts: bool = False  # also use system fonts (explicit opt-in; default: matplotlib's fonts only)
