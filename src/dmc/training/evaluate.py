"""Evaluation: top-1 over all seen classes (no task identity), per test sample of each task."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dmc import faults
from dmc.data.dataset import ImageDataset
from dmc.training.runtime import Runtime


@torch.inference_mode()
def predict(image_features: Callable[[torch.Tensor], torch.Tensor], protos: torch.Tensor, seen: list[int],
            dataset: ImageDataset, rt: Runtime, batch_size: int, desc: str = "eval") -> np.ndarray:
    """Predicted remapped labels (N,) for every sample: argmax of cos(image_features(x), protos) over the
    `seen` classes, whose prototypes protos (C, D) are normalised."""
    seen_t = torch.as_tensor(seen, device=rt.device)
    preds = []
    loader = rt.loader(dataset, batch_size)
    for x, _ in tqdm(loader, desc=desc, leave=False, disable=not rt.bars):
        faults.point(f"predict:{desc}")
        with rt.autocast():
            feats = image_features(x.to(rt.device, non_blocking=True))
        scores = F.normalize(feats.float(), dim=-1) @ protos.t()  # (B, C)
        preds.append(seen_t[scores.argmax(dim=1)].cpu())
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


@torch.inference_mode()
def predict_features(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], protos: torch.Tensor,
                     feats: torch.Tensor, seen: list[int], batch_size: int = 4096) -> np.ndarray:
    """Like `predict`, from cached image-encoder outputs feats (N, D) (methods whose image encoder is frozen):
    argmax over the `seen` classes of `score(feats, protos)` (B, C), the method's `scores` hook."""
    seen_t = torch.as_tensor(seen, device=feats.device)
    preds = [seen_t[score(f, protos).float().argmax(dim=1)].cpu() for f in feats.split(batch_size)]
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def task_counts(preds: np.ndarray, labels: np.ndarray, tasks: list[list[int]]) -> np.ndarray:
    """(T, 2) array: correct predictions and sample count on each task's classes (summable over ranks)."""
    out = np.zeros((len(tasks), 2))
    for k, classes in enumerate(tasks):
        mask = np.isin(labels, classes)
        out[k] = (preds[mask] == labels[mask]).sum(), mask.sum()
    return out


def accuracies(counts: np.ndarray) -> tuple[list[float], list[int]]:
    """Accuracy (percent) and sample count per task from `task_counts` rows."""
    accs = [float(100.0 * c / n) if n else float("nan") for c, n in counts]
    return accs, [int(n) for _, n in counts]


def tower_version(module: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of `module` is replaced or modified in place (optimiser
    steps, `load_state_dict`): torch's per-tensor version counter, which autograd keeps for its own checks."""
    return tuple((id(t), t._version) for t in [*module.parameters(), *module.buffers()])
