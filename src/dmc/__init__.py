"""dmc: CLIP-based class-incremental learning (DMC, DMC-OT and baselines)."""

__version__ = "0.1.0"
