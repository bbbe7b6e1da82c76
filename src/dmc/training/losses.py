"""What every stage's loss is made of: cosine logits in float32, and means over the global batch.

Float32 logits: under bf16 autocast a matmul returns bf16, whose 8-bit mantissa puts neighbouring values
at 2^-7 relative; at CLIP's logit scale (100) logits of 16-32 are then only good to 0.125, which blurs the
small margins between similar classes (fine-grained CUB). The logits are computed with autocast off, from
float32 copies of the features and prototypes; the towers themselves still run in bf16.

Global means: under torchrun each rank holds a share of the global batch (dmc.training.loading); a loss
that is a mean over the rank's own samples would weight samples by the share sizes. `cross_entropy`
returns each rank's term of the mean over the global batch instead (`Runtime.global_mean`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dmc.training.runtime import Runtime


def cosine_logits(feats: torch.Tensor, protos: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * cos(feats, protos) in float32: feats (B, D) any scale, protos (C, D) normalised -> (B, C)."""
    with torch.autocast(feats.device.type, enabled=False):
        return scale * F.normalize(feats.float(), dim=-1) @ protos.float().t()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Cross-entropy averaged over the global batch (plain `F.cross_entropy` without torchrun).
    logits (B, C), targets (B,) -> scalar."""
    if rt.world_size == 1:
        return F.cross_entropy(logits, targets)
    return rt.global_mean(F.cross_entropy(logits, targets, reduction="none"))
