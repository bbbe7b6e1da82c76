"""The one optimisation loop every stage of every method uses."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterable, Sequence

import torch
from tqdm.auto import tqdm

from dmc import faults
from dmc.errors import UserError
from dmc.schedule import cosine_lr
from dmc.training.runtime import Runtime

log = logging.getLogger(__name__)

# Called after every epoch of every stage with (stage description, epoch from 1, mean loss, seconds): the
# experiment trackers (`dmc.engine.trackers`) listen here. Empty unless a tracker is switched on.
EPOCH_LISTENERS: list[Callable[[str, int, float, float], None]] = []


def fit(
    params: Sequence[torch.nn.Parameter],
    batches: Callable[[int], Iterable],
    loss_fn: Callable[[object], torch.Tensor],
    epochs: int,
    lr: float,
    rt: Runtime,
    weight_decay: float = 0.0,
    desc: str = "train",
    hint: str = "lower the learning rate",
    optimizer: str = "adamw",
    groups: Sequence[dict] = (),
    betas: tuple[float, float] = (0.9, 0.999),
    warmup: int = 0,
    after_step: Callable[[float], None] | None = None,
) -> list[float]:
    """Minimise `loss_fn` over `batches(epoch)` for `epochs` epochs with AdamW (or `optimizer="sgd"`: SGD
    with momentum 0.9, the optimiser of PyCIL-style peers) and a cosine schedule after `warmup` steps.

    `batches(epoch)` returns a sized iterable (a DataLoader or a list). Returns the mean loss of each epoch.
    A non-finite loss stops the run with a one-line error (`hint` says what to change). Under torchrun the
    loss of a step is averaged over the ranks first: the history is the global batch's, and every rank
    stops at the same step.
    `groups` are further parameter groups with their own settings ({"params": [...], "lr": ...,
    "weight_decay": ...}, e.g. prompts co-trained with an image tower); the schedule scales every group.
    `after_step(loss)` runs after each optimiser step (a clamp of a parameter, a per-step loss record).
    """
    param_groups = [{"params": [p for p in params if p.requires_grad]}]
    param_groups += [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    param_groups = [g for g in param_groups if g["params"]]
    if not param_groups or epochs <= 0:
        return []
    total = max(1, epochs * len(batches(0)))
    opt, sched = _optimiser(param_groups, optimizer, lr, weight_decay, betas, total, warmup)

    def step(loss: torch.Tensor, value: float) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if after_step is not None:
            after_step(value)

    start = time.time()
    history = []
    with tqdm(total=total, desc=desc, leave=False, disable=not rt.bars) as bar:
        for e in range(epochs):
            began = time.time()
            history.append(_epoch(batches(e), loss_fn, step, rt, bar, desc, e, hint))
            for listener in EPOCH_LISTENERS:
                listener(desc, e + 1, history[-1], time.time() - began)
    if rt.is_main:  # one line per finished stage: the figures of its bar, readable in a log file
        log.info("%s: %d epoch%s, loss %.4f -> %.4f, %.1f s", desc, epochs, "s" * (epochs != 1), history[0],
                 history[-1], time.time() - start)
    return history


def _optimiser(groups: list[dict], optimizer: str, lr: float, weight_decay: float, betas: tuple[float, float],
               total: int, warmup: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (or SGD with momentum 0.9) and its schedule: linear warm-up, then cosine decay over `total` steps.
    `foreach`: one call updates every tensor, not a Python loop of small ops per tensor (torch's choice on
    CPU); the same elementwise kernels, so the same numbers, bit for bit (tests/test_speed.py)."""
    if optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay, foreach=True)
    else:
        opt = torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, total, warmup))


def _epoch(batches: Iterable, loss_fn: Callable[[object], torch.Tensor],
           step: Callable[[torch.Tensor, float], None], rt: Runtime, bar: tqdm, desc: str, epoch: int,
           hint: str) -> float:
    """One pass over `batches`, one optimiser step each; returns the mean loss."""
    running, count = 0.0, 0
    for batch in batches:
        faults.point(f"fit:{desc}")
        with rt.autocast():
            loss = loss_fn(batch)
        value = float(rt.mean_over_ranks(loss.detach()))  # the global batch's loss, the same on every rank
        if not math.isfinite(value):
            raise UserError(f"loss became {value} in {desc} (epoch {epoch + 1}); {hint}")
        step(loss, value)
        running, count = running + value, count + 1
        bar.update(1)
        bar.set_postfix(loss=f"{running / count:.3f}")
    return running / max(1, count)
