"""Evaluation in the loop: every seen class tested by the method's classifier of the seen classes, on the
image tower's outputs (encoded once, and held here, when the method's tower is frozen)."""
from __future__ import annotations

import numpy as np
import torch

from dmc.data.dataset import ImageDataset, subset_dataset
from dmc.methods import Method
from dmc.training.evaluate import predict, predict_features, tower_version
from dmc.training.task import Task


class EvalCache:
    """The test set's image-tower outputs for a method whose tower is frozen (`frozen_image_encoder`):
    encoded at the first evaluation and reused, as long as the tower is the one they were encoded by."""

    def __init__(self) -> None:
        self.feats: torch.Tensor | None = None  # (N, D), every test image
        self.tower: tuple | None = None  # the tower's version when they were encoded

    def features(self, method: Method, test: ImageDataset) -> torch.Tensor:
        """The cached outputs (N, D); a tower that changed since is a bug of the method (RuntimeError)."""
        if self.feats is None:
            self.feats = method.encode(test, "test features (encoded once)")[0]
            self.tower = tower_version(method.model.visual)
        elif tower_version(method.model.visual) != self.tower:
            raise RuntimeError(f"method {type(method).__name__} sets frozen_image_encoder = True but its image tower "
                               "changed after the test features were cached; it must not set the flag")
        return self.feats


def evaluate_task(method: Method, task: Task, test: ImageDataset, batch_size: int,
                  cache: EvalCache) -> tuple[np.ndarray, np.ndarray]:
    """Predictions on this rank's share of the test images of all seen classes, by the method's classifier
    of the seen classes on the image tower's outputs. With a frozen image encoder, the whole test set is
    encoded once (`cache`) and every later evaluation applies only the classifier."""
    rt = method.rt
    idx = np.nonzero(np.isin(test.labels, task.seen))[0]
    if not len(idx):  # no test image of any seen class (dmc learn without test/ folders): nothing to score
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    mine = idx[rt.shard(len(idx))]  # every rank tests its share
    with torch.no_grad():
        classifier = method.classifier(task.seen)
    if not method.frozen_image_encoder:
        preds = predict(method.model.visual, classifier, task.seen, subset_dataset(test, mine), rt, batch_size,
                        desc=f"task {task.index + 1} eval")
        return preds, test.labels[mine]
    feats = cache.features(method, test)
    feats = feats[torch.as_tensor(mine, device=feats.device)]
    return predict_features(classifier, feats, task.seen), test.labels[mine]
