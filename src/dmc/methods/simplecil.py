"""SimpleCIL: the nearest class mean of frozen image features (Zhou, Cai, Ye, Zhan, Liu, "Revisiting
Class-Incremental Learning with Pre-Trained Models: Generalizability and Adaptivity are All You Need",
IJCV 2025). The sanity floor of every table: no training at all.

Each class is its mean of L2-normalised image features of the frozen tower (a Gaussian bank with diagonal
covariances, so the means are checkpointed like any memory), and a test image goes to the class whose
normalised mean is closest in cosine. [reconstruction]: means of normalised features (SimpleCIL's code
averages raw features; its cosine classifier then normalises the means).
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from dmc.memory.gaussian import GaussianBank
from dmc.methods.base import Method
from dmc.methods.classifier import CosineClassifier
from dmc.training.task import Task


class SimpleCIL(Method):
    uses = ("memory",)
    frozen_image_encoder = True  # the tower never trains

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        means_only = dataclasses.replace(self.cfg.memory, covariance="diag", normalize=True, shrink=False)
        self.bank = GaussianBank(means_only, device=self.rt.device)
        self.learned["memory"] = self.bank

    def train_task(self, task: Task) -> dict:
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")
        for c in task.classes:
            self.bank.add(c, feats[labels == c])
        return {}

    @torch.no_grad()
    def classifier(self, classes: list[int]) -> CosineClassifier:
        return CosineClassifier(F.normalize(self.bank.means(classes), dim=-1))  # (C, D) class means
