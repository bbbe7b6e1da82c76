"""The one class-incremental loop: for each task, the method's hooks train, then every seen class is tested."""
from __future__ import annotations

import dataclasses
import json
import logging
import platform
import subprocess
import time
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dmc import config, faults, metrics
from dmc.config import RunConfig
from dmc.data.benchmark import Benchmark, limit_per_class, make_benchmark, subset, val_rows, write_plan
from dmc.data.dataset import ImageDataset, select, subset_dataset
from dmc.engine import trackers
from dmc.engine.diagnostics import observers
from dmc.engine.evaluation import EvalCache, evaluate_task
from dmc.methods import METHODS, Method
from dmc.models.clip import Backbone, build_backbone
from dmc.report import plot_run
from dmc.errors import UserError
from dmc.files import write_text
from dmc.rundir import (CONFIG, PLAN, PLOT, SPLIT, VAL, CheckpointError, RunDir, RunWriter, check_resumable,
                        default_out, digest)
from dmc.training.budget import check_sample_ot
from dmc.training.evaluate import accuracies, task_counts
from dmc.training.runtime import Runtime, derive_seed, make_runtime, seed_everything
from dmc.training.task import Task

log = logging.getLogger(__name__)


def load_datasets(cfg: RunConfig, bench: Benchmark, backbone: Backbone, split_file: Path | None = None,
                  val_file: Path | None = None) -> dict[str, ImageDataset]:
    """Train (training transform), train_plain (eval transform) and test datasets with remapped labels,
    restricted to the benchmark's classes and to the per-class limits of smoke runs. Sources with a
    split of their own making (ImageNet-R) record it in `split_file`. With `benchmark.val_fraction`, a
    seeded share of each class's training images is held out (recorded in `val_file`) and never trained
    on; `eval.split=val` then tests on it in place of the test split ("test" is the evaluated set)."""
    classes = sorted({c for task in bench.tasks for c in task})
    raw = {split: bench.source.load(cfg.data, split) for split in ("train", "test")}
    if split_file is not None and hasattr(bench.source, "save_split"):
        bench.source.save_split(cfg.data, raw["train"], raw["test"], split_file)
    b = cfg.benchmark
    held = val_rows(raw["train"].targets, b.val_fraction, b.val_seed)
    if val_file is not None and bench.val:
        write_text(val_file, json.dumps({**bench.val, "rows": held.tolist()}))
    parts = {"train": (raw["train"], np.setdiff1d(np.arange(len(raw["train"].targets)), held), b.train_per_class),
             "val": (raw["train"], held, b.test_per_class),
             "test": (raw["test"], np.arange(len(raw["test"].targets)), b.test_per_class)}
    out = {}
    for split, (samples, rows, limit) in parts.items():
        labels = bench.remap(samples.targets[rows])
        keep = np.nonzero(np.isin(labels, classes))[0]
        keep = keep[limit_per_class(labels[keep], limit)]
        samples, labels = subset(samples, rows[keep]), labels[keep]
        if split == "train":
            out["train"] = ImageDataset(samples, labels, backbone.preprocess_train)
            out["train_plain"] = ImageDataset(samples, labels, backbone.preprocess)
        else:
            out[split] = ImageDataset(samples, labels, backbone.preprocess)
    evaluated = out.pop("val")
    if cfg.eval.split == "val":
        out["test"] = evaluated
    return out


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("dmc", "torch", "torchvision", "open_clip_torch", "POT"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    out["dmc_commit"] = source_commit()
    return out


def source_commit() -> str:
    """The git commit of the code that ran (with `-dirty` when the package's files differ from it), so a
    published row names the code that produced it; "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "") if head else "unknown"


def prepare(cfg: RunConfig | None, out: Path | None, resume: Path | None, rt: Runtime | None = None,
            progress: bool = True, bench: Benchmark | None = None):
    """Resolve run dir, benchmark, backbone, data and method (no training). The run directory is taken
    before any backbone or image is loaded; a new run's config (with what the backbone is), plan and
    digests are written once the backbone is built, before any image loads. On `resume` without a `cfg`,
    the run's saved config is read (once). `bench`: the run's benchmark when the caller built it already
    (the command line checks it before torch loads), else it is built here."""
    if resume is not None and cfg is None:
        check_resumable(RunDir(resume))
        cfg = config.load(Path(resume) / CONFIG)
    rt = rt or make_runtime(cfg.model.device, cfg.model.precision, progress, num_workers=cfg.data.num_workers)
    bench = run_benchmark(cfg, bench)
    rundir = open_rundir(cfg, bench, out, resume, rt)
    with ExitStack() as on_error:
        on_error.enter_context(Session(rundir, rt))
        backbone = seeded_backbone(cfg)
        fresh = isinstance(rundir, RunWriter) and resume is None
        if fresh:
            record_new_run(rundir, cfg, bench, backbone)
        data = load_datasets(cfg, bench, backbone, rundir.path / SPLIT if fresh else None,
                             rundir.path / VAL if fresh else None)
        method = seeded_method(cfg, backbone, bench, rt)
        if method.needs().calibration:  # what its calibration holds at once must fit
            check_sample_ot(cfg, bench.tasks, data["train"].labels, rt.device)
        on_error.pop_all()  # built: the caller owns the run directory now
    return cfg, rt, bench, data, method, rundir


def run_benchmark(cfg: RunConfig, bench: Benchmark | None = None) -> Benchmark:
    """The run's benchmark (class order, task split): `bench` if given, else built from `cfg`; a method
    that learns every class at once (`single_task`, the `joint` bound) gets them as one task."""
    bench = bench if bench is not None else make_benchmark(cfg, cfg.seed)
    if METHODS.get(cfg.method).single_task:
        return dataclasses.replace(bench, tasks=[list(range(bench.n_classes))])
    return bench


class Session:
    """The one close path of a run: however it ends, the data loaders stop, and the run directory records
    why it stopped (if it failed) and is let go (`RunWriter.close`)."""

    def __init__(self, rundir: RunWriter | RunDir | None, rt: Runtime) -> None:
        self.rundir, self.rt = rundir, rt

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.rt.close()  # data-loader workers end with the run
        if isinstance(self.rundir, RunWriter):
            self.rundir.close(exc)  # run.log keeps why the run stopped (a traceback for an internal error)


def seeded_backbone(cfg: RunConfig) -> Backbone:
    """The run's backbone; what it does not load (a random `tiny` tower) comes from the run's seed."""
    seed_everything(derive_seed(cfg.seed, "backbone"))
    return build_backbone(cfg.model.backbone, cfg.model.pretrained)


def seeded_method(cfg: RunConfig, backbone: Backbone, bench: Benchmark, rt: Runtime) -> Method:
    """The run's method before any task, its random initialisation drawn from the run's seed."""
    seed_everything(derive_seed(cfg.seed, "method"))
    rt.tf32_towers(backbone.model)
    return METHODS.get(cfg.method)(cfg, backbone, bench, rt)


def open_rundir(cfg: RunConfig, bench: Benchmark, out: Path | None, resume: Path | None,
                rt: Runtime) -> RunWriter | RunDir | None:
    """The run directory. Rank 0 owns it (a RunWriter): on resume, checked against its records; for a new
    run, taken (its records are written by `record_new_run`). Other ranks read it on resume (a RunDir) and
    have none for a new run."""
    if resume is not None:
        if not rt.is_main:
            RunDir(resume).verify(digest(bench.plan()))
            return RunDir(resume)
        with ExitStack() as on_error:
            writer = on_error.enter_context(RunWriter.resume(resume))
            writer.run.verify(digest(bench.plan()))
            writer.adopt()
            on_error.pop_all()
        return writer
    if not rt.is_main:
        return None
    return RunWriter.create(out or default_out(cfg.benchmark.name, cfg.method))


def run_provenance(cfg: RunConfig, bench: Benchmark, backbone: Backbone) -> dict | None:
    """What a run's config.yaml records beside its values: the data source's description and what the
    backbone's weights are (the toy CLIP: its recipe and sha256); None when there is nothing to record."""
    describe = getattr(bench.source, "provenance", None)
    provenance = dict(describe(cfg.data)) if describe else {}
    if backbone.provenance:
        provenance["backbone"] = backbone.provenance
    return provenance or None


def record_new_run(writer: RunWriter, cfg: RunConfig, bench: Benchmark, backbone: Backbone) -> None:
    """A new run's records, each written once: `config.yaml` with what the data and the weights are (the
    glyph world's fonts, the toy CLIP's recipe and sha256), `plan.json`, and their digests with the
    thread count."""
    config.save(cfg, writer.path / CONFIG, run_provenance(cfg, bench, backbone))
    write_plan(bench, writer.path / PLAN)
    writer.seal(digest(config.saved_tree(writer.path / CONFIG)), digest(bench.plan()), torch.get_num_threads())


def make_task(t: int, bench: Benchmark, data: dict[str, ImageDataset], seed: int,
              exemplars: np.ndarray | None = None) -> Task:
    """Task t; its training images are joined by the training-set rows `exemplars` (old classes' exemplars
    of a method that uses them)."""
    classes = bench.tasks[t]
    seen = sorted({c for task in bench.tasks[: t + 1] for c in task})
    gen = torch.Generator().manual_seed(derive_seed(seed, "generator", t))
    rows = np.nonzero(np.isin(data["train"].labels, classes))[0]
    if exemplars is not None and len(exemplars):
        rows = np.concatenate([rows, exemplars])
    return Task(t, classes, seen, subset_dataset(data["train"], rows), subset_dataset(data["train_plain"], rows),
                gen, names=[bench.class_names[c] for c in classes],
                reference=lambda cls: select(data["train_plain"], cls), train_index=rows)


def run(cfg: RunConfig | None, out: Path | None = None, resume: Path | None = None,
        rt: Runtime | None = None, progress: bool = True, bench: Benchmark | None = None) -> Path | None:
    """Run (or continue) a class-incremental experiment; returns the run directory (None on ranks > 0).
    `bench`: the benchmark of `cfg` when the caller built it already (`catalog.check` returns it)."""
    start_time = time.time()
    cfg, rt, bench, data, method, rundir = prepare(cfg, out, resume, rt, progress, bench)
    with Session(rundir, rt):
        run_tasks(cfg, rt, bench, data, method, rundir, resume is not None, start_time)
    return rundir.path if rt.is_main else None


def run_tasks(cfg: RunConfig, rt: Runtime, bench: Benchmark, data: dict, method: Method,
              rundir: RunWriter | RunDir | None, resume: bool, start_time: float) -> None:
    T = len(bench.tasks)
    R = np.full((T, T), np.nan)
    start, records, method = continue_from(rundir, rt, cfg, bench, data, method) if resume else (0, [], method)
    writer = rundir if isinstance(rundir, RunWriter) else None  # every rank may read the run dir; rank 0 writes
    for rec in records:
        R[rec["task"] - 1, : rec["task"]] = rec["acc_row"]
    elapsed_before = sum(rec.get("time_s", {}).get("total", 0.0) for rec in records)
    method.observers = observers(cfg, data["test"])  # diagnostics asked for by the config
    cache = EvalCache()
    trackers.begin(writer.path if writer is not None else None, cfg)  # the trackers of --log, if asked for
    bar = tqdm(total=T, initial=start, desc=f"{cfg.method} on {bench.name}", disable=not rt.bars)
    for t in range(start, T):
        seed_everything(derive_seed(cfg.seed, "task", t))
        task = make_task(t, bench, data, cfg.seed, method.exemplar_rows())
        method.begin_task(task)
        try:
            record = run_task(method, task, bench, data, R, cache)
        except UserError as exc:
            raise UserError(f"{exc}{_advice(writer, t)}") from None
        record["threads"] = torch.get_num_threads()
        if writer is not None:
            try:
                writer.finish_task(record, method.learned.state_dict(), keep=cfg.checkpoint.keep)
            except UserError as exc:
                raise UserError(f"{exc}{_advice(writer, t)}") from None
            trackers.task_done(record, R[: t + 1, : t + 1])
        records.append(record)
        bar.update(1)
        bar.set_postfix(A=f"{record['A_t']:.1f}")
    bar.close()
    if writer is not None:
        try:
            finish(writer, cfg, bench, R, records[-1], time.time() - start_time + elapsed_before)
        except UserError as exc:
            raise UserError(f"{exc}{_advice(writer, T)}") from None


def continue_from(rundir: RunWriter | RunDir, rt: Runtime, cfg: RunConfig, bench: Benchmark, data: dict,
                  method: Method) -> tuple[int, list[dict], Method]:
    """A resumed run's method as it was after its last good task: every earlier task begun in order (as
    the run began them), then that task's checkpoint loaded. A checkpoint that does not fit the model
    (another run's, a tensor missing or reshaped) is reported and the run falls back to the task before,
    with the method built afresh. Returns (tasks done, their metrics lines, the method)."""
    below = None
    while True:
        start, state, records = resume_point(rundir, rt, below)
        try:
            for t in range(start):
                seed_everything(derive_seed(cfg.seed, "task", t))
                method.begin_task(make_task(t, bench, data, cfg.seed, method.exemplar_rows()))
            if start:
                load_learned(method, state, rundir_reader(rundir).checkpoint_path(start).name)
            return start, records, method
        except CheckpointError as exc:
            log.warning("%s: %s; falling back to the task before", rundir.path, exc)
            below = start
            method = seeded_method(cfg, seeded_backbone(cfg), bench, rt)


def load_learned(method: Method, state: dict, name: str) -> None:
    """Load a checkpoint into the method's trained parts; one that does not fit (other shapes, a tensor
    missing or extra) is a CheckpointError in one line (the method may be half loaded: build it again)."""
    try:
        method.learned.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__)[:200]
        raise CheckpointError(f"checkpoint {name} does not fit the model its run's config builds ({reason})") from None


def rundir_reader(rundir: RunWriter | RunDir) -> RunDir:
    return rundir.run if isinstance(rundir, RunWriter) else rundir


def resume_point(rundir: RunWriter | RunDir, rt: Runtime, below: int | None = None
                 ) -> tuple[int, dict | None, list[dict]]:
    """Tasks already done, the checkpoint to continue from, and their metrics lines; rank 0 then drops
    whatever came after (what could not be used is reported in one line)."""
    reader = rundir_reader(rundir)
    start, state, notes, records = reader.resume_point(below)
    if notes:
        log.warning("%s: %s; continuing after task %d, the last good one", reader.path, "; ".join(notes), start)
    rt.barrier()  # every rank has read the run directory before rank 0 trims it
    if isinstance(rundir, RunWriter):
        rundir.keep_tasks(start)
    rt.barrier()
    log.info("resuming %s after %d finished tasks", reader.path, start)
    return start, state, records


def _advice(writer: RunWriter | None, t: int) -> str:
    """What an error during task t means for the run directory (so that its advice can be followed)."""
    if writer is None or not writer.owner.holds():
        return ""  # `.lock` deleted or replaced: another process may be using the folder, so no advice to reuse it
    if t == 0:
        return f" ({writer.path} finished no task: the same --out can be used again)"
    return (f" (tasks 1-{t} are kept in {writer.path}: --resume continues with the same settings; "
            "other settings need another --out)")


def run_task(method: Method, task: Task, bench: Benchmark, data: dict[str, ImageDataset], R: np.ndarray,
             cache: EvalCache) -> dict:
    t = task.index
    t0 = time.time()
    info = method.train_task(task) or {}
    t1 = time.time()
    info.update(method.observe("trained", task))  # diagnostics of the trained task (timed as evaluation)
    faults.point(f"eval:task {t + 1}")
    preds, labels = evaluate_task(method, task, data["test"], method.cfg.eval.batch_size, cache)
    counts_t = method.rt.all_reduce_sum(task_counts(preds, labels, bench.tasks[: t + 1]))
    accs, counts = accuracies(counts_t)
    R[t, : t + 1] = accs
    a_t = metrics.incremental_accuracies(R[: t + 1, : t + 1], counts)[-1]
    record = {"task": t + 1, "classes_seen": len(task.seen), "A_t": a_t, "acc_row": accs, "counts": counts,
              **metrics.old_new(R[: t + 1, : t + 1], counts, t), "stored_images": method.stored_images()}
    stage_times = info.pop("time_s", {})
    record.update({k: v for k, v in info.items()})
    record["time_s"] = {**stage_times, "train": t1 - t0, "eval": time.time() - t1, "total": time.time() - t0}
    if method.rt.is_main:
        old_new = "" if record["old"] is None else f" (old {record['old']:.2f}, new {record['new']:.2f})"
        log.info("task %d/%d: A_t %.2f%s, %.1f s", t + 1, len(bench.tasks), a_t, old_new, record["time_s"]["total"])
    return record


def finish(rundir: RunWriter, cfg: RunConfig, bench: Benchmark, R: np.ndarray, last: dict, wall: float) -> None:
    """The summary of a finished run (`last`: the last task's metrics line) and its plot."""
    counts = last["counts"]
    summ = metrics.summary(R, counts)
    summary = {"method": cfg.method, "benchmark": cfg.benchmark.name, "backbone": cfg.model.backbone,
               "seed": cfg.seed, "eval_split": cfg.eval.split, "tasks": len(bench.tasks), **summ,
               "acc_matrix": metrics.nan_to_none(R),
               "counts": counts, "stored_images": last.get("stored_images", 0), "wall_time_s": wall,
               "threads": last.get("threads"), "versions": versions()}
    plot_run(summary, rundir.path / PLOT)
    faults.point("finish")
    rundir.write_summary(summary)
    trackers.run_done(summary, rundir.path / PLOT)
    log.info("finished: Avg %.2f, Last %.2f, forgetting %.2f (%.0f s)", summary["avg"], summary["last"],
             summary["forgetting"], wall)
