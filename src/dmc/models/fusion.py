"""Modules of PROOF (Zhou et al., "Learning without Forgetting for Vision-Language Models", TPAMI 2025):
expandable task-specific projections and a cross-modal fusion layer with learnable context prompts.

Both grow with the tasks and freeze what earlier tasks learned: `add` / `add_context` are called once per
task (structure only, as a method's `begin_task`), so a resumed run rebuilds the same shapes before its
checkpoint is loaded.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ExpandableProjection(nn.Module):
    """P(x) = sum_k L_k(x) over one linear map L_k: D -> D per task; the maps of earlier tasks are frozen."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.maps = nn.ModuleList()

    def add(self, device: torch.device | str = "cpu") -> None:
        """Freeze every map so far and append a new trainable one (PyTorch's default initialisation)."""
        for p in self.maps.parameters():
            p.requires_grad_(False)
        self.maps.append(nn.Linear(self.dim, self.dim, device=device))

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.maps]).sum(0)  # (..., D)


class ContextFusion(nn.Module):
    """One self-attention layer over [query; class tokens; context prompts], with residual and LayerNorm.

    For each query q_b (B, D) the sequence is [q_b, tokens (T, D), context (K, D)]; every position attends
    to every other (`heads` heads of width D, scale 1/sqrt(D), dropout on the attention weights), then
    out = LayerNorm(x + dropout(W_o attn(x))). The context prompts are learnable tokens, `add_context(n)`
    of them per task (N(0, 1) initialisation, earlier ones frozen). Returns (B, 1 + T + K, D).
    """

    def __init__(self, dim: int, heads: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        self.dim, self.heads, self.dropout = dim, heads, dropout
        self.qkv = nn.ModuleList(nn.Linear(dim, heads * dim, bias=False) for _ in range(3))
        for lin in self.qkv:
            nn.init.normal_(lin.weight, mean=0.0, std=math.sqrt(1.0 / dim))  # std sqrt(2 / (D + D))
        self.out = nn.Linear(heads * dim, dim)
        nn.init.xavier_normal_(self.out.weight)
        self.norm = nn.LayerNorm(dim)
        self.context = nn.ParameterList()

    def add_context(self, n: int) -> None:
        for p in self.context:
            p.requires_grad_(False)
        self.context.append(nn.Parameter(torch.randn(n, self.dim, device=self.out.weight.device)))

    def forward(self, query: Tensor, tokens: Tensor) -> Tensor:
        b, d, h = query.shape[0], self.dim, self.heads
        ctx = [c for c in self.context if c.numel()]
        shared = torch.cat([tokens, *ctx]) if ctx else tokens  # (T + K, D)
        x = torch.cat([query[:, None], shared.expand(b, -1, -1)], dim=1)  # (B, L, D)
        q, k, v = (lin(x).view(b, -1, h, d).transpose(1, 2) for lin in self.qkv)  # (B, h, L, D) each
        p = self.dropout if self.training else 0.0
        att = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, h, L, D)
        att = att.transpose(1, 2).reshape(b, -1, h * d)  # (B, L, h*D)
        return self.norm(x + F.dropout(self.out(att), p, self.training))  # (B, L, D)
