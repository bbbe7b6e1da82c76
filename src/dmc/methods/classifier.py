"""What a method hands evaluation: one classifier per set of seen classes.

A `Classifier` is a small torch module that holds what it needs (prototypes, weights, the trained modules
it reads) and maps image-tower outputs (B, D, float32) to scores (B, C), column j for the j-th class it was
built for; the prediction is their argmax. The loop's evaluation, `dmc predict`, `dmc.load` and the tools
that re-score runs call only that, so they never need to know which method made it (as timm's
`get_classifier()` or Avalanche's `IncrementalClassifier`). The classifiers every method shares are here;
one that a single method uses lives in that method's file.

A classifier reads the method's trained modules (an adapter, a fusion layer) without copying them: it is
what the method classifies with now, built again after every task.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    """Image-tower outputs feats (B, D) float32 -> scores (B, C) over the classes it was built for."""

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every classifier has its own
        raise NotImplementedError


class CosineClassifier(Classifier):
    """cos(adapter(x), p_c): the normalised features (through an optional adapter, RAPF's) against normalised
    class prototypes p_c (C, D) (template text, learned prompts, class means)."""

    def __init__(self, prototypes: torch.Tensor, adapter: nn.Module | None = None) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes.float())  # (C, D), normalised
        self.adapter = adapter

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats if self.adapter is None else self.adapter(feats)  # (B, D)
        return F.normalize(x, dim=-1).float() @ self.prototypes.t()  # (B, C)


class LinearClassifier(Classifier):
    """w_c^T x + b_c on the raw tower outputs (a linear discriminant: FSA's LDA head)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.float())  # (C, D)
        self.register_buffer("bias", bias.float())  # (C,)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # the bias as a last input of ones, inside the one matmul: the float operations the runs were scored by
        ones = feats.new_ones(feats.shape[0], 1, dtype=torch.float32)
        x = torch.cat([feats.float(), ones], dim=1)  # (B, D + 1)
        return x @ torch.cat([self.weight, self.bias[:, None]], dim=1).t()  # (B, C)
