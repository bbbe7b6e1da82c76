"""What a method is: a few hooks on the shared class-incremental loop (dmc.engine.loop).

The loop calls, for each task: `begin_task` (structure only: new classes, new task tokens — also replayed
on resume before the checkpoint is loaded), `train_task` (all training stages), then evaluation through
`class_features` and `image_features`. `state_dict` holds everything that training changed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from dmc.data.benchmark import Benchmark
from dmc.data.dataset import ImageDataset
from dmc.engine.runtime import Runtime
from dmc.models.clip import Backbone, template_text_features
from dmc.registry import Registry


@dataclass
class Task:
    index: int
    classes: list[int]  # remapped labels introduced by this task
    seen: list[int]  # every label seen so far, this task's included (sorted)
    train: ImageDataset  # this task's training images, training transform
    train_plain: ImageDataset  # the same images, evaluation transform (feature caches, statistics)
    generator: torch.Generator  # seeded per task: the only random source a method should draw from
    names: list[str] = field(default_factory=list)
    # plain training images of any classes: for opt-in diagnostics only, never for training
    reference: Optional[Callable[[list[int]], ImageDataset]] = None

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


class Method:
    """Base: frozen CLIP with template prompts (which is exactly the `zeroshot` baseline)."""

    name = "base"
    single_task = False  # True: the loop merges every class into one task (the `joint` upper bound)
    frozen_image_encoder = True  # True: the loop encodes the test set once and reuses the features

    def __init__(self, cfg, backbone: Backbone, bench: Benchmark, rt: Runtime) -> None:
        self.cfg, self.backbone, self.bench, self.rt = cfg, backbone, bench, rt
        self.model = backbone.model.to(rt.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.template = bench.template
        self._template_cache: dict[int, torch.Tensor] = {}

    # ---- hooks
    def begin_task(self, task: Task) -> None:
        pass

    def train_task(self, task: Task) -> dict:
        return {}

    def class_features(self, classes: list[int]) -> torch.Tensor:
        """Normalised class prototypes (C, D) used as the classifier over `classes`."""
        return self.template_features(classes)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.visual(images))  # (B, D), normalised

    def head(self, feats: torch.Tensor) -> torch.Tensor:
        """Image-encoder output (B, D) -> normalised features compared with the class prototypes."""
        return F.normalize(feats, dim=-1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    # ---- shared helpers
    def template_features(self, classes: list[int]) -> torch.Tensor:
        missing = [c for c in classes if c not in self._template_cache]
        if missing:
            names = [self.bench.class_names[c] for c in missing]
            feats = template_text_features(self.backbone, names, self.template, self.rt.device)
            self._template_cache.update({c: f for c, f in zip(missing, feats)})
        return torch.stack([self._template_cache[c] for c in classes])

    def scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def logits(self, feats: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        return self.scale() * F.normalize(feats, dim=-1) @ protos.t()  # (B, C)


METHODS: Registry[type[Method]] = Registry("method")
METHODS.register("zeroshot")(type("ZeroShot", (Method,), {"name": "zeroshot"}))
