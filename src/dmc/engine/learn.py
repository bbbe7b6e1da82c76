"""Teaching a model in use new classes, one folder at a time (`dmc learn MODEL_DIR FOLDER`).

Each call adds the classes of FOLDER to the model as one new task, with the method's recipe, through the
engine `dmc run` uses: version K of the model is a run directory of tasks 1..K (`dmc.engine.model_dir`),
begun by continuing version K-1 exactly as `--resume` continues a run after its task K-1 (every earlier
task begun in order, checkpoint K-1 loaded), then trained on task K and evaluated on the test images of
every class learned so far. The same lock, digests and kill points hold: a call killed at any point
leaves the earlier versions as they were, and the same call run again finishes version K to the result
an uninterrupted call gives.

FOLDER is `<class>/<images>` or `train/<class>/<images>` with an optional `test/<class>/<images>`. Its
images are copied into the model folder (`images/task_KK/`), because later calls test every learned class
and methods that store images replay them, while the folders given earlier may be gone. New classes take
labels in the order of their folder names; a task's images are read in the order of their file names
(then class), so that a folder written by `dmc world --export` gives the run's own order.

    from dmc.engine.learn import Learner
    learner = Learner("models/shop", method="dmc-ot-mem")   # settings are taken by the first call only
    record = learner.learn("arrivals/2024-05")              # task K's metrics line (A_t, old, new, ...)
    dmc.load("models/shop").predict(["x.jpg"])              # the last version; task=K for an earlier one
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dmc import config, faults
from dmc.config import RunConfig
from dmc.data.benchmark import Benchmark, write_plan
from dmc.data.dataset import ImageDataset
from dmc.data.sources.base import Samples
from dmc.data.sources.files import check_readable, list_images, list_subfolders
from dmc.data.sources.imagefolder import underscore_name
from dmc.engine.loop import Session, run_provenance, run_tasks, seeded_backbone, seeded_method
from dmc.engine.model_dir import (IMAGES, MODEL_MARK, POINTER, VERSIONS, committed, is_model, task_folder,
                                  version_dir)
from dmc.errors import DataError, UserError
from dmc.files import write_text
from dmc.methods import METHODS
from dmc.rundir import CONFIG, METRICS, PLAN, SUMMARY, RunDir, RunWriter, digest
from dmc.rundir.own import Ownership
from dmc.training.budget import check_sample_ot
from dmc.training.runtime import Runtime, make_runtime

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"  # in images/task_KK/: every copied file's path, size and sha256
DEFAULT_METHOD = "dmc-ot-mem"


def recipe_of(backbone: str | None) -> str:
    """The preset a new model takes its recipe and prompt template from: the glyph world's for the small
    CLIPs (toy, the default, and tiny), the image-folder one (the paper's ViT-B/16 recipe) for any other."""
    return "glyphs" if backbone in (None, "toy", "tiny") else "imagefolder"


def new_config(method: str | None, backbone: str | None, sets: list[str] | None) -> RunConfig:
    """The config a new model keeps for all its calls; what `dmc learn` cannot honour is refused."""
    overrides = {"model.backbone": backbone} if backbone else {}
    cfg = config.resolve(recipe_of(backbone), method or DEFAULT_METHOD, overrides, sets)
    if METHODS.get(cfg.method).single_task:
        raise UserError(f"method {cfg.method} learns all classes at once; dmc learn needs a class-incremental "
                        "method (dmc list)")
    if cfg.benchmark.val_fraction or cfg.eval.split == "val":
        raise UserError("dmc learn tests on the test/ images of each folder: benchmark.val_fraction and "
                        "eval.split=val are for benchmark runs (dmc run)")
    return cfg


# ---------------------------------------------------------------- the folder of new classes
@dataclass
class NewClasses:
    """The classes of a folder: class folder names (sorted), their display names, and each split's images."""

    folders: list[str]
    names: list[str]
    images: dict[str, dict[str, list[str]]]  # split -> class folder -> image paths (sorted)
    roots: dict[str, Path]  # split -> the folder holding its class folders


def read_folder(folder: str | Path, known: list[str] = ()) -> NewClasses:
    """The classes of FOLDER (`<class>/...` or `train/<class>/...` with an optional `test/<class>/...`),
    every image checked to decode. Refused in one line: no such folder, no class folders, a class folder
    without images, an unreadable image, a test class with no training images, two class folders that
    read as one class name, or a class the model knows already."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"no such folder: {root}")
    split_root = {"train": root / "train", "test": root / "test"} if (root / "train").is_dir() else {"train": root}
    found = {s: list_subfolders(p) for s, p in split_root.items() if p.is_dir()}
    if not found["train"]:
        raise DataError(f"{split_root['train']} holds no class folders; expected {root}/<class>/<images> or "
                        f"{root}/train/<class>/<images> (with an optional test/<class>/)")
    extra = sorted(set(found.get("test", [])) - set(found["train"]))
    if extra:
        raise DataError(f"{root}/test/{extra[0]} has no training images (no {root}/train/{extra[0]}/)")
    names = [underscore_name(f) for f in found["train"]]
    _check_names(found["train"], names, known)
    images = {s: {f: list_images(split_root[s] / f) for f in folders} for s, folders in found.items()}
    empty = [f"{s}/{f}" if s in found and len(split_root) > 1 else f for s in images
             for f, paths in images[s].items() if not paths]
    if empty:
        raise DataError(f"class folder {empty[0]} in {root} holds no images")
    check_readable([p for s in images.values() for paths in s.values() for p in paths], decode=True)
    return NewClasses(found["train"], names, images, {s: split_root[s] for s in found})


def _check_names(folders: list[str], names: list[str], known: list[str]) -> None:
    """Class names are compared as the prompt sees them (separators and case aside)."""
    seen: dict[str, str] = {}
    for folder, name in zip(folders, names):
        key = name.casefold()
        if key in seen:
            raise DataError(f"class folders {seen[key]!r} and {folder!r} both read as class {name!r}; rename one")
        seen[key] = folder
    old = {n.casefold(): n for n in known}
    clash = [(f, old[n.casefold()]) for f, n in zip(folders, names) if n.casefold() in old]
    if clash:
        raise UserError(f"class {clash[0][1]!r} (folder {clash[0][0]!r}) is known to the model already; each "
                        f"call teaches new classes only: remove that folder ({len(clash)} known in all)")


# ---------------------------------------------------------------- the model folder
def open_model(model_dir: Path, given: list[str]) -> None:
    """Check MODEL_DIR before anything is written: new (or empty), or a model `dmc learn` created (which
    keeps its config, so the training flags in `given` are refused)."""
    if model_dir.exists() and not model_dir.is_dir():
        raise UserError(f"{model_dir} is a file, not a model folder")
    if is_model(model_dir):
        if given:
            raise UserError(f"{model_dir} keeps the config of its first call, so {', '.join(given)} cannot be "
                            "used; to learn with other settings, start a new model folder")
        return
    if (model_dir / CONFIG).is_file() or (model_dir / PLAN).is_file():
        raise UserError(f"{model_dir} is a benchmark run (dmc run), whose class order was fixed when it "
                        f"started: it cannot learn new classes; start a model with dmc learn NEW_DIR FOLDER "
                        f"(dmc predict {model_dir} still uses the run's model)")
    held = sorted(e.name for e in model_dir.iterdir()) if model_dir.is_dir() else []
    if held:
        raise UserError(f"{model_dir} holds files that are not a dmc model (first: {held[0]}); choose a new or "
                        "empty folder (dmc never removes files it did not write)")


def known_classes(model_dir: Path) -> list[str]:
    """The class names of the model's last committed version (none for a new model)."""
    done = committed(model_dir) if is_model(model_dir) else 0
    return [n for task in RunDir(version_dir(model_dir, done)).plan()["tasks"] for n in task] if done else []


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(new: NewClasses) -> dict:
    """split -> class folder -> [path below the class folder, sha256] of every image: what a call copies,
    so that the same call run again is recognised."""
    return {split: {folder: [[_relative(new, split, folder, p), _sha256(Path(p))] for p in paths]
                    for folder, paths in classes.items()} for split, classes in new.images.items()}


def _relative(new: NewClasses, split: str, folder: str, path: str) -> str:
    """`<root>/<folder>/a/b.png` -> `a/b.png` (the image's path below its class folder)."""
    return Path(path).relative_to(new.roots[split] / folder).as_posix()


def store_images(model_dir: Path, k: int, new: NewClasses, listed: dict) -> None:
    """Copy the call's images into `images/task_KK/` (written beside it, then renamed in one step); a copy
    of another call's folder left by a killed call is replaced."""
    final = model_dir / IMAGES / task_folder(k)
    if final.is_dir():
        try:
            same = json.loads((final / MANIFEST).read_text(encoding="utf-8")) == listed
        except (OSError, ValueError):
            same = False
        if same:
            return
        log.info("%s holds the images of an unfinished call with another folder; replacing them", final)
        _discard(model_dir, k)
    staging = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for split, classes in new.images.items():
            for folder, paths in classes.items():
                for p in paths:
                    dest = staging / split / folder / _relative(new, split, folder, p)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(p, dest)
        write_text(staging / MANIFEST, json.dumps(listed))
        faults.point(f"write:{IMAGES}/{final.name}")
        os.replace(staging, final)
    except OSError as exc:
        raise UserError(f"cannot copy the images into {final}: {exc.strerror or exc}") from None


def _discard(model_dir: Path, k: int) -> None:
    """Remove what an unfinished call K wrote (its images and its version: never committed)."""
    for folder in (model_dir / IMAGES / task_folder(k), version_dir(model_dir, k)):
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- the data of every call so far
def stored_task(model_dir: Path, k: int) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """Class folders of call k (sorted) and each split's (path, position of its class) pairs, in the order
    of file names, then class."""
    root = model_dir / IMAGES / task_folder(k)
    folders = list_subfolders(root / "train")
    out: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for split in out:
        keyed = [(Path(p).name, i, p) for i, f in enumerate(folders) if (root / split / f).is_dir()
                 for p in list_images(root / split / f)]
        out[split] = [(p, i) for _, i, p in sorted(keyed)]
    return folders, out


def learned_datasets(model_dir: Path, tasks: int, backbone) -> dict[str, ImageDataset]:
    """Train (training transform), train_plain and test datasets of calls 1..tasks, labelled by the
    model's class order (call by call, each call's classes by folder name). Rows are appended call by
    call, so the rows of earlier calls (a method's stored exemplars) keep their numbers."""
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    offset = 0
    for k in range(1, tasks + 1):
        folders, split_rows = stored_task(model_dir, k)
        for split in rows:
            rows[split] += [(p, offset + i) for p, i in split_rows[split]]
        offset += len(folders)

    in_memory = all(hasattr(t, "batch") for t in (backbone.preprocess, backbone.preprocess_train))
    items = {split: _items([p for p, _ in rows[split]], in_memory) for split in rows}

    def dataset(split: str, transform) -> ImageDataset:
        labels = np.asarray([y for _, y in rows[split]], dtype=np.int64)  # (N,)
        return ImageDataset(Samples(items[split], labels), labels, transform)

    return {"train": dataset("train", backbone.preprocess_train),
            "train_plain": dataset("train", backbone.preprocess), "test": dataset("test", backbone.preprocess)}


IN_MEMORY_BYTES = 2 << 30  # stored images up to this size are read into memory for the small CLIPs


def _items(paths: list[str], in_memory: bool) -> list[str] | np.ndarray:
    """The images of a dataset: for a backbone whose transforms take whole uint8 batches (the small CLIPs
    of the glyph world), decoded once into one (N, H, W, 3) array when they all share a size, which is
    how the glyph world's run holds them (the same batches, the same random streams: see docs/learn.md);
    otherwise their paths, decoded as they are used."""
    if not in_memory or not paths:
        return paths
    arrays = []
    for path in paths:
        with Image.open(path) as im:
            arrays.append(np.asarray(im.convert("RGB"), dtype=np.uint8))  # (H, W, 3)
        if arrays[-1].shape != arrays[0].shape or len(arrays) * arrays[0].nbytes > IN_MEMORY_BYTES:
            return paths
    return np.stack(arrays)  # (N, H, W, 3)


def model_plan(model_dir: Path, tasks: int) -> dict:
    """The plan of version `tasks`: each call's class names; native ids are the model's own labels."""
    names = [[underscore_name(f) for f in stored_task(model_dir, k)[0]] for k in range(1, tasks + 1)]
    n = sum(map(len, names))
    return {"class_order": list(range(n)), "tasks": names}


# ---------------------------------------------------------------- one call
class Learner:
    """A model folder that learns a folder of new classes per call (`learn`). `method`, `backbone` and
    `sets` are taken by the first call (which creates the folder); a later call uses the saved config."""

    def __init__(self, model_dir: str | Path, method: str | None = None, backbone: str | None = None,
                 sets: list[str] | None = None, rt: Runtime | None = None, progress: bool = False) -> None:
        self.path, self.rt, self.progress = Path(model_dir), rt, progress
        given = [f for f, v in (("--method", method), ("--backbone", backbone), ("--set", sets)) if v]
        open_model(self.path, given)
        self._settings = (method, backbone, list(sets or []))

    @property
    def tasks(self) -> int:
        """The versions committed so far."""
        return committed(self.path) if is_model(self.path) else 0

    def config(self) -> RunConfig:
        """The model's config: saved by its first call (version 1), else built from the settings given."""
        first = version_dir(self.path, 1) / CONFIG
        if is_model(self.path) and first.is_file():
            return config.load(first)
        return new_config(*self._settings)

    def learn(self, folder: str | Path) -> dict:
        """Teach the classes of `folder` as task K = tasks + 1; returns task K's metrics line. Everything is
        checked before anything is written; the call is committed (`model.json`) only once version K is
        a finished run directory."""
        start = time.time()
        cfg = self.config()
        new = read_folder(folder, known_classes(self.path))
        listed = manifest(new)
        self.path.mkdir(parents=True, exist_ok=True)
        if not is_model(self.path):
            write_text(self.path / MODEL_MARK, "a model dmc learn writes: dmc may remove the files it wrote here\n")
        owner = Ownership(self.path)
        owner.acquire()
        try:
            k = committed(self.path) + 1
            store_images(self.path, k, new, listed)
            bench = Benchmark.from_plan(cfg.benchmark.name, model_plan(self.path, k))
            self._train_version(cfg, bench, k, start)
            write_text(self.path / POINTER, json.dumps({"tasks": k}))
        finally:
            owner.close()
        record = RunDir(version_dir(self.path, k)).records()[-1]
        log.info("%s: learned %d classes as task %d (%d classes in all)", self.path, len(new.folders), k,
                 record["classes_seen"])
        return record

    def _train_version(self, cfg: RunConfig, bench: Benchmark, k: int, start: float) -> None:
        """Version K as a run directory: begun from version K-1 (or found begun by a killed call), then
        continued by the loop of `dmc run --resume` to a finished run."""
        final = version_dir(self.path, k)
        if (final / SUMMARY).is_file():
            return  # finished by a call killed before its commit
        rt = self.rt or make_runtime(cfg.model.device, cfg.model.precision, self.progress,
                                     num_workers=cfg.data.num_workers)
        backbone = seeded_backbone(cfg)
        writer = pending_version(self.path, k, cfg, bench, backbone)
        with Session(writer, rt):
            data = learned_datasets(self.path, k, backbone)
            method = seeded_method(cfg, backbone, bench, rt)
            if method.needs().calibration:  # what its calibration holds at once must fit
                check_sample_ot(cfg, bench.tasks, data["train"].labels, rt.device)
            run_tasks(cfg, rt, bench, data, method, writer, True, start)


def pending_version(model_dir: Path, k: int, cfg: RunConfig, bench: Benchmark, backbone) -> RunWriter:
    """Version K, taken to be continued: begun now, or as a killed call left it. A version a killed call
    left in a state `--resume` refuses (its records cut by hand) was never committed: it is begun again."""
    final = version_dir(model_dir, k)
    if final.is_dir():
        try:
            writer = RunWriter.resume(final)
            with ExitStack() as on_error:
                on_error.enter_context(writer)
                writer.run.verify(digest(bench.plan()))
                on_error.pop_all()
            return writer
        except UserError as exc:
            log.warning("%s: %s; beginning version %d again", final, exc, k)
            shutil.rmtree(final)
    begin_version(model_dir, k, cfg, bench, backbone)
    return RunWriter.resume(final)


def begin_version(model_dir: Path, k: int, cfg: RunConfig, bench: Benchmark, backbone) -> None:
    """Write version K as a run directory that has done tasks 1..K-1: config (version 1's), plan (K
    tasks), digests, metrics lines and checkpoint K-1 of version K-1. Written under a temporary name and
    renamed in one step, so that a version folder is always a run that `--resume` continues."""
    final = version_dir(model_dir, k)
    staging = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    with RunWriter.create(staging) as writer:
        if k == 1:
            config.save(cfg, staging / CONFIG, run_provenance(cfg, bench, backbone))
        else:
            shutil.copyfile(version_dir(model_dir, 1) / CONFIG, staging / CONFIG)
        write_plan(bench, staging / PLAN)
        import torch

        writer.seal(digest(config.saved_tree(staging / CONFIG)), digest(bench.plan()), torch.get_num_threads())
        if k > 1:
            before = RunDir(version_dir(model_dir, k - 1))
            _link(before.checkpoint_path(k - 1), writer.run.checkpoint_path(k - 1))
            shutil.copyfile(before.path / METRICS, staging / METRICS)
    faults.point(f"write:{VERSIONS}/{final.name}")
    os.replace(staging, final)


def _link(source: Path, dest: Path) -> None:
    """A checkpoint shared by two versions: a hard link where the file system has them (checkpoints are
    never changed in place: each is written beside and renamed), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


