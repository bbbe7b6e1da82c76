"""The methods, each a few hooks on the shared loop. `METHODS` is the method table (dmc.config.table): a
method's module is imported when a run first asks for it by name."""
from dmc.config.table import METHODS
from dmc.methods.base import Method

__all__ = ["METHODS", "Method"]
