"""dmc: CLIP-based class-incremental learning (DMC, DMC-OT and baselines).

`dmc.load(run_dir)` gives the model a run trained (`classes`, `predict(images)`; see `dmc.engine.predict`).
Importing `dmc` loads nothing heavy: torch comes with the first call that needs it. The library never imports
the lab on top of it (`dmc.world`: the glyph world and the toy CLIP); the command line registers the lab's
names, and `dmc.load` does too, so a run of the glyph world loads here while any other run never imports it.
"""
from __future__ import annotations

__version__ = "0.1.0"


def load(run_dir, task: int | None = None, device: str = "auto"):
    """The trained model of a run directory after task `task` (from 1; default: the last): a
    `dmc.engine.predict.Predictor` with `classes` and `predict(images, topk=5)`. The lab's names are known
    here by where they live (`dmc.catalog.register_lab`): its modules load only for a run that used them."""
    from dmc.catalog import register_lab
    from dmc.engine.predict import load as load_run

    register_lab()
    return load_run(run_dir, task, device)


def __getattr__(name: str):
    """`dmc.Learner`: a model folder taught new classes one folder per call (`dmc.engine.learn`), imported
    when first used (it brings torch)."""
    if name == "Learner":
        from dmc.engine.learn import Learner

        return Learner
    raise AttributeError(f"module 'dmc' has no attribute {name!r}")
