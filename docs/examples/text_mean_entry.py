"""The example method's entry in the method table (docs/extending.md): its options and its line, torch-free.

In the package this is the method's part of `src/dmc/config/table.py`. Importing it registers `text-mean`
(its class, `text_mean:TextMean`, is imported when a run first asks for the method) and plugs its section
`text_mean` into every RunConfig, so `--set text_mean.alpha=0.3` is checked before torch loads."""
from __future__ import annotations

from dataclasses import dataclass

from dmc.config import METHODS, Section
from dmc.config.checks import within


@METHODS.options("text-mean", "text_mean:TextMean", "text_mean")  # its line: name, class, own section
@dataclass
class TextMeanConfig(Section):
    alpha: float = 0.5  # weight of the template text feature in a prototype (0: image mean, 1: zero-shot)

    def check(self) -> None:
        within(self, "alpha", 0.0, 1.0)
