"""Training stages shared by the methods: adapt vision against frozen anchors; learn prompts on features.

Each stage takes what it trains and what it reads explicitly (the module, the class list, the task, its
config section, the runtime, CLIP's logit scale), so it can be called, and tested, without a method.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from dmc.config import PromptConfig, VisionConfig
from dmc.models.clip import set_trainable, vision_trainable_params
from dmc.training.features import feature_batches, label_lut
from dmc.training.fit import fit
from dmc.training.losses import cosine_logits, cross_entropy
from dmc.training.runtime import Runtime
from dmc.training.task import Task

Anchors = torch.Tensor | Callable[[], torch.Tensor]


def train_vision(visual: nn.Module, anchors: Anchors, classes: list[int], task: Task, cfg: VisionConfig,
                 rt: Runtime, scale: float, extra_group: dict | None = None,
                 extra_loss: Callable[[], torch.Tensor] | None = None, desc: str = "stage 1",
                 teacher: nn.Module | None = None) -> list[float]:
    """Cross-entropy of task images against class prototypes over `classes`; only the image tower's
    trainable part (cfg.trainable) and `extra_group` learn (an optimiser parameter group with its own lr
    and weight decay: {"params": [...], "lr": ..., "weight_decay": ...}). `anchors` are fixed prototypes
    (C, D), or a function recomputing them at each step (co-training of prompts). With a `teacher` (the tower before
    this stage), cfg.distill * mean ||norm f(x) - norm f_teacher(x)||^2 keeps the features of the task's
    images where they were, which is what old classes' stored statistics assume."""
    params = vision_trainable_params(visual, cfg.trainable)
    set_trainable(params)
    lut = label_lut(classes, rt.device)
    visual.train()
    wrapped = rt.wrap(visual)  # DistributedDataParallel under torchrun

    def loss_fn(batch) -> torch.Tensor:
        x, y = batch[0].to(rt.device, non_blocking=True), batch[1].to(rt.device)
        protos = anchors() if callable(anchors) else anchors  # (C, D)
        feats = wrapped(x)  # (B, D)
        loss = cross_entropy(cosine_logits(feats, protos, scale), lut[y], rt)  # float32 logits (B, C)
        if teacher is not None:
            with torch.no_grad():
                target = F.normalize(teacher(x).float(), dim=-1)  # (B, D)
            gap = (F.normalize(feats.float(), dim=-1) - target).pow(2).sum(-1)  # (B,)
            loss = loss + cfg.distill * rt.global_mean(gap)
        return loss + extra_loss() if extra_loss is not None else loss

    loader = rt.train_loader(task.train, cfg.batch_size, task.generator)
    try:
        return fit(params, loader, loss_fn, cfg.epochs, cfg.lr, rt, weight_decay=cfg.weight_decay,
                   groups=[extra_group] if extra_group else (), desc=f"task {task.index + 1} {desc}",
                   hint="lower vision.lr (e.g. --set vision.lr=1e-5)")
    finally:
        for p in visual.parameters():
            p.requires_grad_(False)
        visual.eval()


def adapt_first_session(method: Any, task: Task) -> tuple[list[float], float]:
    """First-session adaptation (RanPAC's and FSA's `adapt`): the method's image tower trained on `task`
    with the `vision.*` recipe against the template text of its classes. (per-epoch losses, seconds)."""
    clock = time.time()
    loss = train_vision(method.model.visual, method.template_features(task.classes), task.classes, task,
                        method.cfg.vision, method.rt, method.scale(), desc="first-task adaptation")
    return loss, time.time() - clock


def train_prompts(learner: nn.Module, feats: torch.Tensor, labels: torch.Tensor, classes: list[int], task: Task,
                  cfg: PromptConfig, rt: Runtime, scale: float,
                  replay: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
                  desc: str = "stage 2") -> list[float]:
    """Cross-entropy over `classes` of cached image features (N, D) against the prompt learner's
    prototypes; `replay()` adds pseudo-features of old classes to every step (this rank's share of the
    step's global replay batch under torchrun). Only prompt vectors learn."""
    lut = label_lut(classes, rt.device)
    wrapped = rt.wrap(learner)  # DistributedDataParallel under torchrun

    def loss_fn(batch) -> torch.Tensor:
        f, y = batch
        if replay is not None:
            rf, ry = replay()
            f, y = torch.cat([f, rf.to(f.dtype)]), torch.cat([y, ry])
        protos = wrapped(classes)  # (C, D)
        return cross_entropy(cosine_logits(f, protos, scale), lut[y], rt)  # float32 logits (B, C)

    params = [p for p in learner.parameters() if p.requires_grad]
    batches = feature_batches(feats, labels, cfg.batch_size, task.generator, rt)  # this rank's shares
    return fit(params, batches, loss_fn, cfg.epochs, cfg.lr, rt, desc=f"task {task.index + 1} {desc}",
               hint="lower prompt.lr (e.g. --set prompt.lr=5e-4)")


@torch.no_grad()
def average_weights(visual: nn.Module, before: nn.Module, keep: float) -> None:
    """Weight-space interpolation after stage 1: theta = keep * theta_new + (1 - keep) * theta_before
    (WiSE-FT, Wortsman et al., CVPR 2022), on every floating-point tensor of the tower."""
    old = before.state_dict()
    for name, value in visual.state_dict().items():
        if value.is_floating_point():
            value.mul_(keep).add_(old[name].to(value.dtype), alpha=1.0 - keep)
