"""Throughput and memory figures for the stages, on random weights (no download needed).

Stage 1: images/s of forward+backward through the trainable image tower. Evaluation: images/s of the
frozen image tower. Stage 2: prompt-learning steps/s on cached features (text tower forward+backward over
all classes), and the same epoch when the images are re-encoded every step instead of cached.
"""
from __future__ import annotations

import resource
import time
from typing import Callable

import open_clip
import torch
import torch.nn.functional as F

from dmc.models.clip import BACKBONES, Backbone, set_trainable, vision_trainable_params
from dmc.models.prompts import PromptLearner
from dmc.training.runtime import Runtime


def random_backbone(name: str) -> Backbone:
    """A backbone with random weights: project configs by name, open_clip models without weights."""
    if name == "tiny":
        return BACKBONES.get("tiny")(None)
    if name == "toy":
        from dmc.models import toy

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
