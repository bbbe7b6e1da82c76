"""An example method (docs/extending.md): each class's prototype mixes its template text feature with the
mean of its images' features, on a frozen CLIP. In the package this file is `src/dmc/methods/text_mean.py`;
its options and its line in the method table are in `text_mean_entry.py` (in the package: its part of
`config/table.py`). tests/test_extending.py sets its option with --set, runs it for three tasks, resumes it
and predicts with it."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dmc.methods import Method
from dmc.methods.classifier import CosineClassifier
from dmc.training.task import Task


class ClassMeans(nn.Module):
    """The mean image feature of every class seen so far, as a buffer: the checkpoint holds it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(0, dim))  # (C, D)

    def grow(self, n: int) -> None:
        extra = n - len(self.means)
        if extra > 0:
            self.means = torch.cat([self.means, self.means.new_zeros(extra, self.means.shape[1])])


class TextMean(Method):
    frozen_image_encoder = True  # the image tower never trains: the loop encodes the test set once

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)  # self.opts: its section (text_mean.*); self.cfg: the shared ones it uses
        self.memory = ClassMeans(self.model.visual.output_dim).to(self.rt.device)
        self.learned["memory"] = self.memory  # what training changes: checkpointed, loaded on resume

    def begin_task(self, task: Task) -> None:
        self.memory.grow(max(task.seen) + 1)  # structure only: replayed on resume before the checkpoint loads

    def train_task(self, task: Task) -> dict:
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")  # (N, D), (N,)
        for c in task.classes:
            self.memory.means[c] = F.normalize(feats[labels == c], dim=-1).mean(0)
        return {}

    @torch.no_grad()
    def classifier(self, classes: list[int]) -> CosineClassifier:
        text = self.template_features(classes)  # (C, D), normalised
        image = F.normalize(self.memory.means[classes], dim=-1)  # (C, D)
        return CosineClassifier(F.normalize(self.opts.alpha * text + (1 - self.opts.alpha) * image, dim=-1))
