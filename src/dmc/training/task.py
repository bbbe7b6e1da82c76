"""One task of the class-incremental sequence, as the loop hands it to a method."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from dmc.data.dataset import ImageDataset


@dataclass
class Task:
    index: int
    classes: list[int]  # remapped labels introduced by this task
    seen: list[int]  # every label seen so far, this task's included (sorted)
    train: ImageDataset  # this task's training images (+ old classes' exemplars, `uses_exemplars`), training transform
    train_plain: ImageDataset  # the same images, evaluation transform (feature caches, statistics)
    generator: torch.Generator  # seeded per task: the only random source a method should draw from
    names: list[str] = field(default_factory=list)
    # plain training images of any classes: for opt-in diagnostics only, never for training
    reference: Optional[Callable[[list[int]], ImageDataset]] = None
    # rows of `train` in the whole training set (exemplars are kept as such rows); None: not tracked
    train_index: Optional[np.ndarray] = None

    def generator_on(self, device: torch.device | str) -> torch.Generator:
        """A generator on `device` (samplers must draw on the device of the statistics), derived from the
        task's generator so that runs and resumes stay reproducible; the task's own one on CPU."""
        if torch.device(device).type == "cpu":
            return self.generator
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        return torch.Generator(device=device).manual_seed(seed)

    @property
    def old(self) -> list[int]:
        new = set(self.classes)
        return [c for c in self.seen if c not in new]
