"""RAPF: a linear adapter on frozen CLIP image features with Gaussian replay, a text-guided hinge for
neighbouring old/new classes, and decomposed parameter fusion after each task.

Reconstructed from the published description of RAPF (Huang, Cao, Lu, Liu, "Class-Incremental Learning
with CLIP: Adaptive Representation Adjustment and Parameter Fusion", ECCV 2024, arXiv 2407.14143).

Model. Both CLIP towers stay frozen. The classifier is the hand-made template's text embedding t_c of each
seen class. A bias-free linear adapter A (D x D) acts on the frozen image feature x = f(img); the logits
are s * cos(A x, t_c) (s: CLIP's logit scale). A starts as the identity here, so before any training the
method *is* zero-shot CLIP ([reconstruction]; RAPF's code uses PyTorch's default initialisation).

Memory. Each class keeps the mean and covariance of its frozen features x (``GaussianBank``; the preset
turns on RAPF's shrinkage). The encoder never changes, so the statistics never drift.

Training on task t (cached features, through ``fit``): cross-entropy over all seen classes on real features
of the new classes plus ``replay.per_class`` samples of every old class per step (balanced), all passed
through A. The adapter is not re-initialised between tasks.

Adaptive representation adjustment (``rapf.hinge``), as we read the paper: a new class harms mostly the old
classes that are semantically close to it, and the text encoder measures that closeness. An (old i, new j)
pair is a *neighbour pair* when the Euclidean distance of their unit text embeddings ||t_i - t_j|| is below
``hinge_threshold`` (``hinge_pairs="nearest"`` keeps only each old class's nearest new class). For each pair,
pseudo-features z ~ N(mu_i, Sigma_i) of the old class are adjusted with a hinge on the text side:

    L_hinge = mean over pairs and samples of max(0, m - cos(A z, t_i) + cos(A z, t_j)),

i.e. an old-class sample must be closer to its own class text than to the neighbouring new class text by a
margin m (``hinge_margin``). The loss is L_ce + ``hinge_weight`` * L_hinge.

Decomposed parameter fusion (``rapf.fusion``), as we read the paper: after task t >= 2, let W_o be the adapter
before the task and W_n after it. With the SVD W_o = U S V^T, U is an orthonormal basis in which both are
expressed: P_o = U^T W_o = S V^T, P_n = U^T W_n. Entries that moved a lot matter to the new task and are
kept; entries that moved little are pulled back toward the old ones:

    Delta = |P_n - P_o|,  lambda = min(1, Delta / max(Delta) + b),  W = U (lambda * P_n + (1 - lambda) * P_o)

with b = ``fusion_bias`` (elementwise products). b >= 1 keeps W_n; the rule does not depend on the sign
ambiguity of the SVD, and it commutes with a rotation of the output space (W -> Q W for orthogonal Q).
No fusion after the first task (there is no earlier adapter to keep).

Also [reconstruction]: the shared ``fit`` (AdamW, cosine schedule) instead of Adam with step decay, and every
old class replayed in every step rather than a rotating few.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from dmc.memory.gaussian import GaussianBank
from dmc.methods.base import Method
from dmc.methods.classifier import CosineClassifier
from dmc.training.features import feature_batches, label_lut
from dmc.training.fit import fit
from dmc.training.losses import cosine_logits, cross_entropy
from dmc.training.task import Task

# --------------------------------------------------------------------------- the two rules, as functions
def neighbour_pairs(old_text: torch.Tensor, new_text: torch.Tensor, threshold: float,
                    nearest: bool = False) -> torch.Tensor:
    """(P, 2) index pairs (i into old_text, j into new_text) with ||t_i - t_j|| < threshold.

    old_text (O, D), new_text (N, D): unit text embeddings. ``nearest`` keeps at most one pair per old class
    (its nearest new class). Pairs come in row-major order (old index, then new index).
    """
    if old_text.numel() == 0 or new_text.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.long, device=old_text.device)
    dist = torch.cdist(old_text.float(), new_text.float())  # (O, N)
    close = dist < threshold  # (O, N)
    if nearest:
        close &= F.one_hot(dist.argmin(dim=1), dist.shape[1]).bool()
    return close.nonzero()  # (P, 2)


def hinge_terms(feats: torch.Tensor, own: torch.Tensor, rival: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, margin - cos(f_n, own_n) + cos(f_n, rival_n)) per feature, in float32: each feature must be
    closer (in cosine) to its own class text than to the rival text by ``margin``. (N, D) each -> (N,)."""
    f = F.normalize(feats.float(), dim=-1)  # (N, D)
    gap = (f * F.normalize(own.float(), dim=-1)).sum(-1) - (f * F.normalize(rival.float(), dim=-1)).sum(-1)  # (N,)
    return F.relu(margin - gap)


def hinge_loss(feats: torch.Tensor, own: torch.Tensor, rival: torch.Tensor, margin: float) -> torch.Tensor:
    """The mean of ``hinge_terms``: (N, D) each -> scalar."""
    return hinge_terms(feats, own, rival, margin).mean()


def fusion_weights(p_old: torch.Tensor, p_new: torch.Tensor, bias: float) -> torch.Tensor:
    """lambda = min(1, |P_n - P_o| / max|P_n - P_o| + bias), elementwise (D, D); all ones if nothing moved."""
    delta = (p_new - p_old).abs()  # (D, D)
    top = delta.max()
    if float(top) == 0.0:
        return torch.ones_like(delta)
    return (delta / top + bias).clamp(max=1.0)


def fuse_adapter(w_old: torch.Tensor, w_new: torch.Tensor, bias: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Decomposed parameter fusion (module docstring): W = U (lambda * U^T W_n + (1 - lambda) * S V^T),
    W_o = U S V^T. w_old, w_new: (D, D) -> fused W (D, D) in w_new's dtype and lambda (D, D) float64."""
    wo, wn = w_old.to(torch.float64), w_new.to(torch.float64)
    u, s, vh = torch.linalg.svd(wo)  # (D, D), (D,), (D, D)
    p_old = s[:, None] * vh  # (D, D) = U^T W_o
    p_new = u.T @ wn  # (D, D)
    lam = fusion_weights(p_old, p_new, bias)  # (D, D)
    return (u @ (lam * p_new + (1.0 - lam) * p_old)).to(w_new.dtype), lam


# --------------------------------------------------------------------------- the method
class RAPF(Method):
    """Its own options are `opts` (`rapf.*`); replay and statistics follow the shared sections."""

    uses = ("replay", "memory")
    frozen_image_encoder = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        dim = int(self.model.visual.output_dim)
        self.adapter = torch.nn.Linear(dim, dim, bias=False).to(self.rt.device)
        with torch.no_grad():
            self.adapter.weight.copy_(torch.eye(dim))
        self.bank = GaussianBank(self.cfg.memory, device=self.rt.device)
        self.learned.update({"adapter": self.adapter, "memory": self.bank})

    def train_task(self, task: Task) -> dict:
        clock = time.time()
        feats, labels = self.encode(task.train_plain, f"task {task.index + 1} features")
        info: dict = {"time_s": {"features": time.time() - clock}}
        clock = time.time()
        w_old = self.adapter.weight.detach().clone()  # (D, D)
        pairs = self._pairs(task)
        info["hinge_pairs"] = int(len(pairs))
        info["loss"] = self._train_adapter(task, feats, labels, pairs)
        if self.opts.fusion and task.index > 0:
            fused, lam = fuse_adapter(w_old, self.adapter.weight.detach(), self.opts.fusion_bias)
            with torch.no_grad():
                self.adapter.weight.copy_(fused)
            info["fusion_mean_lambda"] = float(lam.mean())  # share of the task's update kept
        for c in task.classes:
            self.bank.add(c, feats[labels == c])
        info["time_s"]["train"] = time.time() - clock
        return info

    def _pairs(self, task: Task) -> torch.Tensor:
        """Neighbour pairs (index into task.old, index into task.classes) for the hinge; (0, 2) if off."""
        r = self.opts
        if not (r.hinge and task.old and r.hinge_per_pair > 0):
            return torch.zeros(0, 2, dtype=torch.long, device=self.rt.device)
        return neighbour_pairs(self.template_features(task.old), self.template_features(task.classes),
                               r.hinge_threshold, nearest=r.hinge_pairs == "nearest")

    def _train_adapter(self, task: Task, feats: torch.Tensor, labels: torch.Tensor, pairs: torch.Tensor) -> list[float]:
        """Cross-entropy over the seen classes on real + replayed features, plus the hinge on neighbour pairs.

        Replayed and hinge samples are drawn per step as one global batch from the task's generator on
        every rank (what one process draws); under torchrun each rank keeps its share of both, and both
        losses are means over the global batch, so any number of processes gives the single-process step."""
        r, dev, rt = self.opts, self.rt.device, self.rt
        protos = self.template_features(task.seen)  # (C, D)
        lut = label_lut(task.seen, dev)
        scale = self.scale()
        n_rep = self.cfg.replay.per_class if (self.cfg.replay.enabled and task.old) else 0
        n_hinge = r.hinge_per_pair if len(pairs) else 0
        rep_labels = rt.share(torch.as_tensor(task.old, dtype=torch.long, device=dev).repeat_interleave(n_rep))
        if len(pairs):
            own = rt.share(self.template_features(task.old)[pairs[:, 0]].repeat_interleave(n_hinge, 0))  # (P*h/N, D)
            rival = rt.share(self.template_features(task.classes)[pairs[:, 1]].repeat_interleave(n_hinge, 0))
        gen = task.generator_on(dev)  # replay draws on the statistics' device

        adapter = rt.wrap(self.adapter)  # DistributedDataParallel under torchrun

        def loss_fn(batch) -> torch.Tensor:
            f, y = batch  # (B, D), (B,): this rank's share
            zh = f[:0]
            if n_rep + n_hinge:
                z, _ = self.bank.sample(task.old, n_rep + n_hinge, gen)  # (O*(r+h), D), old classes in order
                z = z.view(len(task.old), n_rep + n_hinge, -1).to(f.dtype)  # (O, r+h, D)
                f = torch.cat([f, rt.share(z[:, :n_rep].reshape(-1, z.shape[-1]))])  # (B + O*r/N, D)
                y = torch.cat([y, rep_labels])
                zh = rt.share(z[pairs[:, 0], n_rep:].reshape(-1, z.shape[-1]))  # (P*h/N, D); (0, D) without pairs
            out = adapter(torch.cat([f, zh]))  # one forward (DDP): (B' + P*h/N, D)
            loss = cross_entropy(cosine_logits(out[:len(f)], protos, scale), lut[y], rt)  # float32 (B', C)
            if not n_hinge:
                return loss
            return loss + r.hinge_weight * rt.global_mean(hinge_terms(out[len(f):], own, rival, r.hinge_margin))

        batches = feature_batches(feats, labels, r.batch_size, task.generator, rt)
        return fit(list(self.adapter.parameters()), batches, loss_fn, r.epochs, r.lr, rt,
                   weight_decay=r.weight_decay, desc=f"task {task.index + 1} adapter",
                   hint="lower rapf.lr (e.g. --set rapf.lr=1e-4)")

    # ---- evaluation: cos(A x, t_c)
    def classifier(self, classes: list[int]) -> CosineClassifier:
        return CosineClassifier(self.template_features(classes), adapter=self.adapter)
