"""The regime of a world: how close text prototypes and class means of a frozen CLIP come to the best
read-out of its features.

Real CLIP ViT-B/16 on CIFAR-100 / ImageNet-R: zero-shot / analytic 0.86 / 0.98 and NCM / analytic 0.92 /
0.93 (all classes of the test split; analytic = random-feature ridge). A world whose ratios are far lower
rewards methods for the wrong reasons, so `dmc world --regime` measures them for the glyph worlds.

Two more rows say whether adapting the image encoder can pay in a world: the first-session gain (the
tower adapted on the first task's classes only, with stage 1's recipe, then NCM and the analytic read-out
on all classes, minus the frozen tower's; published for ViT-B/16: several points on CIFAR-100, about ten
or more on ImageNet-R, about nothing on CUB-200) and `joint` (every class in one task) minus the analytic
read-out.
"""
from __future__ import annotations

import copy
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dmc import analytic
from dmc.data.benchmark import make_benchmark
from dmc.models.clip import template_text_features
from dmc.world import glyphs
from dmc.world.source import GlyphSource, renditions_split


@dataclass
class RegimeSettings:
    dim: int = 3000  # random features of the analytic read-out
    seed: int = 0  # projection and held-out split
    holdout: float = 0.2  # share of the training features that picks the ridge


@torch.no_grad()
def encode_images(tower, transform_batch, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
    """Unnormalised features (N, D) of uint8 images (N, H, W, 3) under an image tower (in eval mode; the
    tower's own mode is restored). CLIP's `encode_image` is its `visual` tower: the frozen tower and an
    adapted copy are encoded the same way."""
    was_training = tower.training
    tower.eval()
    feats = [tower(transform_batch(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    tower.train(was_training)
    return torch.cat(feats).float()


def readouts(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], n_classes: int,
             settings: RegimeSettings = RegimeSettings()) -> dict:
    """Accuracies (%) of the text-free read-outs of all classes: nearest class mean (cosine) and the analytic
    read-out (random ReLU features + ridge, lambda chosen on a held-out share of the training features)."""
    (xtr, ytr), (xte, yte) = train, test
    ncm = analytic.ncm_predict(xte, analytic.class_means(xtr, ytr, list(range(n_classes))))
    proj = analytic.random_projection(xtr.shape[1], settings.dim, settings.seed)
    htr, hte = analytic.random_features(xtr, proj), analytic.random_features(xte, proj)
    target = analytic.one_hot(ytr, n_classes)
    gen = torch.Generator().manual_seed(settings.seed)
    lam, _ = analytic.select_ridge(htr, target, holdout=settings.holdout, generator=gen)
    gram, q = analytic.ridge_sums(htr, target)
    an = (hte @ analytic.ridge_solve(gram, q, lam)).argmax(1)
    return {"ncm": 100.0 * float((ncm == yte).double().mean()), "analytic": 100.0 * float((an == yte).double().mean()),
            "ridge": lam}


def measure(text_protos: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor],
            test: tuple[torch.Tensor, torch.Tensor], settings: RegimeSettings = RegimeSettings()) -> dict:
    """Accuracies (%) of zero-shot, NCM, a linear probe and the analytic read-out on all classes, and the
    ratios to the analytic read-out.

    text_protos (C, D): one text prototype per class. train / test: (features (N, D), labels (N,)) with
    labels in [0, C).
    """
    (xtr, ytr), (xte, yte) = train, test
    n_classes = text_protos.shape[0]
    zs = (F.normalize(xte, dim=-1) @ F.normalize(text_protos, dim=-1).T).argmax(1)
    lin = analytic.ncm_predict(xte, analytic.linear_probe(xtr, ytr, n_classes).double())
    acc = {"zero_shot": 100.0 * float((zs == yte).double().mean()),
           "probe": 100.0 * float((lin == yte).double().mean())}
    acc.update(readouts(train, test, n_classes, settings))
    return {**acc, "zs_over_analytic": acc["zero_shot"] / acc["analytic"],
            "ncm_over_analytic": acc["ncm"] / acc["analytic"], "dim": settings.dim, "seed": settings.seed}


def regime_splits(cfg) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The images a regime is measured on, for the glyph benchmark of `cfg`: `fit` (what read-outs and
    adaptation learn from) and `eval` (what they are scored on). The test split by default; with
    `benchmark.val_fraction` > 0 and `eval.split=val`, the held-out validation rows of the training split
    (the same rows a run holds out), so that a world's settings are chosen without the test split."""
    from dmc.data.benchmark import val_rows
    from dmc.data.sources.base import SOURCES

    shifted = getattr(SOURCES.get(cfg.benchmark.name), "shifted", False)
    train = renditions_split(cfg.data.world, "train", shifted=shifted)
    if cfg.eval.split != "val":
        return {"fit": train, "eval": renditions_split(cfg.data.world, "test", shifted=shifted)}
    held = val_rows(train[1], cfg.benchmark.val_fraction, cfg.benchmark.val_seed)
    keep = np.setdiff1d(np.arange(len(train[1])), held)
    return {"fit": (train[0][keep], train[1][keep]), "eval": (train[0][held], train[1][held])}


def _encoded(backbone, splits: dict, visual=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Features of the regime's images under the backbone's image tower (or another tower `visual`)."""
    tower = backbone.model.visual if visual is None else visual
    return {name: (encode_images(tower, backbone.preprocess.batch, images), torch.as_tensor(targets))
            for name, (images, targets) in splits.items()}


def glyph_regime(backbone, cfg, settings: RegimeSettings = RegimeSettings(), splits: dict | None = None) -> dict:
    """The regime of the glyph benchmark of `cfg` under a frozen CLIP `backbone` (all 100 classes)."""
    protos = template_text_features(backbone, glyphs.class_names(), GlyphSource.template)  # (C, D)
    feats = _encoded(backbone, splits or regime_splits(cfg))
    return measure(protos, feats["fit"], feats["eval"], settings)


def first_session_gain(backbone, cfg, seeds: list[int], frozen: dict, settings: RegimeSettings = RegimeSettings(),
                       splits: dict | None = None) -> list[dict]:
    """For each seed: the image tower adapted on the first task's classes only (that seed's class order),
    with stage 1's recipe (`cfg.vision`: cross-entropy against the frozen text anchors), then NCM and the
    analytic read-out of all classes on its features, minus `frozen`'s (a `measure` result)."""
    from dmc.data.dataset import ImageDataset
    from dmc.data.sources.base import Samples
    from dmc.methods.stages import train_vision
    from dmc.training.runtime import make_runtime
    from dmc.training.task import Task

    splits = splits or regime_splits(cfg)
    images, targets = splits["fit"]
    rt = make_runtime("cpu", "fp32", progress=True)
    scale = float(backbone.model.logit_scale.exp().detach())
    rows = []
    for seed in seeds:
        bench = make_benchmark(replace(cfg, seed=seed), seed)
        first = [bench.class_order[c] for c in bench.tasks[0]]  # native glyph ids of the first task
        anchors = template_text_features(backbone, [glyphs.class_names()[c] for c in first], GlyphSource.template)
        keep = np.isin(targets, first)
        data = ImageDataset(Samples(images[keep], targets[keep]), targets[keep], backbone.preprocess_train)
        task = Task(0, first, first, data, data, torch.Generator().manual_seed(seed))
        visual = copy.deepcopy(backbone.model.visual)
        train_vision(visual, anchors, first, task, cfg.vision, rt, scale, desc=f"first task, seed {seed}")
        feats = _encoded(backbone, splits, visual)
        adapted = readouts(feats["fit"], feats["eval"], len(glyphs.class_names()), settings)
        rows.append({"seed": seed, "classes": first, "ncm": adapted["ncm"] - frozen["ncm"],
                     "analytic": adapted["analytic"] - frozen["analytic"]})
    return rows


def joint_accuracy(cfg) -> float:
    """Accuracy (%) of the `joint` method (every class in one task, the benchmark's recipe for it) on the
    regime's evaluation images (the world, validation split and evaluation split of `cfg`): a full run in a
    temporary folder."""
    from dmc import config
    from dmc.config.resolve import flatten
    from dmc.engine import loop

    keep = {k: v for k, v in flatten(config.to_dict(cfg)).items()
            if k.startswith(("data.world.", "benchmark.val_", "eval.split"))}
    joint = config.resolve(cfg.benchmark.name, "joint", {**keep, "seed": cfg.seed})
    with tempfile.TemporaryDirectory() as tmp:
        path = loop.run(joint, out=Path(tmp) / "joint")
        return float(json.loads((path / "summary.json").read_text())["last"])


def regime_table(result: dict, label: str, gains: list[dict] | None = None, joint: float | None = None,
                 where: str = "test split") -> str:
    """Markdown table of a `measure` result; with `gains` (`first_session_gain` rows) and `joint` (its
    accuracy), the rows that say whether adapting the image encoder pays."""
    lines = [
        "| world | zero-shot | NCM | linear probe | analytic | zero-shot / analytic | NCM / analytic |",
        "|---|---|---|---|---|---|---|",
        f"| {label} | {result['zero_shot']:.1f} | {result['ncm']:.1f} | {result['probe']:.1f} | "
        f"{result['analytic']:.1f} | {result['zs_over_analytic']:.2f} | {result['ncm_over_analytic']:.2f} |",
    ]
    if gains or joint is not None:
        lines += ["", "| adapting the encoder | seeds | NCM | analytic |", "|---|---|---|---|"]
    if gains:
        seeds = ", ".join(str(g["seed"]) for g in gains)
        cells = [f"{np.mean([g[k] for g in gains]):+.2f} ({', '.join(f'{g[k]:+.1f}' for g in gains)})"
                 for k in ("ncm", "analytic")]
        lines.append(f"| first-session gain | {seeds} | {cells[0]} | {cells[1]} |")
    if joint is not None:
        lines.append(f"| joint - analytic | 0 | - | {joint - result['analytic']:+.2f} (joint {joint:.1f}) |")
    lines += [
        "",
        f"analytic: random ReLU features (M = {result['dim']}, seed {result['seed']}) + ridge, lambda = "
        f"{result['ridge']:g} chosen on a held-out fifth of the training features; NCM: cosine to class means of "
        "normalised training features; linear probe: cosine prototypes fitted on all training features at once; "
        f"zero-shot: the benchmark's template. All 100 classes of the {where}.",
    ]
    if gains:
        lines.append("first-session gain: the image tower adapted on the first task's 10 classes only (each seed's "
                     "class order; stage 1's recipe, vision.*), then NCM and the analytic read-out of all classes, "
                     "minus the frozen tower's (mean, then per seed).")
    if joint is not None:
        lines.append("joint: `dmc run --method joint` (every class in one task, the benchmark's recipe), seed 0.")
    return "\n".join(lines)


def prefix_readouts(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                    tasks: list[list[int]], k: int = 1, seed: int = 0) -> dict:
    """The ceiling of cosine-prototype read-outs in a class-incremental order: after each task, K prototypes
    per class fitted on every seen class's training features at once (exact features, no memory, no
    forgetting), tested on the seen classes. What a text classifier with K prompts per class could reach on
    these features. Labels are the classes' ids; `tasks` their order. Returns the accuracies (%) after each
    task, and Avg and Last as a run reports them."""
    (xtr, ytr), (xte, yte) = train, test
    gen = torch.Generator().manual_seed(seed)
    accs, seen = [], []
    for task in tasks:
        seen += list(task)
        lut = torch.full((int(max(ytr.max(), yte.max())) + 1,), -1, dtype=torch.long)
        lut[torch.as_tensor(seen)] = torch.arange(len(seen))
        rows_tr, rows_te = lut[ytr] >= 0, lut[yte] >= 0
        protos = analytic.prototype_probe(xtr[rows_tr], lut[ytr[rows_tr]], len(seen), k, generator=gen)
        pred = analytic.prototype_scores(xte[rows_te], protos).argmax(1)
        accs.append(100.0 * float((pred == lut[yte[rows_te]]).double().mean()))
    return {"accs": accs, "avg": float(np.mean(accs)), "last": accs[-1], "k": k}


def glyph_ceiling(backbone, cfg, seeds: list[int], ks: list[int]) -> list[dict]:
    """`prefix_readouts` on the frozen toy CLIP's features of the glyph benchmark of `cfg`, in the class
    order of each seed (the benchmark's split into tasks); one row per (K, seed)."""
    feats = _encoded(backbone, regime_splits(cfg))
    rows = []
    for k in ks:
        for seed in seeds:
            bench = make_benchmark(replace(cfg, seed=seed), seed)
            tasks = [[bench.class_order[c] for c in task] for task in bench.tasks]  # native glyph ids
            rows.append({**prefix_readouts(feats["fit"], feats["eval"], tasks, k), "seed": seed})
    return rows


def ceiling_table(rows: list[dict]) -> str:
    """Markdown table of `glyph_ceiling` rows, mean ± std over seeds for each K."""
    out = ["| prototypes per class | seeds | Avg | Last |", "|---|---|---|---|"]
    for k in sorted({r["k"] for r in rows}):
        mine = [r for r in rows if r["k"] == k]
        cells = []
        for key in ("avg", "last"):
            vals = np.array([r[key] for r in mine])
            cells.append(f"{vals.mean():.2f} ± {vals.std(ddof=1) if len(vals) > 1 else 0.0:.2f}")
        out.append(f"| {k} | {', '.join(str(r['seed']) for r in mine)} | {cells[0]} | {cells[1]} |")
    out += ["", "After each task, K cosine prototypes per class fitted on all seen classes' training features at "
            "once (frozen features, exact, no memory), tested on the seen classes: the ceiling of a text "
            "classifier with K prompts per class."]
    return "\n".join(out)
