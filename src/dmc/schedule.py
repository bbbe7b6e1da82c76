"""Learning-rate schedules shared by every optimisation in the project (stages, toy pretraining)."""
from __future__ import annotations

import math


def cosine_lr(step: int, total: int, warmup: int = 0) -> float:
    """Multiplier of the base learning rate: linear warm-up, then cosine decay to 0."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
