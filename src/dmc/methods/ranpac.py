"""RanPAC: a ridge read-out of frozen CLIP image features through a fixed random nonlinear projection.

Reconstructed from McDonnell, Gong, Parvaneh, Abbasnejad, van den Hengel, "RanPAC: Random Projections and
Pre-trained Models for Continual Learning" (NeurIPS 2023), and the authors' released code for the
hyper-parameters named in the config (``ranpac.*``).

Model. The image tower is frozen (optionally adapted on the first task only, ``ranpac.adapt``: the paper's
first-session adaptation, here the ``vision.*`` recipe of ``stages.train_vision`` against the template
text of the first task's classes, then frozen for good). A fixed random matrix P (D, M), entries N(0, 1),
maps a feature x to h = relu(norm(x) P) (M,); P is a pure function of a seed, and the seed, not the
matrix, is what the checkpoint keeps. The scores of class c are (h W)_c, W = (G + lambda I)^-1 Q, with
G = sum h h^T (M, M) and Q = sum h y^T (M, C) over every training image seen so far (y one-hot), both
accumulated task by task in float64 (``dmc.analytic``): no feature or image is kept, the result after the
last task equals the ridge on all data at once, and it does not depend on the order of the tasks. Q has a
column per remapped label and grows as classes arrive.

Lambda is chosen on each task, as in RanPAC: a ``ranpac.holdout`` share of the task's features is held
out, the ridge is fitted on the rest for every lambda of the grid, and the one with the lowest mean squared
error on the held-out targets is used with the accumulated G and Q (``ranpac.ridge`` fixes it instead).

[reconstruction] choices: features are L2-normalised before the projection (CLIP's features are compared
by cosine; RanPAC's ViT features are used raw); the grid is 1e-6..1e6 (the released code: 1e-8..1e8); the
ridge is solved by Cholesky rather than a general solve; ``ranpac.text_weight`` w > 0 adds w cos(x, t_c)
with the template text t_c (zero-shot CLIP) to the ridge scores — RanPAC has no text tower.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dmc.analytic import one_hot, random_features, random_projection, ridge_solve, ridge_sums, select_ridge
from dmc.methods.base import Method
from dmc.methods.classifier import Classifier
from dmc.methods.stages import adapt_first_session
from dmc.training.features import label_lut
from dmc.training.runtime import derive_seed
from dmc.training.task import Task


class RidgeReadout(nn.Module):
    """The statistics of the analytic read-out: G (M, M) and Q (M, C) in float64, lambda, and the seed of P.

    All four are buffers, so the checkpoint holds them; the projection P and the solution W are caches
    rebuilt from them (after a load, from the loaded seed).
    """

    def __init__(self, dim_in: int, dim: int, seed: int, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.dim_in = dim_in
        self.register_buffer("gram", torch.zeros(dim, dim, dtype=torch.float64, device=device))
        self.register_buffer("q", torch.zeros(dim, 0, dtype=torch.float64, device=device))
        self.register_buffer("lam", torch.ones((), dtype=torch.float64, device=device))
        self.register_buffer("seed", torch.tensor(int(seed), dtype=torch.long))
        self._proj: Tensor | None = None
        self._w: Tensor | None = None

    def grow(self, n_classes: int) -> None:
        """Give Q a (zero) column for every label below n_classes."""
        if self.q.shape[1] < n_classes:
            pad = self.q.new_zeros(self.q.shape[0], n_classes - self.q.shape[1])
            self.q = torch.cat([self.q, pad], dim=1)  # (M, n_classes)
            self._w = None

    @property
    def proj(self) -> Tensor:
        """P (D, M), regenerated from the seed."""
        if self._proj is None:
            self._proj = random_projection(self.dim_in, self.gram.shape[0], int(self.seed), self.gram.device)
        return self._proj

    def features(self, x: Tensor) -> Tensor:
        """h = relu(norm(x) P): (N, D) -> (N, M) float64."""
        return random_features(x, self.proj)

    def add(self, x: Tensor, labels: Tensor) -> Tensor:
        """Accumulate the features x (N, D) with labels (N,) into G and Q; returns their h (N, M)."""
        h = self.features(x)
        gram, q = ridge_sums(h, one_hot(labels, self.q.shape[1]).to(h.device))
        self.gram += gram
        self.q += q
        self._w = None
        return h

    def set_ridge(self, lam: float) -> None:
        self.lam.fill_(lam)
        self._w = None

    def weights(self) -> Tensor:
        """W = (G + lambda I)^-1 Q (M, C) float64, solved once per change."""
        if self._w is None:
            self._w = ridge_solve(self.gram, self.q, float(self.lam))
        return self._w

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._proj, self._w = None, None


class RanPAC(Method):
    uses = ("vision",)  # the recipe of the first-task adaptation (`ranpac.adapt`)
    frozen_image_encoder = True  # frozen, or adapted on the first task only (before the test set is encoded)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        r = self.opts
        seed = r.projection_seed if r.projection_seed is not None else derive_seed(self.cfg.seed, "ranpac projection")
        self.readout = RidgeReadout(int(self.model.visual.output_dim), r.dim, seed, self.rt.device)
        self.learned["readout"] = self.readout
        if r.adapt:  # the tower changes on the first task only; the loop encodes the test set after it
            self.learned["visual"] = self.model.visual

    def begin_task(self, task: Task) -> None:
        self.readout.grow(max(task.seen) + 1)

    def train_task(self, task: Task) -> dict:
        r = self.opts
        info: dict = {"time_s": {}}
        if r.adapt and task.index == 0:
            info["adapt_loss"], info["time_s"]["adapt"] = adapt_first_session(self, task)
        clock = time.time()
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")
        info["time_s"]["features"] = time.time() - clock
        clock = time.time()
        h = self.readout.add(feats, labels)  # (N, M)
        lam = r.ridge
        if lam is None:
            y = one_hot(label_lut(task.classes, labels.device)[labels], len(task.classes))  # (N, C_t)
            lam, _ = select_ridge(h, y.to(h.device), holdout=r.holdout, generator=task.generator)
        self.readout.set_ridge(lam)
        self.readout.weights()  # solved here, so that the time is counted as training
        info["ridge"] = lam
        info["time_s"]["solve"] = time.time() - clock
        return info

    # ---- evaluation
    @torch.no_grad()
    def classifier(self, classes: list[int]) -> RidgeClassifier:
        w = self.opts.text_weight
        text = w * self.template_features(classes) if w else None  # (C, D)
        return RidgeClassifier(self.readout, self.readout.weights()[:, classes].T.float(), text)


class RidgeClassifier(Classifier):
    """RanPAC's scores h(x) W_c (+ w cos(x, t_c)): the read-out's columns (C, M) of the classes on the random
    features h (B, M), and, with ranpac.text_weight w > 0, the template text t_c (C, D) scaled by w."""

    def __init__(self, readout: RidgeReadout, weight: Tensor, text: Tensor | None = None) -> None:
        super().__init__()
        self.readout = readout  # h = relu(norm(x) P), P from its seed
        self.register_buffer("weight", weight)  # (C, M) float32
        self.register_buffer("text", text)  # (C, D) w * t_c, or None

    def forward(self, feats: Tensor) -> Tensor:
        h = self.readout.features(feats).float()  # (B, M)
        if self.text is None:
            return h @ self.weight.t()  # (B, C)
        # [h, norm(x)] against [W_c, w t_c] in one matmul: the float operations the runs were scored by
        x = torch.cat([h, F.normalize(feats.float(), dim=-1)], dim=1)  # (B, M + D)
        return x @ torch.cat([self.weight, self.text], dim=1).t()  # (B, C)
