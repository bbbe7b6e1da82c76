"""The regime of a world: how close text prototypes and class means of a frozen CLIP come to the best
read-out of its features.

Real CLIP ViT-B/16 on CIFAR-100 / ImageNet-R: zero-shot / analytic 0.86 / 0.98 and NCM / analytic 0.92 /
0.93 (all classes of the test split; analytic = random-feature ridge). A world whose ratios are far lower
rewards methods for the wrong reasons, so `dmc world --regime` measures them for the glyph world.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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
def encode_images(model, transform_batch, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
    """Unnormalised image features (N, D) of uint8 images (N, H, W, 3) under a frozen image tower."""
    was_training = model.training
    model.eval()
    feats = [model.encode_image(transform_batch(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(feats).float()


def measure(text_protos: torch.Tensor, train: tuple[torch.Tensor, torch.Tensor],
            test: tuple[torch.Tensor, torch.Tensor], settings: RegimeSettings = RegimeSettings()) -> dict:
    """Accuracies (%) of zero-shot, NCM and the analytic read-out on all classes, and their ratios.

    text_protos (C, D): one text prototype per class. train / test: (features (N, D), labels (N,)) with
    labels in [0, C).
    """
    (xtr, ytr), (xte, yte) = train, test
    n_classes = text_protos.shape[0]
    zs = (F.normalize(xte, dim=-1) @ F.normalize(text_protos, dim=-1).T).argmax(1)
    means = analytic.class_means(xtr, ytr, list(range(n_classes)))
    ncm = analytic.ncm_predict(xte, means)
    probe = analytic.linear_probe(xtr, ytr, n_classes)
    lin = analytic.ncm_predict(xte, probe.double())
    proj = analytic.random_projection(xtr.shape[1], settings.dim, settings.seed)
    htr, hte = analytic.random_features(xtr, proj), analytic.random_features(xte, proj)
    target = analytic.one_hot(ytr, n_classes)
    gen = torch.Generator().manual_seed(settings.seed)
    lam, _ = analytic.select_ridge(htr, target, holdout=settings.holdout, generator=gen)
    gram, q = analytic.ridge_sums(htr, target)
    an = (hte @ analytic.ridge_solve(gram, q, lam)).argmax(1)
    acc = {name: 100.0 * float((pred == yte).double().mean()) for name, pred in
           (("zero_shot", zs), ("ncm", ncm), ("probe", lin), ("analytic", an))}
    return {**acc, "zs_over_analytic": acc["zero_shot"] / acc["analytic"],
            "ncm_over_analytic": acc["ncm"] / acc["analytic"], "ridge": lam, "dim": settings.dim,
            "seed": settings.seed}


def glyph_regime(backbone, world, settings: RegimeSettings = RegimeSettings()) -> dict:
    """The regime of the glyph world `world` under a frozen CLIP `backbone` (all 100 classes)."""
    protos = template_text_features(backbone, glyphs.class_names(), GlyphSource.template)  # (C, D)
    splits = {}
    for split in ("train", "test"):
        images, targets = renditions_split(world, split)
        splits[split] = (encode_images(backbone.model, backbone.preprocess.batch, images), torch.as_tensor(targets))
    return measure(protos, splits["train"], splits["test"], settings)


def regime_table(result: dict, label: str) -> str:
    """Markdown table of a `measure` result."""
    return "\n".join([
        "| world | zero-shot | NCM | linear probe | analytic | zero-shot / analytic | NCM / analytic |",
        "|---|---|---|---|---|---|---|",
        f"| {label} | {result['zero_shot']:.1f} | {result['ncm']:.1f} | {result['probe']:.1f} | {result['analytic']:.1f} | "
        f"{result['zs_over_analytic']:.2f} | {result['ncm_over_analytic']:.2f} |",
        "",
        f"analytic: random ReLU features (M = {result['dim']}, seed {result['seed']}) + ridge, lambda = "
        f"{result['ridge']:g} chosen on a held-out fifth of the training features; NCM: cosine to class means of "
        "normalised training features; linear probe: cosine prototypes fitted on all training features at once; "
        "zero-shot: the benchmark's template. All 100 classes of the test split.",
    ])


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
    """`prefix_readouts` on the frozen toy CLIP's features of the glyph world `cfg.data.world`, in the class
    order of each seed (the benchmark's split into tasks); one row per (K, seed)."""
    splits = {}
    for split in ("train", "test"):
        images, targets = renditions_split(cfg.data.world, split)
        splits[split] = (encode_images(backbone.model, backbone.preprocess.batch, images), torch.as_tensor(targets))
    rows = []
    for k in ks:
        for seed in seeds:
            bench = make_benchmark(replace(cfg, seed=seed), seed)
            tasks = [[bench.class_order[c] for c in task] for task in bench.tasks]  # native glyph ids
            rows.append({**prefix_readouts(splits["train"], splits["test"], tasks, k), "seed": seed})
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
