"""Config sections of what a run learns from: the benchmark (class order, task split) and its data.
A benchmark with settings of its own plugs its section into DataConfig (the glyph world: `data.world`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dmc.config.checks import BadValue, Section, at_least


@dataclass
class BenchmarkConfig(Section):
    name: str = "imagefolder"  # registered benchmark (`dmc list`); the command line's default is the lab's `glyphs`
    base: int | None = None  # classes in the first task; None: the benchmark's default (0 = same as increment)
    increment: int | None = None  # classes per later task; None: the benchmark's default
    order_file: str | None = None  # YAML/JSON list of native class ids; None: seeded permutation
    order_seed: int | None = None  # seed of the permutation; None: the run seed (PyCIL: 1993)
    max_tasks: int | None = None  # stop after this many tasks (smoke runs)
    train_per_class: int | None = None  # keep at most this many training images per class (smoke runs)
    test_per_class: int | None = None  # keep at most this many test images per class (smoke runs)
    val_fraction: float = 0.0  # share of each class's training images held out as the validation split (never trained on; `eval.split=val` tests on it); 0 = none
    val_seed: int = 0  # seed of the validation split: which images are held out depends on it and on each class, not on the run seed or the class order

    def check(self) -> None:
        at_least(self, 0, "base")
        at_least(self, 1, "increment", "max_tasks", "train_per_class", "test_per_class")
        if not 0.0 <= self.val_fraction < 1.0:
            raise BadValue("val_fraction", self.val_fraction, "must be in [0, 1)")


@dataclass
class DataConfig(Section):
    root: str | None = None  # dataset root folder (real benchmarks); [reconstruction] no default path
    download: bool = False  # allow torchvision to download (CIFAR-100 only)
    split_file: str | None = None  # ImageNet-R: optional list file with `train` / `test` sections
    split_seed: int = 0  # ImageNet-R: seed of the per-class 80/20 split when no split file is given
    skip_corrupt: bool = False  # skip unreadable images (reported) instead of stopping; each image is then decoded once before training, so files cut short are found too
    num_workers: int = 0  # DataLoader workers
    plugged: dict[str, Section] = field(default_factory=dict)  # benchmarks' own sections (`world`: dmc.world)

    def check(self) -> None:
        at_least(self, 0, "num_workers")
