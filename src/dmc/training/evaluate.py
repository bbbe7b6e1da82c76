"""Evaluation: top-1 over all seen classes (no task identity), per test sample of each task."""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from dmc import faults
from dmc.data.dataset import ImageDataset
from dmc.training.runtime import Runtime


@torch.inference_mode()
def image_scores(visual: Callable[[torch.Tensor], torch.Tensor],
                 score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], protos: torch.Tensor,
                 dataset: ImageDataset, rt: Runtime, batch_size: int, desc: str = "eval") -> Iterator[torch.Tensor]:
    """Per batch of the dataset (in order), the scores (B, C) `score(visual(x), protos)`: the method's
    `scores` hook on the image tower's outputs (float32), against its `class_features` protos. What
    evaluation and `dmc predict` rank classes by."""
    loader = rt.loader(dataset, batch_size)
    for x, _ in tqdm(loader, desc=desc, leave=False, disable=not rt.bars):
        faults.point(f"predict:{desc}")
        with rt.autocast():
            feats = visual(x.to(rt.device, non_blocking=True))
        yield score(feats.float(), protos).float()  # (B, C)


@torch.inference_mode()
def feature_scores(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], protos: torch.Tensor,
                   feats: torch.Tensor, batch_size: int = 4096) -> Iterator[torch.Tensor]:
    """Like `image_scores`, from cached image-encoder outputs feats (N, D) (methods whose image encoder is
    frozen): `score(feats, protos)` (B, C), the method's `scores` hook, per batch."""
    for f in feats.split(batch_size):
        yield score(f, protos).float()


def predict(visual: Callable[[torch.Tensor], torch.Tensor], score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            protos: torch.Tensor, seen: list[int], dataset: ImageDataset, rt: Runtime, batch_size: int,
            desc: str = "eval") -> np.ndarray:
    """Predicted remapped labels (N,) for every sample: argmax of `image_scores` over the `seen` classes."""
    return _argmax(image_scores(visual, score, protos, dataset, rt, batch_size, desc), seen, rt.device)


def predict_features(score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], protos: torch.Tensor,
                     feats: torch.Tensor, seen: list[int], batch_size: int = 4096) -> np.ndarray:
    """Like `predict`, from cached image-encoder outputs feats (N, D): argmax of `feature_scores`."""
    return _argmax(feature_scores(score, protos, feats, batch_size), seen, feats.device)


def _argmax(batches: Iterable[torch.Tensor], seen: list[int], device: torch.device) -> np.ndarray:
    seen_t = torch.as_tensor(seen, device=device)
    preds = [seen_t[s.argmax(dim=1)].cpu() for s in batches]
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
