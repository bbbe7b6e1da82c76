"""Drift diagnostics: how far stored / calibrated statistics are from the truth under the new encoder.

Observers of the loop, not branches of a method: the loop attaches them (`observers`) when the run's
`diagnostics` section asks, and a method with a Gaussian memory tells them when old classes' statistics
were calibrated (`Method.observe("calibrated", ...)`). Measurement only: the "true" statistics come from
old classes' training images, which a replay-free method may not train on; they are never fed back into
training, except by `diagnostics.oracle_stats`, the calibration ceiling, which is a diagnostic and never a
method. `diagnostics.head_stats` only scores: it changes nothing the method trains or predicts.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dmc.calibration import make_calibration
from dmc.config import CalibrationConfig, MemoryConfig, RunConfig
from dmc.config.methods import MemHeadConfig
from dmc.data.dataset import ImageDataset, subset_dataset
from dmc.discriminant import build_head, fused_scores, head_scores, scaled_head
from dmc.memory.gaussian import fit_gaussian


def _rel(err: torch.Tensor, ref: torch.Tensor) -> float:
    return float(err.norm() / ref.norm().clamp_min(1e-12))


def drift_errors(stored_means: torch.Tensor, stored_covs: torch.Tensor, cal_means: torch.Tensor,
                 cal_covs: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, classes: list[int],
                 memory: MemoryConfig) -> dict[str, float]:
    """Mean over classes of ||mu - mu_true|| / ||mu_true|| (and the same for covariances, Frobenius)."""
    rows = {"stored": [], "calibrated": [], "cov_stored": [], "cov_calibrated": []}
    for i, c in enumerate(classes):
        mask = labels == c
        if int(mask.sum()) < 2:
            continue
        mu, cov = fit_gaussian(feats[mask], memory)
        mu, cov = mu.to(stored_means.device), cov.to(stored_means.device)
        rows["stored"].append(_rel(stored_means[i] - mu, mu))
        rows["calibrated"].append(_rel(cal_means[i] - mu, mu))
        rows["cov_stored"].append(_rel(stored_covs[i] - cov, cov))
        rows["cov_calibrated"].append(_rel(cal_covs[i] - cov, cov))
    return {k: float(sum(v) / len(v)) if v else float("nan") for k, v in rows.items()}


class MemoryDiagnostics:
    """After the calibration of task t >= 2: the drift errors of the stored and calibrated statistics
    against the true ones (the metrics line's `drift`), measured on old classes' training images under the
    current tower; with `oracle`, the true statistics then replace the stored ones."""

    def __init__(self, memory: MemoryConfig, oracle: bool = False) -> None:
        self.memory, self.oracle = memory, oracle

    def calibrated(self, method, task, stored: tuple[torch.Tensor, torch.Tensor], **_) -> dict:
        """`method` has a Gaussian `bank`; `stored`: old classes' means and covariances before calibration."""
        if task.reference is None:
            return {}
        old, bank = task.old, method.bank
        true_feats, true_labels = method.encode(task.reference(old), "drift diagnostics")
        drift = drift_errors(*stored, bank.means(old), bank.covs(old), true_feats, true_labels, old, self.memory)
        if self.oracle:  # the calibration ceiling: the true statistics under the current encoder
            for c in old:
                bank.add(c, true_feats[true_labels == c])
        return {"drift": drift}


def old_class_statistics(stored: tuple[torch.Tensor, torch.Tensor], paired: tuple[torch.Tensor, torch.Tensor] | None,
                         calibration: CalibrationConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Old classes' statistics as each calibration of `HEAD_STATS` would leave them: stored (C, D) means
    and (C, D, D) / (C, D) covariances moved by the task's paired features (old, new encoder; (N, D)
    each). Every calibration is deterministic here (class-level OT and the closed-form maps draw nothing);
    without paired features (the run calibrates nothing) only "stored" is known."""
    out = {"stored": stored}
    if paired is None:
        return out
    for name, method in (("means_only", "ot"), ("linear", "linear"), ("ot+linear", "ot+linear")):
        cal = make_calibration(dataclasses.replace(calibration, method=method, level="class"))
        means, covs, _ = cal(*stored, *paired, None)
        out[name] = (means, covs)
    return out


def oracle_statistics(feats: torch.Tensor, labels: torch.Tensor, classes: list[int], stored: tuple,
                      memory: MemoryConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class's statistics fitted on its features (N, D) as the memory fits them (float32, as stored);
    a class with fewer than 2 images keeps its stored ones."""
    means, covs = stored[0].clone(), stored[1].clone()
    for i, c in enumerate(classes):
        mask = labels == c
        if int(mask.sum()) >= 2:
            mu, cov = fit_gaussian(feats[mask], memory)
            means[i], covs[i] = mu.to(means), cov.to(covs)
    return means, covs


HEAD_STATS = ("stored", "means_only", "linear", "ot+linear", "oracle")  # the statistics the head is scored with


class HeadStatistics:
    """`diagnostics.head_stats`: after each task's training, the evaluated images (the run's test or
    validation split) scored by `dmc-ot-mem`'s head (the method's `memhead` settings, or their defaults
    for another method with a Gaussian memory) with old classes' statistics as stored (uncalibrated),
    moved by the class-level OT (means only), by the linear drift map and by OT + linear map (means and
    covariances), and recomputed from their training images under the current tower (oracle; a
    diagnosis, never a method). New classes' statistics are the memory's (exact) in every variant.
    Records, per variant, the head's accuracy and the fused (head + text) accuracy on the metrics line
    (`head_stats`). It changes nothing the method trains or predicts: it draws from no generator of the
    task, and the global random state it may advance (image loading) is restored."""

    def __init__(self, cfg: RunConfig, evaluated: ImageDataset | None) -> None:
        self.calibration, self.memory, self.evaluated = cfg.calibration, cfg.memory, evaluated
        self.variants: dict[int, dict] = {}  # task index -> variant -> old classes' (means, covs)

    def calibrated(self, method, task, stored: tuple[torch.Tensor, torch.Tensor], paired=None, **_) -> dict:
        """Keep old classes' statistics under every variant (the tower is final: stage 1 is done)."""
        if task.reference is None:
            return {}
        with torch.random.fork_rng(devices=[]):
            variants = old_class_statistics(stored, paired, self.calibration)
            feats, labels = method.encode(task.reference(task.old), "head diagnostics: oracle")
            variants["oracle"] = oracle_statistics(feats, labels, task.old, stored, self.memory)
        self.variants = {task.index: variants}
        return {}

    def trained(self, method, task) -> dict:
        """Score the evaluated images of the seen classes under each variant (`head_stats`)."""
        if self.evaluated is None or getattr(method, "bank", None) is None:
            return {}
        opts = method.opts if isinstance(method.opts, MemHeadConfig) and method.opts.kind != "none" \
            else MemHeadConfig()
        with torch.random.fork_rng(devices=[]):
            rows = np.nonzero(np.isin(self.evaluated.labels, task.seen))[0]
            feats, labels = method.encode(subset_dataset(self.evaluated, rows), "head diagnostics")
            protos = method.class_features(task.seen).float()  # (C, D)
            text = method.head(feats).float() @ protos.t()  # (N, C)
        bank, seen = method.bank, task.seen
        means, covs, counts = bank.means(seen), bank.covs(seen), bank.counts(seen)
        at = torch.as_tensor([seen.index(c) for c in task.old], dtype=torch.long, device=means.device)
        truth = torch.as_tensor(np.searchsorted(seen, labels.cpu().numpy()))  # (N,) columns of the labels
        out = {}
        for name in HEAD_STATS:
            old = self.variants.get(task.index, {}).get(name)
            if old is None and task.old:
                continue
            m, c = means.clone(), covs.clone()
            if task.old:
                m[at], c[at] = old[0].to(m), old[1].to(c)
            out[name] = head_accuracies(feats, text, truth, build_head(
                m, c, opts.kind, opts.gamma, opts.logdet, counts, opts.shrink), opts)
        self.variants.pop(task.index, None)
        return {"head_stats": out}


def head_accuracies(feats: torch.Tensor, text: torch.Tensor, truth: torch.Tensor, head, opts: MemHeadConfig,
                    chunk: int = 256) -> dict[str, float]:
    """Accuracy (%) of `head` alone and fused with the text cosines (N, C) as `dmc-ot-mem` fuses them, on
    features (N, D) whose true columns are `truth` (N,); scored in chunks of `chunk` images."""
    hits = {"head": 0, "fused": 0}
    for i in range(0, feats.shape[0], chunk):
        h = head_scores(feats[i:i + chunk], head, opts.dof)  # (B, C)
        fused = fused_scores(scaled_head(h, opts.head_scale, feats.shape[1]), text[i:i + chunk], opts.text_weight)
        y = truth[i:i + chunk]
        hits["head"] += int((h.argmax(1).cpu() == y).sum())
        hits["fused"] += int((fused.float().argmax(1).cpu() == y).sum())
    n = max(feats.shape[0], 1)
    return {k: 100.0 * v / n for k, v in hits.items()}


def head_stats_table(records: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """From a run's metrics lines: per variant of `HEAD_STATS`, the head's and the fused Avg (mean over
    tasks) and Last (last task) accuracy, and the share of the oracle-minus-stored gap of the head's
    Last that the variant closes ("gap_closed"; None where the gap is 0)."""
    rows = [r["head_stats"] for r in records if "head_stats" in r]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in HEAD_STATS:
        if not rows or name not in rows[-1]:
            continue
        out[name] = {part: {"avg": float(np.mean([r.get(name, r["stored"])[part] for r in rows])),
                            "last": rows[-1][name][part]} for part in ("head", "fused")}
    if "oracle" in out:
        for part in ("head", "fused"):
            gap = out["oracle"][part]["last"] - out["stored"][part]["last"]
            for name in out:
                out[name][part]["gap_closed"] = (
                    (out[name][part]["last"] - out["stored"][part]["last"]) / gap if gap else None)
    return out


def observers(cfg: RunConfig, evaluated: ImageDataset | None = None) -> list:
    """The observers the run's `diagnostics` section asks for (`evaluated`: the images each task is tested
    on, which `head_stats` scores)."""
    d = cfg.diagnostics
    out: list = [MemoryDiagnostics(cfg.memory, oracle=d.oracle_stats)] if d.drift or d.oracle_stats else []
    if d.head_stats:
        out.insert(0, HeadStatistics(cfg, evaluated))  # before oracle_stats replaces the memory's statistics
    return out
