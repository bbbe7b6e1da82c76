"""Class-wise Gaussian memory: the replay source of DMC's stage 2 (no stored images).

After stage 1 of task t, each new class c is summarised by the mean mu_c and covariance Sigma_c of its
image features under the adapted encoder. Stage 2 replays old classes by sampling z = mu_c + L_c xi with
L_c = chol(Sigma_c) and xi ~ N(0, I) drawn from an explicit ``torch.Generator``.

Statistics are computed in float64 and stored in float32 (half the memory: 200 classes x 512^2 floats is
210 MB in float32). Cholesky factors are computed in float64 from the stored float32 covariance, kept in
float32 as a cache, and never checkpointed: they are rebuilt whenever statistics change or are loaded.
"""
from __future__ import annotations

import operator

import torch
from torch import Tensor, nn

from dmc.config import MemoryConfig

def shrink_covariance(cov: Tensor, a0: float = 1.0, a1: float = 1.0) -> Tensor:
    """Shrink a covariance toward its mean diagonal and mean off-diagonal values (RAPF's form).

    Computes Sigma' = Sigma + a0 * mean(diag Sigma) * I + a1 * mean(offdiag Sigma) * (1 - I), where
    mean(offdiag) averages the D(D-1) off-diagonal entries. This is the shrinkage of FeCAM (Goswami et
    al., NeurIPS 2023), used with a0 = a1 = 1 by RAPF (Huang et al., ECCV 2024; their code averages only
    the non-zero off-diagonal entries, identical for a dense empirical covariance). If Sigma is PSD and
    a1 <= a0, Sigma' is PSD (the off-diagonal mean is >= -mean(diag)/(D-1)).

    Args:
        cov: (D, D) covariance, or (D,) variances (no off-diagonal: only the a0 term applies).
        a0, a1: shrinkage weights.
    Returns:
        the shrunk covariance, same shape and dtype.
    """
    if cov.ndim == 1:
        return cov + a0 * cov.mean()
    _check_square(cov)
    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)  # (D, D)
    diag_mean = torch.diagonal(cov).mean()
    off_mean = (cov.sum() - torch.diagonal(cov).sum()) / (d * (d - 1)) if d > 1 else cov.new_zeros(())
    return cov + a0 * diag_mean * eye + a1 * off_mean * (1.0 - eye)


def oas_shrink(cov: Tensor, n: int) -> Tensor:
    """Shrink a sample covariance toward (tr S / D) I with the Oracle Approximating Shrinkage weight.

    Sigma' = (1 - rho) S + rho (tr S / D) I with
    rho = min(1, ((1 - 2/D) tr(S^2) + tr(S)^2) / ((n + 1 - 2/D) (tr(S^2) - tr(S)^2 / D)))
    (Chen, Wiesel, Eldar and Hero, "Shrinkage algorithms for MMSE covariance estimation", IEEE TSP 2010,
    eq. 23). The trace (total variance) is kept; eigenvalues move toward their mean, so a class with fewer
    samples than dimensions (S of rank n - 1 < D) gets a floor of rho * tr S / D instead of the ridge's
    1e-4 of it: its condition number falls from ~1e5 to ~1e2 and its samples fill every direction a little
    rather than the n - 1 seen ones only.

    Args:
        cov: (D, D) sample covariance of n samples. n: the number of samples.
    Returns:
        (D, D), same dtype.
    """
    _check_square(cov)
    d = cov.shape[0]
    tr, tr2 = torch.diagonal(cov).sum(), (cov * cov).sum()  # tr S, tr S^2 (S symmetric)
    den = (n + 1 - 2 / d) * (tr2 - tr * tr / d)
    rho = torch.ones_like(tr) if float(den) <= 0 else torch.clamp(((1 - 2 / d) * tr2 + tr * tr) / den, max=1.0)
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    return (1 - rho) * cov + rho * (tr / d) * eye


def add_ridge(cov: Tensor, ridge: float, relative: bool = True) -> Tensor:
    """Return Sigma + ridge * tau * I, tau = tr(Sigma)/D if ``relative`` (1 when that is 0) else 1.

    Shapes: cov (D, D) or (D,) -> same.
    """
    var = torch.diagonal(cov) if cov.ndim == 2 else cov  # (D,)
    tau = var.mean() if relative else var.new_ones(())
    tau = torch.where(tau > 0, tau, torch.ones_like(tau))  # identical samples: fall back to absolute
    if cov.ndim == 1:
        return cov + ridge * tau
    return cov + ridge * tau * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)


def fit_gaussian(feats: Tensor, cfg: MemoryConfig) -> tuple[Tensor, Tensor]:
    """Estimate one class's Gaussian: mean and regularised covariance of its features.

    mu = (1/N) sum_n x_n; S = (1/(N-1)) sum_n (x_n - mu)(x_n - mu)^T (unbiased, as ``torch.cov``);
    then, in this order: optional shrinkage (``shrink_covariance``, RAPF's; else ``oas_shrink`` for a full
    covariance of N <= D samples when ``cfg.shrink_few``), ridge (``add_ridge``). With
    ``cfg.normalize`` the x_n are L2-normalised first. Accumulation is in float64.

    Args:
        feats: (N, D) features of one class, N >= 2 (any float dtype, any device).
        cfg: the memory configuration.
    Returns:
        mean (D,) and cov (D, D) ("full") or variances (D,) ("diag"), both float64 on feats' device.
    """
    if feats.ndim != 2:
        raise ValueError(f"feats must be (N, D), got shape {tuple(feats.shape)}")
    n, d = feats.shape
    if n < 2 or d < 1:
        raise ValueError(f"need at least 2 samples of dimension >= 1 to fit a Gaussian, got shape {(n, d)}")
    x = feats.to(torch.float64)  # (N, D)
    if cfg.normalize:
        x = torch.nn.functional.normalize(x, dim=1)
    mean = x.mean(0)  # (D,)
    xc = x - mean  # (N, D)
    if cfg.covariance == "diag":
        cov = (xc * xc).sum(0) / (n - 1)  # (D,)
    else:
        cov = xc.T @ xc / (n - 1)  # (D, D)
    if cfg.shrink:
        cov = shrink_covariance(cov, cfg.shrink_diag, cfg.shrink_offdiag)
    elif cfg.shrink_few and cfg.covariance == "full" and n <= d:
        cov = oas_shrink(cov, n)
    return mean, add_ridge(cov, cfg.ridge, cfg.relative_ridge)


def covariance_factor(cov: Tensor) -> Tensor:
    """Sampling factor of a covariance: lower Cholesky L (Sigma = L L^T) or standard deviations.

    Computed in float64 and returned in cov's dtype. Shapes: (..., D, D) -> (..., D, D); (D,) -> (D,).
    Raises ValueError if the covariance is not positive definite.
    """
    if cov.ndim == 1:
        if not bool((cov > 0).all()):
            raise ValueError("variances must be > 0 (did the ridge get lost?)")
        return cov.to(torch.float64).sqrt().to(cov.dtype)
    factor, info = torch.linalg.cholesky_ex(cov.to(torch.float64))
    if bool((info > 0).any()):
        raise ValueError("covariance is not positive definite; Cholesky failed (increase the ridge)")
    return factor.to(cov.dtype)


def sample_gaussian(mean: Tensor, chol_or_std: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """Draw n samples z = mu + L xi, xi ~ N(0, I) from ``generator`` (std * xi for a diagonal Gaussian).

    Args:
        mean: (D,). chol_or_std: (D, D) lower Cholesky factor or (D,) standard deviations.
        n: number of samples. generator: on mean's device; the same seed gives the same samples.
    Returns:
        (n, D) samples in mean's dtype.
    """
    xi = torch.randn(n, mean.shape[0], generator=generator, dtype=mean.dtype, device=mean.device)  # (n, D)
    if chol_or_std.ndim == 1:
        return mean + xi * chol_or_std
    return mean + xi @ chol_or_std.T


def _check_square(cov: Tensor) -> None:
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"covariance must be (D, D), got shape {tuple(cov.shape)}")


class GaussianBank(nn.Module):
    """Per-class Gaussian statistics keyed by integer class id (ids >= 0).

    Means (D,) and covariances ((D, D) or (D,), per ``cfg.covariance``) are stored in float32; the
    Cholesky factors (or standard deviations) are a float32 cache rebuilt whenever statistics change.
    ``sample`` keeps a stacked copy of the means and factors of the last class list it was asked for.

    Each class also keeps n_c, the number of samples its statistics came from (0: not known), which
    settings that follow the data read (a shrinkage estimated from n_c and D: `dmc.discriminant`).

    A module, so that a method's checkpoint holds it like any other trained part: torch's
    ``state_dict`` / ``load_state_dict`` / ``to`` work, with flat names ``mean.{cid}``, ``cov.{cid}`` and
    ``count.{cid}`` (safetensors-ready; the factors are not saved). A checkpoint from before counts were
    kept loads with the counts the bank already knew for those classes (`note_counts`), else 0. The class
    list grows, so the statistics are kept in dicts rather than registered buffers, and the three hooks
    below tell torch about them.
    """

    def __init__(self, cfg: MemoryConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.cfg = cfg or MemoryConfig()
        self.device = torch.device(device)
        self._mean: dict[int, Tensor] = {}
        self._cov: dict[int, Tensor] = {}
        self._factor: dict[int, Tensor] = {}
        self._count: dict[int, int] = {}  # n_c, the samples behind each class's statistics (0: unknown)
        self._stacked: tuple[tuple[int, ...], Tensor, Tensor] | None = None  # (classes, means, factors)

    def __len__(self) -> int:
        return len(self._mean)

    def __contains__(self, class_id: int) -> bool:
        return class_id in self._mean

    @property
    def dim(self) -> int | None:
        """Feature dimension D, or None while the bank is empty."""
        return next(iter(self._mean.values())).shape[0] if self._mean else None

    def add(self, class_id: int, feats: Tensor) -> None:
        """Fit class ``class_id`` from its (N, D) features (float64) and store it (float32) with n_c = N."""
        mean, cov = fit_gaussian(feats, self.cfg)
        self.set_stats(class_id, mean, cov)
        self._count[operator.index(class_id)] = int(feats.shape[0])

    def note_counts(self, counts: dict[int, int]) -> None:
        """Record n_c for classes whose count is not known yet (e.g. from a task's labels, before a
        checkpoint that lacks counts is loaded); a known count is kept."""
        for c, n in counts.items():
            if self._count.get(int(c), 0) <= 0:
                self._count[int(c)] = int(n)

    def counts(self, classes: list[int] | None = None) -> Tensor:
        """(C,) int64 sample counts n_c of ``classes`` (default: all, sorted); 0 where not known."""
        return torch.tensor([self._count.get(c, 0) for c in self._resolve(classes)], dtype=torch.long)

    def set_stats(self, class_id: int, mean: Tensor, cov: Tensor) -> None:
        """Store (or replace) a class's mean (D,) and covariance, e.g. after drift calibration."""
        try:
            cid = operator.index(class_id)  # accepts numpy / 0-dim tensor integers
        except TypeError:
            cid = -1
        if cid < 0:
            raise ValueError(f"class_id must be an integer >= 0, got {class_id!r}")
        class_id = cid
        d = mean.shape[0] if mean.ndim == 1 else -1
        want = (d, d) if self.cfg.covariance == "full" else (d,)
        if mean.ndim != 1 or tuple(cov.shape) != want:
            raise ValueError(
                f"expected mean (D,) and {self.cfg.covariance} covariance {want}, "
                f"got {tuple(mean.shape)} and {tuple(cov.shape)}"
            )
        if self.dim is not None and d != self.dim and not (len(self) == 1 and class_id in self):
            raise ValueError(f"feature dimension {d} differs from the bank's {self.dim}")
        mean32 = mean.detach().to(self.device, torch.float32).clone()  # (D,)
        cov32 = cov.detach().to(self.device, torch.float32).clone()  # (D, D) or (D,)
        factor = covariance_factor(cov32.to(torch.float64)).to(torch.float32)
        self._mean[class_id], self._cov[class_id], self._factor[class_id] = mean32, cov32, factor
        self._stacked = None

    def classes(self) -> list[int]:
        """Stored class ids, sorted."""
        return sorted(self._mean)

    def means(self, classes: list[int] | None = None) -> Tensor:
        """(C, D) means of ``classes`` (default: all, sorted)."""
        return torch.stack([self._mean[c] for c in self._resolve(classes)])

    def covs(self, classes: list[int] | None = None) -> Tensor:
        """(C, D, D) covariances or (C, D) variances of ``classes`` (default: all, sorted)."""
        return torch.stack([self._cov[c] for c in self._resolve(classes)])

    def sample(
        self, classes: list[int], n_per_class: int, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Balanced replay: n_per_class samples of each class, class after class.

        Returns feats (C*n, D) float32 and labels (C*n,) int64 (the class ids), on the bank's device.
        """
        key = tuple(self._resolve(classes))
        if n_per_class < 0 or not key:
            raise ValueError(f"need >= 1 class and n_per_class >= 0, got {len(key)} classes, {n_per_class}")
        if self._stacked is None or self._stacked[0] != key:
            self._stacked = (key, self.means(list(key)), torch.stack([self._factor[c] for c in key]))
        _, mu, factor = self._stacked  # (C, D), (C, D, D) or (C, D)
        c, d = mu.shape
        xi = torch.randn(c, n_per_class, d, generator=generator, device=self.device)  # (C, n, D)
        if factor.ndim == 2:
            z = mu[:, None, :] + xi * factor[:, None, :]  # (C, n, D)
        else:
            z = mu[:, None, :] + xi @ factor.transpose(1, 2)  # (C, n, D)
        labels = torch.tensor(key, dtype=torch.long, device=self.device).repeat_interleave(n_per_class)  # (C*n,)
        return z.reshape(c * n_per_class, d), labels

    # ---- torch's module protocol: state_dict, load_state_dict (bit-exact, replaces the contents), to
    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        for c in self.classes():
            destination[f"{prefix}mean.{c}"], destination[f"{prefix}cov.{c}"] = self._mean[c], self._cov[c]
            destination[f"{prefix}count.{c}"] = torch.tensor(self._count.get(c, 0), dtype=torch.long)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args) -> None:
        state = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        ids: set[int] = set()
        for name in state:
            kind, _, cid = name.partition(".")
            if kind not in ("mean", "cov", "count") or not cid.isdigit():
                raise ValueError(f"unexpected key {prefix + name!r}; expected 'mean.<id>', 'cov.<id>' or "
                                 "'count.<id>'")
            ids.add(int(cid))
        missing = [c for c in sorted(ids) if f"mean.{c}" not in state or f"cov.{c}" not in state]
        if missing:
            raise ValueError(f"classes {missing} lack a mean or a covariance")
        known = self._count
        self._mean, self._cov, self._factor, self._count, self._stacked = {}, {}, {}, {}, None
        for c in sorted(ids):
            self.set_stats(c, state[f"mean.{c}"], state[f"cov.{c}"])
            count = state.get(f"count.{c}")
            self._count[c] = int(count) if count is not None else known.get(c, 0)

    def _apply(self, fn, recurse: bool = True) -> "GaussianBank":
        for store in (self._mean, self._cov, self._factor):
            for c in store:
                store[c] = fn(store[c])
        self.device = fn(torch.empty(0, device=self.device)).device
        self._stacked = None
        return super()._apply(fn, recurse)

    def _resolve(self, classes: list[int] | None) -> list[int]:
        if classes is None:
            return self.classes()
        unknown = [c for c in classes if c not in self._mean]
        if unknown:
            raise KeyError(f"classes {unknown} are not in the memory (stored: {self.classes()})")
        return list(classes)
