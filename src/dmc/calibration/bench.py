"""Timing of one OT calibration at a realistic size (100 old classes x 256 samples vs 5,000 images)."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from dmc.calibration.calibrate import calibrate_gaussians
from dmc.config import CalibrationConfig


def bench_ot(
    n_classes: int = 100,
    samples: int = 256,
    n_feats: int = 5000,
    dim: int = 512,
    device: str = "cpu",
    *,
    cfg: CalibrationConfig | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    repeats: int = 3,
) -> dict[str, Any]:
    """Time ``calibrate_gaussians`` (method "ot", ``cfg.level`` as given, default: the config's) on random
    data, ``repeats`` calls (fresh samples each); returns the figures as data: the median as "seconds",
    every call under "runs".

    Data: 10 random regions; class means and old features scattered around them; covariances
    B B^T / 64 + 0.05 I with B (D, 16) Gaussian; new = old + a small linear map + a shift. A tiny call
    warms up first. Memory: a few (C*S, N) matrices (512 MB each in float32 at the default size).
    Returns {"seconds", "runs", "iterations", "marginal_err", "n_repaired", the sizes, "device", "dtype",
    "solver"}.
    """
    cfg = replace(cfg or CalibrationConfig(), method="ot", samples_per_class=samples)
    gen = torch.Generator(device=device).manual_seed(seed)
    kw = {"generator": gen, "device": device, "dtype": dtype}
    centres = torch.randn(10, dim, **kw)  # (10, D): old classes and current images share 10 regions
    means = centres.repeat(-(-n_classes // 10), 1)[:n_classes]  # (C, D)
    means = means + 0.5 * torch.randn(n_classes, dim, **kw)
    basis = torch.randn(n_classes, dim, 16, **kw)  # (C, D, 16)
    covs = basis @ basis.transpose(1, 2) / 64 + 0.05 * torch.eye(dim, device=device, dtype=dtype)  # (C, D, D)
    old = centres.repeat(-(-n_feats // 10), 1)[:n_feats] + 0.7 * torch.randn(n_feats, dim, **kw)  # (N, D)
    new = old + 0.05 * old @ torch.randn(dim, dim, **kw) / dim**0.5 + 0.1  # (N, D)
    small = (means[:2, :8], covs[:2, :8, :8], old[:20, :8], new[:20, :8])
    calibrate_gaussians(*small, replace(cfg, samples_per_class=16), gen)  # warm-up
    runs = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        info = calibrate_gaussians(means, covs, old, new, cfg, gen).info
        _sync(device)
        runs.append(round(time.perf_counter() - start, 3))
    return {
        "seconds": sorted(runs)[len(runs) // 2], "runs": runs, "iterations": info["niter"],
        "marginal_err": info["err"],
        "n_repaired": info["n_repaired"], "n_classes": n_classes, "samples": samples, "n_feats": n_feats,
        "dim": dim, "device": str(device), "dtype": str(dtype).removeprefix("torch."), "solver": cfg.solver,
        "level": cfg.level,
    }


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
