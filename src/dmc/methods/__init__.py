"""Methods register themselves in METHODS on import."""
from dmc.methods.base import METHODS, Method
from dmc.methods import baselines, dmc, proof, ranpac, rapf, simplecil  # noqa: F401

__all__ = ["METHODS", "Method"]
