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
from dmc.config import MemoryConfig, RunConfig
from dmc.config import MemHeadConfig
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


# The statistics `diagnostics.head_stats` scores the head with: each chained variant carries old classes'
# statistics from task to task through its calibration (None: never calibrated), "oracle" recomputes them.
CHAINS = {"stored": None, "means_only": "ot", "linear": "linear", "ot+linear": "ot+linear"}
HEAD_STATS = (*CHAINS, "oracle")

Stats = dict[int, tuple[torch.Tensor, torch.Tensor]]  # class id -> (mean (D,), covariance (D, D) or (D,))


def stacked(chain: Stats, classes: list[int], fallback: tuple[torch.Tensor, torch.Tensor]) -> tuple:
    """The (C, D) means and covariances of `classes` in `chain`, a class it lacks taken from `fallback`
    (the same classes' stacked statistics)."""
    rows = [chain.get(c, (fallback[0][i], fallback[1][i])) for i, c in enumerate(classes)]
    return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows])


class HeadStatistics:
    """`diagnostics.head_stats`: after each task's training, the evaluated images (the run's test or
    validation split) scored by `dmc-ot-mem`'s head (the method's `memhead` settings, or their defaults
    for another method with a Gaussian memory) under four statistics of the old classes, on the run's
    own tower:
    - "stored": as first stored, never calibrated;
    - "means_only": moved at every task by the class-level OT (DMC-OT's calibration: means only);
    - "linear" / "ot+linear": moved at every task by the linear drift map / OT + linear map (means and
      covariances), `calibration.linear_ridge`;
    - "oracle": recomputed from the old classes' training images under the current tower (a diagnosis,
      never a method).
    Each calibrated variant is a chain, as if that calibration had run from the first task (the tower
    and prompts stay the run's); new classes' statistics are the memory's in every variant. Per variant
    the metrics line's `head_stats` holds the head's accuracy and the fused (head + text) accuracy. With
    `calibration.method=ot` at level "class" (the default), "means_only" is the run's own memory and its
    fused accuracy the run's A_t. A resumed run restarts the chains from the checkpoint's memory.
    Changes nothing the method trains or predicts: it draws from no generator of the task and restores
    the global random state that image loading may advance. Memory: four copies of the statistics."""

    def __init__(self, cfg: RunConfig, evaluated: ImageDataset | None) -> None:
        self.memory, self.evaluated = cfg.memory, evaluated
        self.calibrations = {name: make_calibration(dataclasses.replace(cfg.calibration, method=m, level="class"))
                             for name, m in CHAINS.items() if m is not None}
        self.chains: dict[str, Stats] = {name: {} for name in CHAINS}
        self.oracle: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # task index -> old classes' statistics

    def calibrated(self, method, task, stored: tuple[torch.Tensor, torch.Tensor], paired=None, **_) -> dict:
        """Move every chain's old classes across this task's update (the tower is final: stage 1 is done)
        and recompute their oracle statistics."""
        with torch.random.fork_rng(devices=[]):
            for name, chain in self.chains.items():
                old = stacked(chain, task.old, stored)  # (O, D), (O, D, D) or (O, D)
                if name in self.calibrations and paired is not None:
                    old = self.calibrations[name](*old, *paired, None)[:2]
                chain.update({c: (old[0][i].clone(), old[1][i].clone()) for i, c in enumerate(task.old)})
            if task.reference is not None:
                feats, labels = method.encode(task.reference(task.old), "head diagnostics: oracle")
                self.oracle = {task.index: oracle_statistics(feats, labels, task.old, stored, self.memory)}
        return {}

    def trained(self, method, task) -> dict:
        """Score the evaluated images of the seen classes under each variant (`head_stats`)."""
        if self.evaluated is None or getattr(method, "bank", None) is None:
            return {}
        bank, seen = method.bank, task.seen
        exact = bank.means(seen), bank.covs(seen)  # (C, D), (C, D, D) or (C, D)
        for chain in self.chains.values():  # new classes: the memory's exact statistics
            chain.update({c: (exact[0][i].clone(), exact[1][i].clone()) for i, c in enumerate(seen)
                          if c in task.classes})
        opts = method.opts if isinstance(method.opts, MemHeadConfig) and method.opts.kind != "none" \
            else MemHeadConfig()
        with torch.random.fork_rng(devices=[]):
            rows = np.nonzero(np.isin(self.evaluated.labels, seen))[0]
            feats, labels = method.encode(subset_dataset(self.evaluated, rows), "head diagnostics")
            classifier = method.classifier(seen)
            text = getattr(classifier, "text", classifier)(feats)  # (N, C): the text classifier's cosines
        truth = torch.as_tensor(np.searchsorted(seen, labels.cpu().numpy()))  # (N,) columns of the labels
        variants = {name: stacked(chain, seen, exact) for name, chain in self.chains.items()}
        oracle = self.oracle.pop(task.index, None)
        if oracle is not None or not task.old:
            true = {c: (oracle[0][i], oracle[1][i]) for i, c in enumerate(task.old)} if oracle else {}
            variants["oracle"] = stacked(true, seen, exact)
        counts = bank.counts(seen)
        return {"head_stats": {name: head_accuracies(feats, text, truth, build_head(
            m, c, opts.kind, opts.gamma, opts.logdet, counts, opts.shrink), opts) for name, (m, c) in variants.items()}}


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
