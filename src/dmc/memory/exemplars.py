"""Exemplar memory: a few training images per class, kept as row indices into the training set.

Methods that replay images (PROOF) keep, for each class, the indices of the training rows chosen when the
class was learned; the images themselves are never copied. Rows are chosen by herding (iCaRL, Rebuffi et
al., CVPR 2017; the selection of PyCIL) or at random, and kept in the order chosen: herding's first m rows
are exactly the herding choice of m, so shrinking a class to m rows (a fixed total budget shared by more
classes) is a truncation, never a new selection.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def herding(feats: Tensor, m: int) -> Tensor:
    """Greedy herding: indices (min(m, N),) into feats (N, D), in the order chosen.

    With x_n the L2-normalised features and mu their mean, step k picks the unchosen n minimising
    ||mu - (S + x_n) / k||, S the sum of the k - 1 rows chosen so far: the running mean of the chosen rows
    follows the class mean as closely as possible (iCaRL's exemplar selection; PyCIL's, which does not
    re-normalise mu). Ties go to the lowest index. float64.
    """
    x = F.normalize(feats.to(torch.float64), dim=-1)  # (N, D)
    mu = x.mean(0)  # (D,)
    taken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    total = torch.zeros_like(mu)
    chosen: list[int] = []
    for k in range(1, min(m, len(x)) + 1):
        dist = ((mu - (total + x) / k) ** 2).sum(1)  # (N,)
        dist[taken] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        taken[i] = True
        total += x[i]
    return torch.tensor(chosen, dtype=torch.long)


def random_exemplars(n: int, m: int, generator: torch.Generator | None) -> Tensor:
    """min(m, n) distinct indices into n rows, uniformly at random from `generator`."""
    return torch.randperm(n, generator=generator)[:m]


class ExemplarMemory(nn.Module):
    """Per-class row indices into the training set, each class's rows in the order they were chosen.

    A module, so that a method's checkpoint holds it: ``state_dict`` has one int64 tensor ``rows.{cid}`` per
    class, and ``load_state_dict`` replaces the contents (a resumed run selects nothing again).
    """

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[int, Tensor] = {}

    def __len__(self) -> int:
        """Stored images, all classes together."""
        return sum(len(r) for r in self._rows.values())

    def classes(self) -> list[int]:
        return sorted(self._rows)

    def set(self, class_id: int, rows: Tensor | np.ndarray) -> None:
        """Store (or replace) a class's rows, most important first."""
        self._rows[operator.index(class_id)] = torch.as_tensor(np.asarray(rows), dtype=torch.long).flatten()

    def truncate(self, m: int) -> None:
        """Keep each class's first m rows (its best m under herding)."""
        self._rows = {c: r[:m] for c, r in self._rows.items()}

    def rows(self, classes: list[int] | None = None) -> np.ndarray:
        """Training-set rows of `classes` (default: all, sorted by class), concatenated."""
        keep = self.classes() if classes is None else [c for c in classes if c in self._rows]
        if not keep:
            return np.zeros(0, dtype=np.int64)
        return torch.cat([self._rows[c] for c in keep]).numpy()

    # ---- torch's module protocol (the class list grows, so rows live in a dict, as in GaussianBank)
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for c in self.classes():
            destination[f"{prefix}rows.{c}"] = self._rows[c]

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        self._rows = {}
        for name, value in state_dict.items():
            if not name.startswith(prefix):
                continue
            kind, _, cid = name[len(prefix):].partition(".")
            if kind != "rows" or not cid.isdigit():
                raise ValueError(f"unexpected key {name!r}; expected '{prefix}rows.<id>'")
            self._rows[int(cid)] = value.to(torch.long).flatten().cpu()
