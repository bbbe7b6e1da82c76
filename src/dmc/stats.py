"""Paired statistics of runs that share a seed.

Runs with the same seed share the class order (and every other random draw derived from it), so two
settings are compared seed by seed: d_s = x_s(setting) - x_s(reference). The mean of the d_s and its
Student-t confidence interval, mean ± t_{(1+level)/2, n-1} * sd(d) / sqrt(n), say whether the difference
is distinguishable from seed-to-seed noise: "within noise" means the interval contains 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence


@dataclass(frozen=True)
class Paired:
    """A mean paired difference over n seeds and its confidence interval (low, high); with one seed the
    interval is unknown (nan)."""

    n: int
    mean: float
    low: float
    high: float

    @property
    def within_noise(self) -> bool | None:
        """True when the interval contains 0; None when there is no interval (fewer than 2 seeds)."""
        if self.n < 2:
            return None
        return self.low <= 0.0 <= self.high

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f}"
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (scipy's)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


def paired_difference(diffs: Sequence[float], level: float = 0.95) -> Paired:
    """Mean of paired differences d (n,) and its two-sided Student-t interval at `level`."""
    n = len(diffs)
    if n == 0:
        raise ValueError("no paired differences: the two settings share no seed")
    mean = sum(diffs) / n
    if n == 1:
        return Paired(1, mean, math.nan, math.nan)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Paired(n, mean, mean - half, mean + half)


def paired(values: Mapping[int, float], reference: Mapping[int, float], level: float = 0.95) -> Paired:
    """`paired_difference` of two settings' values by seed ({seed: value}), over the seeds both have."""
    seeds = sorted(set(values) & set(reference))
    return paired_difference([values[s] - reference[s] for s in seeds], level)
