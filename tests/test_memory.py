"""Gaussian memory: estimation, shrinkage, positive definiteness, sampling, checkpoints."""
import pytest
import torch

from dmc.memory.gaussian import (
    GaussianBank,
    MemoryConfig,
    covariance_factor,
    fit_gaussian,
    sample_gaussian,
    shrink_covariance,
)


def _known_gaussian(d: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g, dtype=torch.float64) * 3
    basis = torch.randn(d, d, generator=g, dtype=torch.float64)
    return mean, basis @ basis.T / d + 0.5 * torch.eye(d, dtype=torch.float64)


def test_fit_recovers_known_mean_and_covariance():
    mean, cov = _known_gaussian()
    g = torch.Generator().manual_seed(1)
    feats = sample_gaussian(mean, torch.linalg.cholesky(cov), 40_000, g).float()
    mu, sigma = fit_gaussian(feats, MemoryConfig())
    assert mu.dtype == sigma.dtype == torch.float64
    torch.testing.assert_close(mu, mean, atol=0.05, rtol=0)
    torch.testing.assert_close(sigma, cov, atol=0.05, rtol=0)


def test_fit_matches_torch_cov_plus_ridge():
    feats = torch.randn(50, 6, dtype=torch.float64)
    _, sigma = fit_gaussian(feats, MemoryConfig(ridge=1e-3, relative_ridge=False))
    torch.testing.assert_close(sigma, torch.cov(feats.T) + 1e-3 * torch.eye(6, dtype=torch.float64))
    _, rel = fit_gaussian(feats, MemoryConfig(ridge=1e-3))
    tau = torch.cov(feats.T).diagonal().mean()
    torch.testing.assert_close(rel, torch.cov(feats.T) + 1e-3 * tau * torch.eye(6, dtype=torch.float64))


def test_shrinkage_formula_on_hand_made_matrix():
    cov = torch.tensor([[2.0, 0.5, -0.1], [0.5, 1.0, 0.3], [-0.1, 0.3, 3.0]], dtype=torch.float64)
    # mean diag = 2; mean off-diag = 2 * (0.5 - 0.1 + 0.3) / 6 = 0.7 / 3
    off = 0.7 / 3
    expected = torch.tensor(
        [[4.0, 0.5 + off, -0.1 + off], [0.5 + off, 3.0, 0.3 + off], [-0.1 + off, 0.3 + off, 5.0]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(shrink_covariance(cov, 1.0, 1.0), expected)
    half = cov + 0.5 * 2.0 * torch.eye(3, dtype=torch.float64) + 0.25 * off * (1 - torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(shrink_covariance(cov, 0.5, 0.25), half)
    torch.testing.assert_close(shrink_covariance(torch.tensor([1.0, 2.0, 3.0]), 1.0, 1.0),
                               torch.tensor([3.0, 4.0, 5.0]))


def test_fit_applies_shrinkage_then_ridge():
    feats = torch.randn(30, 5, dtype=torch.float64)
    cfg = MemoryConfig(shrink=True, shrink_diag=1.0, shrink_offdiag=0.5, ridge=1e-2, relative_ridge=False)
    _, sigma = fit_gaussian(feats, cfg)
    expected = shrink_covariance(torch.cov(feats.T), 1.0, 0.5) + 1e-2 * torch.eye(5, dtype=torch.float64)
    torch.testing.assert_close(sigma, expected)


@pytest.mark.parametrize("relative", [True, False])
def test_fewer_samples_than_dims_stays_positive_definite(relative):
    feats = torch.randn(5, 64) * 4 + 1
    mean, cov = fit_gaussian(feats, MemoryConfig(relative_ridge=relative))
    assert torch.linalg.matrix_rank(torch.cov(feats.T.double())) <= 4  # singular without the ridge
    assert torch.linalg.eigvalsh(cov).min() > 0
    covariance_factor(cov)  # Cholesky succeeds
    bank = GaussianBank(MemoryConfig(relative_ridge=relative))
    bank.add(0, feats)  # stored in float32, Cholesky of the float32 copy succeeds
    assert torch.linalg.eigvalsh(bank.covs()[0].double()).min() > 0
    assert bank.sample([0], 3, torch.Generator().manual_seed(0))[0].isfinite().all()


def test_relative_ridge_is_scale_free():
    feats = torch.randn(8, 16, dtype=torch.float64)
    _, small = fit_gaussian(feats, MemoryConfig())
    _, large = fit_gaussian(feats * 10, MemoryConfig())
    torch.testing.assert_close(large, 100 * small)


def test_diag_mode():
    feats = torch.randn(200, 7, dtype=torch.float64) * torch.arange(1, 8)
    mu_d, var = fit_gaussian(feats, MemoryConfig(covariance="diag"))
    mu_f, cov = fit_gaussian(feats, MemoryConfig(covariance="full"))
    assert var.shape == (7,)
    torch.testing.assert_close(mu_d, mu_f)
    torch.testing.assert_close(var, cov.diagonal())
    bank = GaussianBank(MemoryConfig(covariance="diag"))
    bank.add(4, feats)
    z, labels = bank.sample([4], 20_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.double().var(0), var, rtol=0.05, atol=0)
    assert (labels == 4).all()
    with pytest.raises(ValueError, match="diag covariance"):
        bank.set_stats(5, mu_f, cov)


def test_sampling_reproducible_and_balanced():
    bank = GaussianBank()
    for c in (2, 9, 5):
        bank.add(c, torch.randn(40, 6) + c)
    z1, y1 = bank.sample([9, 2], 4, torch.Generator().manual_seed(3))
    z2, y2 = bank.sample([9, 2], 4, torch.Generator().manual_seed(3))
    z3, _ = bank.sample([9, 2], 4, torch.Generator().manual_seed(4))
    assert torch.equal(z1, z2) and torch.equal(y1, y2) and not torch.equal(z1, z3)
    assert z1.shape == (8, 6) and z1.dtype == torch.float32
    assert y1.tolist() == [9] * 4 + [2] * 4
    mean = bank.means([9])[0]
    g = torch.Generator().manual_seed(3)
    again = sample_gaussian(mean, covariance_factor(bank.covs([9])[0]), 4, g)
    assert again.shape == (4, 6)


def test_bank_samples_follow_stored_statistics():
    mean, cov = _known_gaussian(d=5, seed=2)
    bank = GaussianBank()
    bank.set_stats(0, mean, cov)
    z, _ = bank.sample([0], 50_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.double().mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(z.double().T), cov, atol=0.06, rtol=0)


def test_state_dict_round_trip_is_exact(tmp_path):
    bank = GaussianBank()
    for c in (3, 12, 7):
        bank.add(c, torch.randn(10, 8) * c)
    state = bank.state_dict()
    assert sorted(state) == ["count.12", "count.3", "count.7", "cov.12", "cov.3", "cov.7", "mean.12", "mean.3",
                             "mean.7"]
    assert [int(state[f"count.{c}"]) for c in (3, 7, 12)] == [10, 10, 10]
    from safetensors.torch import load_file, save_file

    save_file(state, str(tmp_path / "memory.safetensors"))
    other = GaussianBank()
    other.load_state_dict(load_file(str(tmp_path / "memory.safetensors")))
    assert other.classes() == [3, 7, 12]
    for key, value in state.items():
        assert torch.equal(other.state_dict()[key], value)
    a = bank.sample([3, 12], 5, torch.Generator().manual_seed(1))[0]
    b = other.sample([3, 12], 5, torch.Generator().manual_seed(1))[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="lack a mean or a covariance"):
        GaussianBank().load_state_dict({"mean.1": state["mean.3"]})
    with pytest.raises(ValueError, match="unexpected key"):
        GaussianBank().load_state_dict({"weight": state["mean.3"]})


def test_bank_checkpoints_inside_a_module_container():
    bank = GaussianBank()
    bank.add(4, torch.randn(10, 3))
    state = torch.nn.ModuleDict({"memory": bank}).state_dict()
    assert sorted(state) == ["memory.count.4", "memory.cov.4", "memory.mean.4"]
    other = torch.nn.ModuleDict({"memory": GaussianBank()})
    other.load_state_dict(state)  # strict: every key is the bank's own
    assert other["memory"].classes() == [4] and torch.equal(other["memory"].means(), bank.means())


def test_normalize_option():
    feats = torch.randn(100, 6, dtype=torch.float64) + 2
    mu, _ = fit_gaussian(feats, MemoryConfig(normalize=True))
    mu10, _ = fit_gaussian(feats * 10, MemoryConfig(normalize=True))
    torch.testing.assert_close(mu, mu10)
    assert mu.norm() <= 1
    raw, _ = fit_gaussian(feats, MemoryConfig())
    assert raw.norm() > 1


def test_errors_are_clear():
    with pytest.raises(ValueError, match="at least 2 samples"):
        fit_gaussian(torch.randn(1, 4), MemoryConfig())
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        fit_gaussian(torch.randn(4), MemoryConfig())
    with pytest.raises(ValueError, match="bad value for covariance: 'spherical'; choose one of: full, diag"):
        MemoryConfig(covariance="spherical")
    with pytest.raises(ValueError, match="not positive definite"):
        covariance_factor(torch.zeros(3, 3))
    bank = GaussianBank()
    bank.add(0, torch.randn(5, 4))
    with pytest.raises(KeyError, match="not in the memory"):
        bank.means([1])
    with pytest.raises(ValueError, match="dimension 3 differs"):
        bank.add(1, torch.randn(5, 3))
    with pytest.raises(ValueError, match="class_id"):
        bank.add(-1, torch.randn(5, 4))


def test_to_device_keeps_values():
    bank = GaussianBank()
    bank.add(1, torch.randn(9, 3))
    before = bank.state_dict()
    bank.to("cpu")
    assert all(torch.equal(before[k], v) for k, v in bank.state_dict().items())
    assert bank.dim == 3 and len(bank) == 1 and 1 in bank


def _rank_deficient(n: int = 30, d: int = 128) -> torch.Tensor:
    """n samples of a D-dim Gaussian with a spread spectrum (variances 1 down to 1e-4): S has rank n - 1."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    scales = torch.logspace(0, -2, d, dtype=torch.float64)  # (d,)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ q.T + 2


def _condition(cov: torch.Tensor) -> float:
    eig = torch.linalg.eigvalsh(cov.double())
    return float(eig.max() / eig.min())


def test_a_class_with_fewer_samples_than_dims_is_well_conditioned_for_every_method():
    """Every method on every benchmark preset: its resolved memory settings keep a class of 30 samples in
    D = 128 well conditioned (the ridge alone leaves ~1e5)."""
    from dmc import config
    from dmc.methods import METHODS

    settings = {}  # distinct memory settings -> the pairs that resolve to them
    for benchmark in ["cifar100", "imagenet-r", "cub200", "ucf101", "imagefolder", "glyphs", "synthetic"]:
        for method in METHODS.names():
            memory = config.resolve(benchmark, method).memory
            settings.setdefault(repr(memory), (memory, []))[1].append(f"{benchmark} x {method}")
    feats = _rank_deficient()
    for memory, pairs in settings.values():
        _, cov = fit_gaussian(feats, memory)
        bank = GaussianBank(memory)
        bank.add(0, feats.float())
        assert _condition(cov) < 1e3 and _condition(bank.covs()[0]) < 1e3, pairs
        assert bank.sample([0], 4, torch.Generator())[0].isfinite().all()
    _, ridged = fit_gaussian(feats, MemoryConfig(shrink_few=False))  # the ridge alone
    assert _condition(ridged) > 1e4


def test_oas_keeps_the_total_variance_and_leaves_full_rank_classes_alone():
    from dmc.memory.gaussian import oas_shrink

    feats = _rank_deficient()
    s = torch.cov(feats.T)
    shrunk = oas_shrink(s, len(feats))
    torch.testing.assert_close(shrunk.trace(), s.trace())
    assert _condition(shrunk) < 1e3 and torch.allclose(shrunk, shrunk.T)
    many = _rank_deficient(n=400, d=16)
    _, cov = fit_gaussian(many, MemoryConfig(ridge=1e-3, relative_ridge=False))  # N > D: S + ridge only
    torch.testing.assert_close(cov, torch.cov(many.T) + 1e-3 * torch.eye(16, dtype=torch.float64))


def test_counts_are_kept_checkpointed_and_completed_for_old_checkpoints():
    """n_c follows each class (set by `add`, kept by `set_stats`), travels in the checkpoint, and a
    checkpoint from before counts were kept loads with the counts noted beforehand (else 0: unknown)."""
    bank = GaussianBank()
    bank.add(2, torch.randn(7, 4))
    bank.add(5, torch.randn(12, 4))
    bank.set_stats(2, torch.zeros(4), torch.eye(4))  # a calibration moves the statistics, not n_c
    assert bank.counts().tolist() == [7, 12] and bank.counts([5]).tolist() == [12]
    other = GaussianBank()
    other.load_state_dict(bank.state_dict())
    assert other.counts().tolist() == [7, 12]
    old = {k: v for k, v in bank.state_dict().items() if not k.startswith("count.")}  # an older checkpoint
    fresh = GaussianBank()
    fresh.note_counts({2: 7})
    fresh.load_state_dict(old)
    assert fresh.counts().tolist() == [7, 0]
    fresh.note_counts({2: 99, 5: 12})  # a known count is kept, an unknown one completed
    assert fresh.counts().tolist() == [7, 12]
    assert torch.equal(fresh.means(), bank.means()) and torch.equal(fresh.covs(), bank.covs())
