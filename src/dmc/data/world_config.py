"""Settings of the offline glyph world (see dmc.data.glyphs).

The defaults are measured, not guessed: with the default toy CLIP (dmc.models.toy) severity 0.2 gives about
51% renditions zero-shot, a joint fine-tuning bound of about 85% and sequential fine-tuning far below it.
Severity 0.25 drops zero-shot to about 41%, 0.5 to about 12%; 80 training images per class at 0.25 leave the
joint bound near 72%, hence 100 per class.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WorldConfig:
    seed: int = 0  # rendering seed: the benchmark's images are the same for every run seed
    train_per_class: int = 100  # renditions per class for training
    test_per_class: int = 30  # renditions per class for testing
    severity: float = 0.2  # renditions severity s in [0, 1]: geometric jitter, texture, noise and blur grow with s
    system_fonts: bool = False  # also use system fonts (explicit opt-in; default: matplotlib's fonts only)
