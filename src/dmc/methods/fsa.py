"""FSA: first-session adaptation of the image tower, then a linear discriminant (LDA) head on frozen features.

Reconstructed from Panos, Kobe, Reino, Aljundi, Cipolla, "First Session Adaptation: A Strong Replay-Free
Baseline for Class-Incremental Learning" (ICCV 2023). The image tower is adapted on the first task only
(``fsa.adapt``: here the ``vision.*`` recipe of ``stages.train_vision`` against the template text of the
first task's classes, as ``ranpac.adapt``; FSA adapts with a linear head and no text), then frozen for good.
Every class's mean and covariance of the frozen features are kept (``memory.*``, the Gaussian memory DMC
uses; exact, since the tower no longer changes), and the classifier is the LDA of the pooled covariance,
the mean of the classes' covariances shrunk by ``fsa.gamma`` toward tr/D * I (``dmc.discriminant``): class
c scores w_c^T x + b_c. No text at test time, no image kept.
"""
from __future__ import annotations

import time

import torch

from dmc.discriminant import lda_weights
from dmc.memory.gaussian import GaussianBank
from dmc.methods.base import Method
from dmc.methods.classifier import LinearClassifier
from dmc.methods.stages import adapt_first_session
from dmc.training.task import Task


class FSA(Method):
    uses = ("vision", "memory")  # the first-task adaptation's recipe; how class statistics are estimated
    frozen_image_encoder = True  # frozen, or adapted on the first task only (before the test set is encoded)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bank = GaussianBank(self.cfg.memory, device=self.rt.device)
        self.learned["memory"] = self.bank
        if self.opts.adapt:
            self.learned["visual"] = self.model.visual

    def train_task(self, task: Task) -> dict:
        info: dict = {"time_s": {}}
        if self.opts.adapt and task.index == 0:
            info["adapt_loss"], info["time_s"]["adapt"] = adapt_first_session(self, task)
        clock = time.time()
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")
        for c in task.classes:
            self.bank.add(c, feats[labels == c])
        info["time_s"]["memory"] = time.time() - clock
        return info

    # ---- evaluation: w_c^T x + b_c on the raw tower outputs (the LDA is fitted on them)
    @torch.no_grad()
    def classifier(self, classes: list[int]) -> LinearClassifier:
        covs = self.bank.covs(classes)
        covs = torch.diag_embed(covs) if covs.ndim == 2 else covs  # memory.covariance=diag
        return LinearClassifier(*lda_weights(self.bank.means(classes), covs, self.opts.gamma))  # (C, D), (C,)
