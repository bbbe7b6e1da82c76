"""A benchmark = source (images + class names + template) + class order + task split.

Labels inside the engine are positions in the class order ("remapped labels", as in PyCIL): task k holds the
contiguous label range of its classes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dmc import yamlio
from dmc.config import RunConfig
from dmc.data.sources.base import SOURCES, Samples, Source
from dmc.errors import UserError
from dmc.files import write_text


def pycil_order(n_classes: int, seed: int) -> list[int]:
    """PyCIL / PROOF / mammoth order: `np.random.seed(seed); np.random.permutation(n)`."""
    rng_state = np.random.get_state()
    np.random.seed(seed)
    order = np.random.permutation(n_classes).tolist()
    np.random.set_state(rng_state)  # do not disturb the caller's global stream
    return order


def read_order(path: str, n_classes: int) -> list[int]:
    """An explicit class order from a YAML/JSON list (or a mapping with key `class_order`)."""
    tree = yamlio.read(path, f"class order file {path}")
    order = tree.get("class_order") if isinstance(tree, dict) else tree
    want = f"class order file {path} must list each class id 0..{n_classes - 1} exactly once"
    if not isinstance(order, list):
        raise UserError(f"{want}; it holds no list")
    odd = [c for c in order if not isinstance(c, int) or isinstance(c, bool)]
    if odd:
        raise UserError(f"{want}; {odd[0]!r} is not an integer")
    if sorted(order) != list(range(n_classes)):
        raise UserError(want)
    return list(order)


def split_tasks(n_classes: int, base: int, increment: int) -> list[list[int]]:
    """Task k -> remapped labels; B{base}-Inc{increment}, base 0 meaning base = increment (signs are
    checked by BenchmarkConfig; whether the classes suffice is only known with the source)."""
    first = base or increment
    if first > n_classes:
        raise UserError(f"bad split B{base}-Inc{increment}: the first task needs {first} of {n_classes} classes")
    tasks = [list(range(first))]
    for start in range(first, n_classes, increment):
        tasks.append(list(range(start, min(start + increment, n_classes))))
    return tasks


def val_rows(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Training-set rows held out as the validation split: round(fraction * n_c) of each class's n_c rows
    (at least 1 and at most n_c - 1 when fraction > 0), drawn by a permutation seeded by (seed, class id).
    A class's held-out rows depend only on its own rows, the fraction and the seed: not on the run seed,
    the class order or which other classes are loaded. Returns sorted row indices (int64)."""
    targets = np.asarray(targets, dtype=np.int64)
    if fraction <= 0:
        return np.empty(0, dtype=np.int64)
    held = []
    for c in np.unique(targets):
        rows = np.nonzero(targets == c)[0]
        k = min(max(int(round(fraction * len(rows))), 1), len(rows) - 1)
        perm = np.random.default_rng([int(seed), int(c)]).permutation(len(rows))
        held.append(rows[perm[:k]])
    return np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)


@dataclass
class Benchmark:
    name: str
    source: Source
    class_names: list[str]  # by remapped label
    class_order: list[int]  # native id of each remapped label
    tasks: list[list[int]]  # remapped labels of each task
    val: dict | None = None  # the validation split ({"fraction", "seed"}), None when there is none

    @property
    def template(self) -> str:
        return self.source.template

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def remap(self, native: np.ndarray) -> np.ndarray:
        lut = np.empty(len(self.class_order), dtype=np.int64)
        lut[np.asarray(self.class_order)] = np.arange(len(self.class_order))
        return lut[np.asarray(native, dtype=np.int64)]

    def plan(self) -> dict:
        plan = {"class_order": self.class_order, "tasks": [[self.class_names[c] for c in task] for task in self.tasks]}
        return {**plan, "val": self.val} if self.val else plan

    @classmethod
    def from_plan(cls, name: str, plan: dict) -> Benchmark:
        """The benchmark a run recorded in its `plan.json` (class order, each task's class names), without
        the dataset: what a trained model needs to name its classes. Only the planned classes have names."""
        import dmc.data.sources  # noqa: F401  (registers the sources)

        names = [n for task in plan["tasks"] for n in task]
        ends = np.cumsum([len(task) for task in plan["tasks"]])
        tasks = [list(range(end - len(task), end)) for task, end in zip(plan["tasks"], ends.tolist())]
        return cls(name, SOURCES.get(name), names, list(plan["class_order"]), tasks, plan.get("val"))


def make_benchmark(cfg: RunConfig, seed: int, single_task: bool = False) -> Benchmark:
    """Build the benchmark of `cfg.benchmark` / `cfg.data` without loading any image."""
    import dmc.data.sources  # noqa: F401  (registers the sources)

    source = SOURCES.get(cfg.benchmark.name)
    native_names = source.class_names(cfg.data)
    n = len(native_names)
    if cfg.benchmark.order_file:
        order = read_order(cfg.benchmark.order_file, n)
    else:
        order_seed = cfg.benchmark.order_seed if cfg.benchmark.order_seed is not None else seed
        order = pycil_order(n, order_seed)
    base = source.default_base if cfg.benchmark.base is None else cfg.benchmark.base
    inc = source.default_increment if cfg.benchmark.increment is None else cfg.benchmark.increment
    tasks = [list(range(n))] if single_task else split_tasks(n, base, inc)
    if cfg.benchmark.max_tasks:
        tasks = tasks[: cfg.benchmark.max_tasks]
    val = ({"fraction": cfg.benchmark.val_fraction, "seed": cfg.benchmark.val_seed} if cfg.benchmark.val_fraction
           else None)
    if cfg.eval.split == "val" and val is None:
        raise UserError("eval.split=val tests on the validation split, which needs held-out training images: "
                        "add --set benchmark.val_fraction=0.1 (for example)")
    return Benchmark(cfg.benchmark.name, source, [native_names[c] for c in order], order, tasks, val)


def limit_per_class(labels: np.ndarray, k: int | None) -> np.ndarray:
    """Indices keeping the first k samples of each class (all when k is None)."""
    if k is None:
        return np.arange(len(labels))
    keep, seen = [], {}
    for i, y in enumerate(labels.tolist()):
        if seen.get(y, 0) < k:
            keep.append(i)
            seen[y] = seen.get(y, 0) + 1
    return np.asarray(keep, dtype=np.int64)


def write_plan(bench: Benchmark, path: Path) -> None:
    write_text(path, json.dumps(bench.plan(), indent=1))


def subset(samples: Samples, idx: np.ndarray) -> Samples:
    items = samples.items[idx] if isinstance(samples.items, np.ndarray) else [samples.items[i] for i in idx]
    return Samples(items, samples.targets[idx])
