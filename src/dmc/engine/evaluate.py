"""Evaluation: top-1 over all seen classes (no task identity), per test sample of each task."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dmc.data.dataset import ImageDataset


@torch.inference_mode()
def predict(method, dataset: ImageDataset, seen: list[int], desc: str = "eval") -> np.ndarray:
    """Predicted remapped labels (N,) for every sample, argmax over `seen` classes."""
    rt = method.rt
    protos = method.class_features(seen).float()  # (C, D)
    seen_t = torch.as_tensor(seen, device=rt.device)
    preds = []
    loader = rt.loader(dataset, method.cfg.eval.batch_size)
    for x, _ in tqdm(loader, desc=desc, leave=False, disable=not (rt.progress and rt.is_main)):
        with rt.autocast():
            feats = method.image_features(x.to(rt.device, non_blocking=True))
        scores = F.normalize(feats.float(), dim=-1) @ protos.t()  # (B, C)
        preds.append(seen_t[scores.argmax(dim=1)].cpu())
    return torch.cat(preds).numpy() if preds else np.zeros(0, dtype=np.int64)


def task_accuracies(preds: np.ndarray, labels: np.ndarray, tasks: list[list[int]]) -> tuple[list[float], list[int]]:
    """Accuracy (percent) and sample count on each task's classes."""
    accs, counts = [], []
    for classes in tasks:
        mask = np.isin(labels, classes)
        n = int(mask.sum())
        counts.append(n)
        accs.append(float(100.0 * (preds[mask] == labels[mask]).mean()) if n else float("nan"))
    return accs, counts
