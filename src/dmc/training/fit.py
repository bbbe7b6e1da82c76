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
) -> list[float]:
    """Minimise `loss_fn` over `batches(epoch)` for `epochs` epochs with AdamW (or `optimizer="sgd"`: SGD
    with momentum 0.9, the optimiser of PyCIL-style peers) and a cosine schedule.

    `batches(epoch)` returns a sized iterable (a DataLoader or a list). Returns the mean loss of each epoch.
    A non-finite loss stops the run with a one-line error (`hint` says what to change). Under torchrun the
    loss of a step is averaged over the ranks first: the history is the global batch's, and every rank
    stops at the same step.
    `groups` are further parameter groups with their own settings ({"params": [...], "lr": ...,
    "weight_decay": ...}, e.g. prompts co-trained with an image tower); the schedule scales every group.
    """
    param_groups = [{"params": [p for p in params if p.requires_grad]}]
    param_groups += [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups]
    param_groups = [g for g in param_groups if g["params"]]
    if not param_groups or epochs <= 0:
        return []
    opt = _optimizer(optimizer, param_groups, lr, weight_decay)
    per_epoch = len(batches(0))
    total = max(1, epochs * per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, total))
    history: list[float] = []
    start = time.time()
    bar = tqdm(total=total, desc=desc, leave=False, disable=not rt.bars)
    for epoch in range(epochs):
        running, count = 0.0, 0
        for batch in batches(epoch):
            faults.point(f"fit:{desc}")
            with rt.autocast():
                loss = loss_fn(batch)
            value = float(rt.mean_over_ranks(loss.detach()))  # the global batch's loss, the same on every rank
            if not math.isfinite(value):
                bar.close()
                raise UserError(f"loss became {value} in {desc} (epoch {epoch + 1}); {hint}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running, count = running + value, count + 1
            bar.update(1)
            bar.set_postfix(loss=f"{running / count:.3f}")
        history.append(running / max(1, count))
    bar.close()
    if rt.is_main:  # one line per finished stage: the figures of its bar, readable in a log file
        log.info("%s: %d epoch%s, loss %.4f -> %.4f, %.1f s", desc, epochs, "s" * (epochs != 1), history[0],
                 history[-1], time.time() - start)
    return history


def _optimizer(name: str, groups: list[dict], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, or SGD with momentum 0.9. `foreach`: one call updates every tensor, not a Python loop of small
    ops per tensor (torch's choice on CPU); the same elementwise kernels, so the same numbers, bit for bit
    (tests/test_speed.py)."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay, foreach=True)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, foreach=True)
