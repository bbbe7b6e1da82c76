"""What a method is: a few hooks on the shared class-incremental loop (dmc.engine.loop).

The loop calls, for each task: `begin_task` (structure only: new classes, new task tokens — also replayed
on resume before the checkpoint is loaded), `train_task` (all training stages), then evaluates through
`classifier(seen)`: one object (`methods.classifier`) that maps image-tower outputs (B, D) to scores
(B, C) over the seen classes, on cached tower outputs when the image tower is frozen. Every module that
training changes is registered in `learned`, whose torch `state_dict` is the checkpoint. What a method
needs of the loop beyond its hooks it declares: `needs()` (a calibration, whose memory the loop checks up
front) and `uses_exemplars` (old classes' exemplars, which the loop adds to each task's images through
`exemplar_rows` and the method picks with `remember_exemplars`).

A method sees its own config section (`opts`, from its line in the method table) and, in `cfg`, only the
shared sections it names in `uses`: what it reads is stated once, at the top of its class.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from dmc.config import RunConfig
from dmc.data.benchmark import Benchmark
from dmc.data.dataset import ImageDataset
from dmc.config.table import METHODS
from dmc.memory.exemplars import ExemplarMemory, herding, random_exemplars
from dmc.methods.classifier import Classifier, CosineClassifier
from dmc.models.clip import Backbone, template_text_features
from dmc.training.features import encode_dataset
from dmc.training.losses import cosine_logits
from dmc.training.runtime import Runtime
from dmc.training.task import Task


class Settings(SimpleNamespace):
    """The part of a run's config a method sees: `seed`, `eval` (how the harness encodes) and the shared
    sections the method `uses` (`vision`, `prompt`, `replay`, `memory`, `calibration`)."""


@dataclass(frozen=True)
class Needs:
    """What a method asks of the loop beyond its hooks, read before the first task: the loop never asks
    which method it runs."""

    # it calibrates stored statistics per task (`calibration.*`): the loop checks up front that the
    # calibration's memory fits
    calibration: bool = False


def settings(cfg: RunConfig, uses: tuple[str, ...]) -> Settings:
    """`cfg` narrowed to the seed, `eval` and the sections in `uses`."""
    return Settings(seed=cfg.seed, eval=cfg.eval, **{name: getattr(cfg, name) for name in uses})


class Method:
    """Base: CLIP with template prompts (with `frozen_image_encoder`, exactly the `zeroshot` baseline)."""

    uses: tuple[str, ...] = ()  # the shared config sections the method reads (its own section is `opts`)
    single_task = False  # True: the loop merges every class into one task (the `joint` upper bound)
    # True (opt-in, for methods that never train the image tower): the loop encodes the test set once and
    # reuses the features; it checks that the tower did not change. False (the default): the tower is
    # checkpointed and the test set is encoded at every evaluation, so a method that forgets the flag is
    # slower, never wrong.
    frozen_image_encoder = False
    uses_exemplars = False  # True: task t trains on its images + old classes' exemplars (memory.exemplars_per_class)

    def __init__(self, cfg: RunConfig, backbone: Backbone, bench: Benchmark, rt: Runtime) -> None:
        exemplar_settings = ("memory",) if self.uses_exemplars and "memory" not in self.uses else ()
        self.cfg = settings(cfg, self.uses + exemplar_settings)  # exemplars follow memory.exemplar_*
        section = METHODS.section(cfg.method)
        self.opts: Any = getattr(cfg, section) if section else None  # the method's own options
        self.backbone, self.bench, self.rt = backbone, bench, rt
        self.observers: list = []  # the loop's observers (diagnostics), told of events by `observe`
        self.model = backbone.model.to(rt.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.template = bench.template
        self._template_cache: dict[int, torch.Tensor] = {}
        self.learned = nn.ModuleDict()  # what training changes, by name: the checkpoint is its state_dict
        if not self.frozen_image_encoder:  # a method that adapts the image tower checkpoints it
            self.learned["visual"] = self.model.visual
        self.exemplars = ExemplarMemory() if self.uses_exemplars else None
        if self.exemplars is not None:  # indices into the training set, checkpointed like any trained part
            self.learned["exemplars"] = self.exemplars

    # ---- hooks
    def begin_task(self, task: Task) -> None:
        pass

    def train_task(self, task: Task) -> dict:
        return {}

    def classifier(self, classes: list[int]) -> Classifier:
        """The classifier over `classes` (C of them) as the method stands now: image-tower outputs (B, D) ->
        scores (B, C), column j for classes[j]. Default: the cosine with the template text features."""
        return CosineClassifier(self.template_features(classes))

    def needs(self) -> Needs:
        """What the loop checks for this method before it trains (a method that calibrates says so)."""
        return Needs()

    def observe(self, event: str, task: Task, **data: Any) -> dict:
        """Tell the loop's observers that `event` happened in this task (e.g. "calibrated": old classes'
        statistics were just calibrated); what they measure joins the task's metrics line."""
        out: dict = {}
        for observer in self.observers:
            hook = getattr(observer, event, None)
            if hook is not None:
                out.update(hook(self, task, **data) or {})
        return out

    # ---- exemplar memory (methods with `uses_exemplars`)
    def exemplar_rows(self) -> np.ndarray | None:
        """Training-set rows of every stored exemplar (None for a method without exemplars)."""
        return self.exemplars.rows() if self.exemplars is not None else None

    def stored_images(self) -> int:
        """Images kept for replay (recorded in every metrics line and summary)."""
        return len(self.exemplars) if self.exemplars is not None else 0

    def remember_exemplars(self, task: Task, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Choose the exemplars of the task's new classes from their features (N, D) and labels (N,), rows of
        `task.train_plain`. Each seen class keeps `memory.exemplars_per_class` rows, or with
        `memory.exemplar_budget` an equal share of that total, older classes cut to their best rows."""
        mem = self.cfg.memory
        m = mem.exemplar_budget // len(task.seen) if mem.exemplar_budget else mem.exemplars_per_class
        self.exemplars.truncate(m)
        if m == 0:
            return
        for c in task.classes:
            idx = (labels == c).nonzero().flatten().cpu()  # (N_c,)
            pick = (herding(feats[idx.to(feats.device)], m) if mem.exemplar_selection == "herding"
                    else random_exemplars(len(idx), m, task.generator))
            self.exemplars.set(c, task.train_index[idx[pick].numpy()])

    # ---- shared helpers
    def template_features(self, classes: list[int]) -> torch.Tensor:
        missing = [c for c in classes if c not in self._template_cache]
        if missing:
            names = [self.bench.class_names[c] for c in missing]
            feats = template_text_features(self.backbone, names, self.template, self.rt.device)
            self._template_cache.update({c: f for c, f in zip(missing, feats)})
        return torch.stack([self._template_cache[c] for c in classes])

    def encode(self, dataset: ImageDataset, desc: str, visual: nn.Module | None = None):
        """Image-tower outputs (N, D) and labels (N,) of a dataset (the current tower unless `visual`)."""
        visual = self.model.visual if visual is None else visual
        return encode_dataset(visual, dataset, self.rt, self.cfg.eval.batch_size, desc)

    def scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def logits(self, feats: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        return cosine_logits(feats, protos, self.scale())  # (B, C), float32 also under bf16 autocast

