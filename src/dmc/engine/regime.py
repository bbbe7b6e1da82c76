"""The regime of a world: how close text prototypes and class means of a frozen CLIP come to the best
read-out of its features.

Real CLIP ViT-B/16 on CIFAR-100 / ImageNet-R: zero-shot / analytic 0.86 / 0.98 and NCM / analytic 0.92 /
0.93 (all classes of the test split; analytic = random-feature ridge). A world whose ratios are far lower
rewards methods for the wrong reasons, so `dmc world --regime` measures them for the glyph world.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dmc import analytic


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
    from dmc.data import glyphs
    from dmc.data.sources.glyphs import GlyphSource
    from dmc.models.clip import template_text_features

    protos = template_text_features(backbone, glyphs.class_names(), GlyphSource.template)  # (C, D)
    splits = {}
    for split in ("train", "test"):
        images, targets = glyphs.renditions_split(world, split)
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
