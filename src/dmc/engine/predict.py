"""Using what was trained: the model after task K of a run, rebuilt from its run directory, on new images.

The model is rebuilt the way `--resume` rebuilds it: the run's saved config, the backbone and the method
seeded from the run's seed (so parts that no checkpoint holds, such as a frozen random tower, come out the
same), every task up to K begun in order, then checkpoint K loaded. Class names come from the run's
`plan.json`, so the training data need not be there. Images go through the evaluation transform and the
evaluation's scoring code (`training.evaluate`): on the run's test images, the predictions are those the
run was scored on.

    import dmc
    model = dmc.load("runs/my-run")              # after the last task; task=K for an earlier one
    model.classes                                 # names of the classes seen after task K
    out = model.predict(["cat.jpg", "dog.png"], topk=5)
    out.names()[0], out.scores[0]                 # best first
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence, Union

import numpy as np
import torch
from PIL import Image

from dmc import config
from dmc.data.benchmark import Benchmark
from dmc.data.dataset import ImageDataset
from dmc.data.sources.base import Samples
from dmc.data.sources.files import check_readable
from dmc.engine.loop import load_learned, seeded_backbone, seeded_method
from dmc.engine.model_dir import model_version
from dmc.errors import UserError
from dmc.methods import Method
from dmc.rundir import CONFIG, CheckpointError, RunDir
from dmc.training.evaluate import feature_scores, image_scores
from dmc.training.features import encode_dataset
from dmc.training.runtime import derive_seed, make_runtime, seed_everything
from dmc.training.task import Task

log = logging.getLogger(__name__)

Images = Union[Sequence[Union[str, Path, Image.Image]], np.ndarray]  # files, PIL images, uint8 (N, H, W, 3)


@dataclass
class Predictions:
    """The top k classes of each image, best first."""

    index: np.ndarray  # (N, k) positions in `classes`
    scores: np.ndarray  # (N, k) the scores the model ranks by (cosine similarity for most methods)
    classes: list[str]

    def names(self) -> list[list[str]]:
        return [[self.classes[i] for i in row] for row in self.index.tolist()]


class Predictor:
    """A trained model of a run: `classes` (the names of the classes seen after task `task`) and `predict`."""

    def __init__(self, method: Method, labels: list[int], classes: list[str], task: int, run_dir: Path) -> None:
        self.method, self.classes, self.task, self.run_dir = method, classes, task, run_dir
        with torch.no_grad():
            self.classifier = method.classifier(labels)  # tower outputs (B, D) -> (B, C), column i for classes[i]

    def features(self, images: Images, batch_size: int | None = None) -> torch.Tensor:
        """The image tower's outputs (N, D) float32 of the images: what `classifier` scores."""
        m = self.method
        dataset = _dataset(images, m.backbone.preprocess)
        return encode_dataset(m.model.visual, dataset, m.rt, batch_size or m.cfg.eval.batch_size, "predict")[0]

    def scores(self, images: Images, batch_size: int | None = None) -> torch.Tensor:
        """Scores (N, C) of every image against every class, as the run's evaluation computes them."""
        m = self.method
        dataset = _dataset(images, m.backbone.preprocess)
        bs = batch_size or m.cfg.eval.batch_size
        if m.frozen_image_encoder:
            feats, _ = encode_dataset(m.model.visual, dataset, m.rt, bs, "predict")
            batches = feature_scores(self.classifier, feats)
        else:
            batches = image_scores(m.model.visual, self.classifier, dataset, m.rt, bs, "predict")
        out = [s.cpu() for s in batches]
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def predict(self, images: Images, topk: int = 5, batch_size: int | None = None) -> Predictions:
        """The `topk` best classes of each image (file paths, PIL images or a uint8 (N, H, W, 3) array; one
        path or PIL image alone counts as a list of one)."""
        if topk < 1:
            raise UserError(f"bad value for topk: {topk}; must be >= 1")
        values, index = self.scores(images, batch_size).topk(min(topk, len(self.classes)), dim=1)
        return Predictions(index.numpy(), values.numpy(), self.classes)


def _dataset(images: Images, transform, allow_empty: bool = False) -> ImageDataset:
    """The images to score as a dataset; no images, an image of no pixels, or anything else that is not an
    image is a UserError in one line."""
    if isinstance(images, (str, Path, Image.Image)):
        images = [images]  # one image given as it is, not in a list
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise UserError(f"images as an array must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if 0 in images.shape[1:3]:
            raise UserError(f"images as an array must have pixels, got shape {images.shape}")
        items = images
    else:
        items = [str(x) if isinstance(x, (str, Path)) else x for x in images]
        odd = next((x for x in items if not isinstance(x, (str, Image.Image))), None)
        if odd is not None:
            raise UserError(f"an image must be a file path or a PIL image, got {type(odd).__name__}")
        empty = next((x for x in items if isinstance(x, Image.Image) and 0 in x.size), None)
        if empty is not None:
            raise UserError(f"an image has no pixels ({empty.size[0]} x {empty.size[1]})")
        check_readable([x for x in items if isinstance(x, str)], decode=True)
    if len(items) == 0 and not allow_empty:
        raise UserError("no images to predict: give at least one file, PIL image or array row")
    labels = np.zeros(len(items), dtype=np.int64)
    return ImageDataset(Samples(items, labels), labels, transform)


def load(run_dir: str | Path, task: int | None = None, device: str = "auto") -> Predictor:
    """The model of `run_dir` after task `task` (from 1; default: the last task of a finished run), on
    `device` (auto, cpu, cuda, cuda:N). Bad input (not a run, a task out of range or unfinished, no
    checkpoint of it, a changed config.yaml or plan.json) is a UserError in one line. A model folder of
    `dmc learn` gives its version `task` (default: the last one committed)."""
    run_dir, task = model_version(run_dir, task)
    rundir = RunDir(Path(run_dir))
    task = rundir.trained_task(task)  # also checks that the run's records agree
    plan = rundir.plan()
    cfg = config.load(rundir.path / CONFIG)
    config.ModelConfig(device=device).check()
    bench = Benchmark.from_plan(cfg.benchmark.name, plan)
    rt = make_runtime(device, cfg.model.precision, progress=False)
    method = seeded_method(cfg, seeded_backbone(cfg), bench, rt)
    for t in range(task):  # the structure of every task up to K, as a resumed run builds it
        seed_everything(derive_seed(cfg.seed, "task", t))
        method.begin_task(_structure(t, bench, method, cfg.seed))
    try:
        load_learned(method, rundir.load_checkpoint(task), rundir.checkpoint_path(task).name)
    except CheckpointError as exc:
        raise UserError(f"{rundir.path}: {exc}; restore it from a copy of the run, or use the model after "
                        "another task (--task K)") from None
    seen = sorted(c for t in bench.tasks[:task] for c in t)
    log.info("loaded %s after task %d of %d (%d classes)", rundir.path, task, len(bench.tasks), len(seen))
    return Predictor(method, seen, [bench.class_names[c] for c in seen], task, rundir.path)


def _structure(t: int, bench: Benchmark, method: Method, seed: int) -> Task:
    """Task t without images (the loop's `make_task` with none): what `begin_task` reads."""
    empty = _dataset(np.zeros((0, 1, 1, 3), np.uint8), method.backbone.preprocess, allow_empty=True)
    seen = sorted({c for task in bench.tasks[: t + 1] for c in task})
    gen = torch.Generator().manual_seed(derive_seed(seed, "generator", t))
    return Task(t, bench.tasks[t], seen, empty, empty, gen, names=[bench.class_names[c] for c in bench.tasks[t]])


def write_predictions(stream: IO[str], images: list[str], out: Predictions, task: int, fmt: str = "json") -> None:
    """`json`: one JSON object per line and image (`image`, `task`, `top`: classes with scores, best
    first); `csv`: a header, then one row per image and rank (`image,task,rank,class,score`)."""
    rows = zip(images, out.names(), out.scores.tolist())
    if fmt == "json":
        for image, names, scores in rows:
            top = [{"class": c, "score": round(s, 6)} for c, s in zip(names, scores)]
            stream.write(json.dumps({"image": image, "task": task, "top": top}) + "\n")
        return
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["image", "task", "rank", "class", "score"])
    for image, names, scores in rows:
        writer.writerows([image, task, rank, c, round(s, 6)] for rank, (c, s) in enumerate(zip(names, scores), 1))
