"""Config sections of what a run learns from: the benchmark (class order, task split) and its data."""
from __future__ import annotations

from dataclasses import dataclass, field

from dmc.config.checks import BadValue, Section, at_least, within


@dataclass
class BenchmarkConfig(Section):
    name: str = "glyphs"  # registered benchmark (`dmc list`)
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
class WorldConfig(Section):
    """Settings of the offline glyph world (see dmc.data.glyphs).

    The defaults are measured, not guessed (world v2, docs/results.md): with the default toy CLIP
    (dmc.models.toy) severity 0.3 puts the frozen features in real CLIP's regime (zero-shot / analytic 0.88,
    nearest class mean / analytic 0.90, analytic 85.0) with a joint fine-tuning bound 4 points above the
    analytic read-out; at 0.2 the analytic read-out passes 90, at 0.4 the ratios fall to 0.80 / 0.83.
    """

    seed: int = 0  # rendering seed: the benchmark's images are the same for every run seed
    train_per_class: int = 100  # renditions per class for training
    test_per_class: int = 30  # renditions per class for testing
    severity: float = 0.3  # renditions severity s in [0, 1]: geometric jitter, texture, noise and blur grow with s
    system_fonts: bool = False  # also use system fonts (explicit opt-in; default: matplotlib's fonts only)

    def check(self) -> None:
        at_least(self, 1, "train_per_class", "test_per_class")
        within(self, "severity", 0.0, 1.0)


@dataclass
class DataConfig(Section):
    root: str | None = None  # dataset root folder (real benchmarks); [reconstruction] no default path
    download: bool = False  # allow torchvision to download (CIFAR-100 only)
    split_file: str | None = None  # ImageNet-R: optional list file with `train` / `test` sections
    split_seed: int = 0  # ImageNet-R: seed of the per-class 80/20 split when no split file is given
    skip_corrupt: bool = False  # skip unreadable images (reported) instead of stopping; each image is then decoded once before training, so files cut short are found too
    num_workers: int = 0  # DataLoader workers
    world: WorldConfig = field(default_factory=WorldConfig)  # the offline glyph world (benchmark `glyphs`)

    def check(self) -> None:
        at_least(self, 0, "num_workers")
