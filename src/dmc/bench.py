"""The benches: speed, memory and timing figures of the library's parts, on random weights and random data
(no download needed), as data. `dmc bench-speed`, `dmc bench-ot` and `dmc bench-ridge` print them.

Stages (`bench_speed`): stage 1 as images/s of forward+backward through the trainable image tower;
evaluation as images/s of the frozen image tower; stage 2 as prompt-learning steps/s on cached features
(text tower forward+backward over all classes), and the same epoch when the images are re-encoded every
step instead of cached. OT calibration (`bench_ot`) and RanPAC's read-out (`bench_ridge`) at a realistic size.
"""
from __future__ import annotations

import resource
import time
from dataclasses import replace
from typing import Any, Callable

import open_clip
import torch
import torch.nn.functional as F

from dmc.calibration import calibrate_gaussians
from dmc.config import CalibrationConfig
from dmc.models import BACKBONES
from dmc.models.clip import Backbone, set_trainable, vision_trainable_params
from dmc.models.prompts import PromptLearner
from dmc.training.runtime import Runtime


def random_backbone(name: str) -> Backbone:
    """A backbone with random weights: project configs by name, open_clip models without weights."""
    if name == "tiny":
        return BACKBONES.get("tiny")(None)
    if name == "toy":
        from dmc.world import toy

        return Backbone("toy", toy.build_toy(), toy.toy_tokenizer(), toy.toy_preprocess(), toy.toy_preprocess())
    model = open_clip.create_model(name, pretrained=None)
    return Backbone(name, model, open_clip.get_tokenizer(name), None, None)


def _timed(fn: Callable[[], None], rt: Runtime, repeats: int) -> float:
    fn()  # warm-up (allocator, kernels)
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def peak_memory_mb(rt: Runtime) -> float:
    if rt.device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def bench_speed(rt: Runtime, backbone: str = "ViT-B-16", batch: int = 64, classes: int = 100,
                repeats: int = 3, trainable: str = "all") -> dict:
    bb = random_backbone(backbone)
    model = bb.model.to(rt.device)
    for p in model.parameters():
        p.requires_grad_(False)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    x = torch.randn(batch, 3, size, size, device=rt.device)
    params = vision_trainable_params(model.visual, trainable)
    set_trainable(params)
    opt = torch.optim.AdamW(params, lr=1e-5)

    def stage1() -> None:
        with rt.autocast():
            loss = model.encode_image(x, normalize=True).float().pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def evaluate() -> None:
        with torch.inference_mode(), rt.autocast():
            model.encode_image(x)

    t1 = _timed(stage1, rt, repeats)
    for p in params:
        p.requires_grad_(False)
    te = _timed(evaluate, rt, repeats)
    learner = PromptLearner(bb, "a photo of a {}.").to(rt.device)
    learner.add_task([f"class {i}" for i in range(classes)])
    popt = torch.optim.Adam(learner.parameters(), lr=2e-3)
    with torch.inference_mode():
        feats = model.encode_image(x).float()
    labels = torch.randint(0, classes, (batch,), device=rt.device)

    def stage2(images: torch.Tensor | None = None) -> None:
        f = feats
        if images is not None:
            with torch.no_grad(), rt.autocast():
                f = model.encode_image(images).float()
        with rt.autocast():
            logits = F.normalize(f, dim=-1) @ learner().t().float()
            loss = F.cross_entropy(logits, labels)
        popt.zero_grad(set_to_none=True)
        loss.backward()
        popt.step()

    t2 = _timed(stage2, rt, repeats)
    t2_reencode = _timed(lambda: stage2(x), rt, repeats)
    return {"backbone": backbone, "device": str(rt.device), "precision": str(rt.amp_dtype or "fp32"),
            "batch": batch, "classes": classes, "trainable": trainable,
            "stage1_images_per_s": batch / t1, "eval_images_per_s": batch / te,
            "stage2_steps_per_s": 1 / t2, "stage2_reencode_steps_per_s": 1 / t2_reencode,
            "stage2_cache_speedup": t2_reencode / t2, "peak_memory_mb": peak_memory_mb(rt)}


def bench_ridge(dim_in: int = 512, dim: int = 10000, n: int = 5000, classes: int = 100, new: int = 10,
                device: str = "cpu", seed: int = 0) -> dict:
    """Time one task of RanPAC's read-out (methods.ranpac) on random features, as data: project n features
    (dim_in -> dim) and add them to G (M, M) and Q (M, classes); choose lambda on a held-out fifth (one thin
    SVD); solve (G + lambda I) W = Q by Cholesky. Memory: G, its factor and the shifted copy are M^2 float64
    each (3 x 800 MB at M = 10000); "added_peak_mb" is how much the process's peak grew (CPU) or the
    allocator's peak (CUDA)."""
    from dmc.analytic import one_hot, select_ridge
    from dmc.methods.ranpac import RidgeReadout

    rt = Runtime(torch.device(device))
    before = 0.0 if rt.device.type == "cuda" else peak_memory_mb(rt)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim_in, generator=gen).to(device)  # (N, D)
    labels = torch.randint(0, new, (n,), generator=gen).to(device)  # (N,)
    readout = RidgeReadout(dim_in, dim, seed, device)
    readout.grow(classes)
    times = {}
    for stage in ("features_and_sums", "select", "solve"):
        _sync_device(device)
        start = time.perf_counter()
        if stage == "features_and_sums":
            h = readout.add(x, labels)  # (N, M)
        elif stage == "select":
            lam, _ = select_ridge(h, one_hot(labels, new), generator=gen)
            readout.set_ridge(lam)
        else:
            readout.weights()
        _sync_device(device)
        times[f"{stage}_s"] = round(time.perf_counter() - start, 2)
    return {"dim_in": dim_in, "dim": dim, "n": n, "classes": classes, "device": device, **times,
            "total_s": round(sum(times.values()), 2), "gram_mb": round(dim * dim * 8 / 2**20),
            "added_peak_mb": round(peak_memory_mb(rt) - before)}


def _sync_device(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


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
        _sync_device(device)
        start = time.perf_counter()
        info = calibrate_gaussians(means, covs, old, new, cfg, gen).info
        _sync_device(device)
        runs.append(round(time.perf_counter() - start, 3))
    return {
        "seconds": sorted(runs)[len(runs) // 2], "runs": runs, "iterations": info["niter"],
        "marginal_err": info["err"],
        "n_repaired": info["n_repaired"], "n_classes": n_classes, "samples": samples, "n_feats": n_feats,
        "dim": dim, "device": str(device), "dtype": str(dtype).removeprefix("torch."), "solver": cfg.solver,
        "level": cfg.level,
    }
