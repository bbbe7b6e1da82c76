"""Feature caches: a dataset encoded once by the image tower, shuffled batches of it, label maps.

Methods whose later stages keep the image tower frozen train on these instead of re-encoding images at
every step (stage 2 of DMC, CoOp, RAPF's adapter; the loop's evaluation of a frozen encoder).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from dmc import faults
from dmc.data.dataset import ImageDataset
from dmc.errors import UserError
from dmc.training.loading import FeatureEpoch, ShuffledEpoch
from dmc.training.runtime import Runtime


@torch.inference_mode()
def encode_dataset(visual: nn.Module, dataset: ImageDataset, rt: Runtime, batch_size: int,
                   desc: str = "encode") -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised image features (N, D) and labels (N,) of a dataset, encoded once by `visual`. Under
    torchrun each rank encodes its share of the batches and the ranks combine them exactly
    (`Runtime.gather_rows`): every rank holds the single-process features, so statistics built from them
    (the Gaussian memory, RanPAC's sums) are the same on every rank."""
    feats = []
    rows = rt.shared_batches(len(dataset), batch_size)
    loader = rt.loader(dataset, batch_size, shared=True)
    for x, _ in tqdm(loader, desc=desc, leave=False, disable=not rt.bars):
        faults.point(f"encode:{desc}")
        with rt.autocast():
            feats.append(visual(x.to(rt.device, non_blocking=True)).float())
    labels = torch.as_tensor(dataset.labels, dtype=torch.long, device=rt.device)  # (N,)
    if not len(dataset):
        return torch.zeros(0, 0, device=rt.device), labels
    feats_t = rt.gather_rows(len(dataset), rows, feats)  # (N, D)
    if not bool(torch.isfinite(feats_t).all()):
        raise UserError(f"image features became non-finite ({desc}): the image tower diverged; lower vision.lr "
                        "(e.g. --set vision.lr=1e-5)")
    return feats_t, labels


def feature_batches(feats: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator,
                    rt: Runtime | None = None) -> Callable[[int], FeatureEpoch]:
    """epoch -> shuffled mini-batches of cached features (N, D) and labels (N,): one permutation per epoch
    from `generator`, cut into global batches of `batch_size`; under torchrun each rank gets its share of
    every global batch (dmc.training.loading), so the union over ranks is the single-process batch."""
    rank, world = (rt.rank, rt.world_size) if rt is not None else (0, 1)
    return lambda epoch: FeatureEpoch(feats, labels, ShuffledEpoch(len(labels), batch_size, generator, rank, world))


def label_lut(classes: list[int], device: torch.device | str) -> torch.Tensor:
    """Remapped label -> column of the logits over `classes` (-1 for labels up to max(classes) outside
    them): `lut[y]` turns a batch's labels into cross-entropy targets. Shape (max(classes) + 1,)."""
    lut = torch.full((max(classes) + 1,), -1, dtype=torch.long, device=device)
    lut[torch.as_tensor(classes, device=device)] = torch.arange(len(classes), device=device)
    return lut
