"""Shared test helpers: a tiny, fast configuration of any method."""
from __future__ import annotations

from dmc import config

TINY = {
    "model.backbone": "tiny",
    "vision.epochs": 1,
    "vision.batch_size": 16,
    "prompt.epochs": 2,
    "prompt.batch_size": 16,
    "benchmark.train_per_class": 8,
    "benchmark.test_per_class": 4,
    "calibration.samples_per_class": 16,
}


def tiny_cfg(method: str, **extra) -> config.RunConfig:
    overrides = {**TINY, **{k.replace("__", "."): v for k, v in extra.items()}}
    return config.resolve("synthetic", method, overrides)
