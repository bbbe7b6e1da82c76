"""Training stages shared by the methods: adapt vision against frozen anchors; learn prompts on features."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dmc.data.dataset import ImageDataset
from dmc.engine.train import fit
from dmc.methods.base import Method, Task
from dmc.models.clip import set_trainable, vision_trainable_params


def label_lut(classes: list[int], n_total: int, device: torch.device) -> torch.Tensor:
    """Remapped label -> column of the logits over `classes` (-1 for labels outside)."""
    lut = torch.full((n_total,), -1, dtype=torch.long, device=device)
    lut[torch.as_tensor(classes, device=device)] = torch.arange(len(classes), device=device)
    return lut


def train_vision(method: Method, task: Task, anchors: torch.Tensor, classes: list[int],
                 extra_params: list[torch.nn.Parameter] | None = None,
                 extra_loss: Callable[[], torch.Tensor] | None = None,
                 anchors_fn: Callable[[], torch.Tensor] | None = None, desc: str = "stage 1") -> list[float]:
    """Cross-entropy of images against class prototypes over `classes`; only the image tower's trainable
    part (cfg.vision.trainable) and `extra_params` learn. `anchors` (C, D) are fixed prototypes; with
    `anchors_fn` they are recomputed each step instead (co-training of prompts)."""
    cfg, rt, model = method.cfg.vision, method.rt, method.model
    params = vision_trainable_params(model, cfg.trainable)
    set_trainable(params)
    lut = label_lut(classes, method.bench.n_classes, rt.device)
    scale = method.scale()
    model.visual.train()
    visual = rt.wrap(model.visual)  # DistributedDataParallel under torchrun

    def loss_fn(batch) -> torch.Tensor:
        x, y = batch[0].to(rt.device, non_blocking=True), batch[1].to(rt.device)
        protos = anchors_fn() if anchors_fn is not None else anchors
        feats = F.normalize(visual(x), dim=-1)  # (B, D)
        loss = F.cross_entropy(scale * feats @ protos.t().to(feats.dtype), lut[y])
        return loss + extra_loss() if extra_loss is not None else loss

    loader = rt.train_loader(task.train, cfg.batch_size, task.generator)
    try:
        return fit(params + list(extra_params or []), loader, loss_fn, cfg.epochs, cfg.lr, rt,
                   weight_decay=cfg.weight_decay, desc=f"task {task.index + 1} {desc}",
                   hint="lower vision.lr (e.g. --set vision.lr=1e-5)")
    finally:
        for p in model.parameters():
            p.requires_grad_(False)
        model.visual.eval()


@torch.inference_mode()
def encode_dataset(method: Method, dataset: ImageDataset, visual: torch.nn.Module | None = None,
                   desc: str = "encode") -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised image features (N, D) and labels (N,) of a dataset, encoded once (a feature cache)."""
    rt = method.rt
    visual = method.model.visual if visual is None else visual
    feats, labels = [], []
    loader = rt.loader(dataset, method.cfg.eval.batch_size)
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not (rt.progress and rt.is_main)):
        with rt.autocast():
            feats.append(visual(x.to(rt.device, non_blocking=True)).float())
        labels.append(y.to(rt.device))
    if not feats:
        return torch.zeros(0, 0, device=rt.device), torch.zeros(0, dtype=torch.long, device=rt.device)
    return torch.cat(feats), torch.cat(labels)


def feature_batches(feats: torch.Tensor, labels: torch.Tensor, batch_size: int,
                    generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Callable[[int], list]:
    """Shuffled mini-batches of cached features, one new permutation per epoch from `generator`
    (the same on every rank; under torchrun each rank keeps every world_size-th sample of it)."""
    n_local = math.ceil(len(labels) / world_size)
    n_batches = max(1, math.ceil(n_local / batch_size))

    def batches(epoch: int) -> list:
        perm = torch.randperm(len(labels), generator=generator)[rank::world_size].to(feats.device)
        chunks = [perm[i * batch_size:(i + 1) * batch_size] for i in range(n_batches)]
        return [(feats[idx], labels[idx]) for idx in chunks if len(idx)]

    return batches


def train_prompts(method: Method, task: Task, learner: torch.nn.Module, feats: torch.Tensor,
                  labels: torch.Tensor, classes: list[int],
                  replay: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
                  desc: str = "stage 2") -> list[float]:
    """Cross-entropy over `classes` of cached image features against the prompt learner's prototypes;
    `replay()` adds pseudo-features of old classes to every step. Only prompt vectors learn."""
    cfg, rt = method.cfg.prompt, method.rt
    lut = label_lut(classes, method.bench.n_classes, rt.device)
    scale = method.scale()
    wrapped = rt.wrap(learner)  # DistributedDataParallel under torchrun

    def loss_fn(batch) -> torch.Tensor:
        f, y = batch
        if replay is not None:
            rf, ry = replay()
            f, y = torch.cat([f, rf.to(f.dtype)]), torch.cat([y, ry])
        protos = wrapped(classes)  # (C, D)
        logits = scale * F.normalize(f, dim=-1) @ protos.t().to(f.dtype)  # (B, C)
        return F.cross_entropy(logits, lut[y])

    params = [p for p in learner.parameters() if p.requires_grad]
    batches = feature_batches(feats, labels, rt.local_batch(cfg.batch_size), task.generator, rt.rank,
                              rt.world_size)
    return fit(params, batches, loss_fn,
               cfg.epochs, cfg.lr, rt, desc=f"task {task.index + 1} {desc}",
               hint="lower prompt.lr (e.g. --set prompt.lr=5e-4)")

