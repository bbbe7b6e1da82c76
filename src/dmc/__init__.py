"""dmc: CLIP-based class-incremental learning (DMC, DMC-OT and baselines).

`dmc.load(run_dir)` gives the model a run trained (`classes`, `predict(images)`; see `dmc.engine.predict`).
Importing `dmc` loads nothing heavy: torch comes with the first call that needs it. It registers the lab
on top of the library (`dmc.world`: the glyph world's benchmark, backbone and settings, by name), which
the library itself never imports.
"""
from __future__ import annotations

from dmc import world  # noqa: F401  (registers the benchmark `glyphs`, the backbone `toy`, `data.world`)

__version__ = "0.1.0"


def load(run_dir, task: int | None = None, device: str = "auto"):
    """The trained model of a run directory after task `task` (from 1; default: the last): a
    `dmc.engine.predict.Predictor` with `classes` and `predict(images, topk=5)`."""
    from dmc.engine.predict import load as load_run

    return load_run(run_dir, task, device)


def __getattr__(name: str):
    """`dmc.Learner`: a model folder taught new classes one folder per call (`dmc.engine.learn`), imported
    when first used (it brings torch)."""
    if name == "Learner":
        from dmc.engine.learn import Learner

        return Learner
    raise AttributeError(f"module 'dmc' has no attribute {name!r}")
