"""`dmc-ot-mem` [beyond the paper]: DMC-OT whose Gaussian memory is also a classifier.

DMC-OT keeps, without images, a Gaussian per class of image-tower features (new classes' exact statistics;
old classes' means moved by the calibration, their covariances as stored at the default class-level OT, moved
too by `calibration.method=linear` or `ot+linear`) and uses it only to replay features into its text
classifier. This method
trains exactly as DMC-OT (stage 1, the memory step, stage 2; `dmc.methods.dmc`) and classifies with both:

    score_c(x) = log_softmax_c(head(x)) + lambda * cos(x, p_c)

with p_c the learned prompt of class c (DMC-OT's classifier) and head(x) a Gaussian discriminant computed
from the memory (`dmc.discriminant`): QDA, each class's own covariance shrunk by gamma toward tr/D * I
(FeCAM's class-wise Mahalanobis with the log-determinant), the same statistics read as Student-t
densities (heavier tails than the Gaussian: a badly estimated covariance direction weighs less), or LDA,
one pooled shrunk covariance (FSA's head). `memhead.kind=none` is DMC-OT's own classifier;
`memhead.text_weight=0` the head alone.
`memhead.stage1` says when stage 1 adapts the tower (every task as DMC-OT, the first task only, never):
when it does not, the stored statistics are exact and nothing is calibrated.

The head is a pure function of the memory, rebuilt with every classifier (`classifier(classes)`):
the checkpoint is DMC-OT's (tower, prompts, memory), so `dmc predict`, `dmc.load` and --resume need nothing
more. What it keeps per class: the memory's mean (D) and covariance (D x D) in float32.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from dmc.discriminant import Head, build_head, fused_scores, head_scores, scaled_head
from dmc.methods.classifier import Classifier, CosineClassifier
from dmc.methods.dmc import DMCOT
from dmc.training.task import Task


class GaussianHead(nn.Module):
    """Discriminant scores (B, C) of raw image-tower outputs (B, D) from the classes' statistics (a
    `dmc.discriminant.Head`: `qda` and `t` read means, Cholesky factors and log-determinants or None, `lda`
    weights and biases), put on the scale `memhead.head_scale` names before the fusion."""

    def __init__(self, head: Head, dof: float, scale: str = "none") -> None:
        super().__init__()
        self.spec, self.dof, self.scale = head, dof, scale

    def forward(self, feats: Tensor) -> Tensor:
        return scaled_head(head_scores(feats, self.spec, self.dof), self.scale, feats.shape[1])


class FusedClassifier(Classifier):
    """log_softmax_c(head(x)) + lambda * cos(x, p_c) (B, C): the discriminant head and the text classifier."""

    def __init__(self, head: GaussianHead, text: CosineClassifier, text_weight: float) -> None:
        super().__init__()
        self.head, self.text, self.text_weight = head, text, text_weight

    def forward(self, feats: Tensor) -> Tensor:
        return fused_scores(self.head(feats), self.text(feats), self.text_weight).float()


class DMCOTMem(DMCOT):
    """DMC-OT + a discriminant head on its calibrated memory, fused with the text classifier."""

    def begin_task(self, task: Task) -> None:
        """DMC-OT's, and the memory learns the new classes' sample counts (read by memhead.shrink=oas; what
        a checkpoint without counts is completed with when it is loaded)."""
        super().begin_task(task)
        labels = task.train_plain.labels
        self.bank.note_counts({c: int((labels == c).sum()) for c in task.classes})

    # ---- training: DMC-OT's, with stage 1 on the tasks `memhead.stage1` names
    def adapts_tower(self, task: Task) -> bool:
        schedule = self.opts.stage1
        return self.cfg.vision.enabled and (schedule == "every" or (schedule == "first" and task.index == 0))

    def stage1(self, task: Task, before: nn.Module | None) -> dict:
        return super().stage1(task, before) if self.adapts_tower(task) else {}

    # ---- the classifier: the prompts' cosine, fused with the head of the same classes
    @torch.no_grad()
    def classifier(self, classes: list[int]) -> Classifier:
        """DMC-OT's text classifier over `classes`, fused with the discriminant head of their statistics
        (`memhead.kind=none`: the text classifier alone)."""
        text = super().classifier(classes)
        if self.opts.kind == "none":
            return text
        return FusedClassifier(self.gaussian_head(classes), text, self.opts.text_weight)

    def gaussian_head(self, classes: list[int]) -> GaussianHead:
        """The discriminant head of `classes` from the memory (`memhead.kind`, `gamma` or `shrink`, `logdet`,
        `dof`, `head_scale`)."""
        h = self.opts
        means, covs = self.bank.means(classes), self.bank.covs(classes)  # (C, D), (C, D, D) or (C, D)
        head = build_head(means, covs, h.kind, h.gamma, h.logdet, self.bank.counts(classes), h.shrink)
        return GaussianHead(head, h.dof, h.head_scale)
