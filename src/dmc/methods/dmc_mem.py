"""`dmc-ot-mem` [beyond the paper]: DMC-OT whose Gaussian memory is also a classifier.

DMC-OT keeps, without images, a Gaussian per class of image-tower features (new classes' exact statistics,
old classes' OT-calibrated ones) and uses it only to replay features into its text classifier. This method
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

The head is a pure function of the memory, rebuilt when the classifier is asked for (`class_features`):
the checkpoint is DMC-OT's (tower, prompts, memory), so `dmc predict`, `dmc.load` and --resume need nothing
more. What it keeps per class: the memory's mean (D) and covariance (D x D) in float32.
"""
from __future__ import annotations

import torch
from torch import nn

from dmc.discriminant import build_head, fused_scores, head_scores, scaled_head
from dmc.methods.dmc import DMCOT
from dmc.training.task import Task


class DMCOTMem(DMCOT):
    """DMC-OT + a discriminant head on its calibrated memory, fused with the text classifier."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head: tuple | None = None  # (classes, head factors) of the last `class_features` call

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

    # ---- the classifier: text prototypes, and the head of the same classes
    @torch.no_grad()
    def class_features(self, classes: list[int]) -> torch.Tensor:
        """The prompts (C, D) of `classes`; the discriminant head of the same classes is computed here
        from the memory and used by `scores` with these prototypes."""
        h = self.opts
        if h.kind == "none":
            self._head = None
        else:
            means, covs = self.bank.means(classes), self.bank.covs(classes)  # (C, D), (C, D, D) or (C, D)
            self._head = (len(classes), build_head(means, covs, h.kind, h.gamma, h.logdet,
                                                   self.bank.counts(classes), h.shrink))
        return super().class_features(classes)

    def head_scores(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, C) discriminant scores of image-tower outputs feats (B, D) over the classes of the last
        `class_features` call."""
        return head_scores(feats, self._head[1], self.opts.dof)

    def scores(self, feats: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
        """log_softmax(head) + lambda * cos(x, prompt) (B, C); text alone for `memhead.kind=none`."""
        text = self.head(feats).float() @ protos.t()  # (B, C) cosines
        if self._head is None:
            return text
        if self._head[0] != protos.shape[0]:
            raise RuntimeError("scores() needs the prototypes of the last class_features() call")
        head = scaled_head(self.head_scores(feats), self.opts.head_scale, feats.shape[1])
        return fused_scores(head, text, self.opts.text_weight).float()
