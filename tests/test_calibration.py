"""Drift calibration: invariants of the OT plan, exact shift recovery, linear drift, degenerate inputs."""
import pytest
import torch

from dmc.bench import bench_ot
from dmc.calibration import (
    CalibrationConfig,
    calibrate_gaussians,
    fit_linear_drift,
    ot_drift,
    ot_plan,
    squared_distances,
    transfer_drift_mean_shift,
    transfer_drift_ot,
)
from dmc.memory.gaussian import GaussianBank

F64 = torch.float64


def _cfg(**kw) -> CalibrationConfig:
    """Sample-level balanced OT unless said otherwise: what most invariants below are about."""
    return CalibrationConfig(**{"level": "sample", "relax": None, **kw})


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _world(c: int = 4, d: int = 6, n: int = 120, dtype=F64, seed: int = 0, diag: bool = False):
    """Old class Gaussians and task-t features lying around the same regions."""
    g = _gen(seed)
    means = torch.randn(c, d, generator=g, dtype=dtype) * 2
    basis = torch.randn(c, d, d, generator=g, dtype=dtype) * 0.3
    covs = basis @ basis.transpose(1, 2) + 0.1 * torch.eye(d, dtype=dtype)
    idx = torch.randint(0, c, (n,), generator=g)
    old = means[idx] + 0.7 * torch.randn(n, d, generator=g, dtype=dtype)
    return means, (covs.diagonal(dim1=1, dim2=2).clone() if diag else covs), old


def test_none_is_identity():
    means, covs, old = _world()
    m, c, _ = calibrate_gaussians(means, covs, old, old + 5.0, _cfg(method="none"), _gen())
    assert torch.equal(m, means) and torch.equal(c, covs)
    assert m is not means and c is not covs


@pytest.mark.parametrize("method", ["mean-shift", "ot"])
@pytest.mark.parametrize("diag", [False, True])
@pytest.mark.parametrize("solver", ["sinkhorn_log", "sinkhorn"])
def test_constant_shift_is_recovered_exactly(method, diag, solver):
    means, covs, old = _world(diag=diag)
    shift = torch.linspace(-3, 4, means.shape[1], dtype=F64)
    cfg = _cfg(method=method, solver=solver, samples_per_class=16)
    m, c, info = calibrate_gaussians(means, covs, old, old + shift, cfg, _gen())
    torch.testing.assert_close(m, means + shift, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(c, covs, atol=1e-12, rtol=1e-12)
    assert info["n_repaired"] == 0


def test_constant_shift_float32():
    means, covs, old = _world(dtype=torch.float32)
    m, c, _ = calibrate_gaussians(means, covs, old, old - 2.5, _cfg(samples_per_class=32), _gen())
    torch.testing.assert_close(m, means - 2.5, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, covs, atol=1e-5, rtol=1e-5)


def test_bank_statistics_with_fewer_samples_than_dims_round_trip():
    bank, g = GaussianBank(), _gen(9)
    for c in range(3):
        bank.add(c, torch.randn(6, 24, generator=g) + c)  # N = 6 < D = 24: only the ridge keeps PD
    old = torch.randn(80, 24, generator=g)
    m, c, info = calibrate_gaussians(bank.means(), bank.covs(), old, old + 0.5, _cfg(), g)
    assert info["n_repaired"] == 0  # the eigenvalue floor sits below the memory's ridge
    for i in range(3):
        bank.set_stats(i, m[i], c[i])  # float32 storage + Cholesky succeed
    torch.testing.assert_close(bank.covs(), c)


def test_linear_drift_recovered_better_than_none():
    means, covs, old = _world(c=6, d=8, n=1200)
    a_map = torch.eye(8, dtype=F64) + 0.3 * torch.randn(8, 8, generator=_gen(5), dtype=F64) / 8**0.5
    true_m, true_c = means @ a_map.T, a_map @ covs @ a_map.T
    errors = {}
    for method in ("none", "mean-shift", "ot"):
        m, c, _ = calibrate_gaussians(means, covs, old, old @ a_map.T, _cfg(method=method), _gen())
        errors[method] = ((m - true_m).norm(dim=1).mean(), (c - true_c).norm(dim=(1, 2)).mean())
    new = old @ a_map.T
    global_shift = (means + (new - old).mean(0) - true_m).norm(dim=1).mean()  # what a per-class OT would give
    for method in ("mean-shift", "ot"):
        assert errors[method][0] < 0.2 * min(errors["none"][0], global_shift), (errors, global_shift)
        assert errors[method][1] < errors["none"][1], errors


@pytest.mark.parametrize("solver", ["sinkhorn_log", "sinkhorn"])
def test_ot_plan_has_uniform_marginals(solver):
    g = _gen(1)
    x, y = torch.randn(30, 5, generator=g, dtype=F64), torch.randn(20, 5, generator=g, dtype=F64) + 1
    plan, niter, err = ot_plan(x, y, 0.05, tol=1e-10, solver=solver)
    assert plan.shape == (30, 20) and (plan >= 0).all()
    torch.testing.assert_close(plan.sum(1), torch.full((30,), 1 / 30, dtype=F64), atol=1e-9, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((20,), 1 / 20, dtype=F64), atol=1e-9, rtol=0)
    assert err <= 1e-10 and niter >= 1


def test_ot_plan_small_reg_is_a_matching():
    x = torch.randn(6, 3, generator=_gen(2), dtype=F64)
    y = x[torch.tensor([3, 0, 5, 1, 4, 2])] * 1.001  # same points, permuted
    plan = ot_plan(x, y, 0.002, max_iter=5000, tol=1e-8, solver="sinkhorn_log").plan
    assert plan.argmax(1).tolist() == [1, 3, 5, 0, 4, 2]


def test_scaling_solver_is_safe_where_allowed():
    with pytest.raises(ValueError, match="needs reg >= 0.02"):  # the config's check; ot_plan trusts its input
        _cfg(reg=0.01)
    _cfg(reg=0.01, solver="sinkhorn_log")
    g = _gen(4)
    x = torch.cat([torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g) + 4])  # two far clusters
    y = torch.randn(60, 8, generator=g) - 3
    scaling = ot_plan(x, y, 0.02, tol=1e-4).plan
    logdom = ot_plan(x.double(), y.double(), 0.02, tol=1e-4, solver="sinkhorn_log").plan
    assert scaling.isfinite().all()
    torch.testing.assert_close(scaling.double(), logdom, rtol=1e-2, atol=1e-6)


def test_cost_is_on_normalised_features():
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=F64)
    y = torch.tensor([[5.0, 0.0]], dtype=F64)
    torch.testing.assert_close(squared_distances(x, y), torch.tensor([[0.0], [2.0]], dtype=F64))
    torch.testing.assert_close(squared_distances(x, y, normalize=False), torch.tensor([[16.0], [34.0]], dtype=F64))


def test_float32_and_float64_agree():
    g = _gen(3)
    u, a = torch.randn(40, 6, generator=g, dtype=F64), torch.randn(50, 6, generator=g, dtype=F64)
    delta = torch.randn(50, 6, generator=g, dtype=F64)
    p64 = ot_plan(u, a, tol=1e-6).plan
    p32 = ot_plan(u.float(), a.float(), tol=1e-6).plan
    torch.testing.assert_close(p32.double(), p64, rtol=1e-3, atol=1e-7)
    d64, _ = ot_drift(u, a, delta, tol=1e-6)
    d32, _ = ot_drift(u.float(), a.float(), delta.float(), tol=1e-6)
    torch.testing.assert_close(d32.double(), d64, rtol=1e-3, atol=1e-5)
    ms64 = transfer_drift_mean_shift(u, a, delta, 0.3)
    torch.testing.assert_close(transfer_drift_mean_shift(u.float(), a.float(), delta.float(), 0.3).double(), ms64,
                               rtol=1e-4, atol=1e-5)


def test_calibration_is_reproducible():
    means, covs, old = _world()
    new = old @ torch.diag(torch.linspace(0.8, 1.2, 6, dtype=F64))
    cfg = _cfg(samples_per_class=32, reg=0.2)
    first = calibrate_gaussians(means, covs, old, new, cfg, _gen(7))
    second = calibrate_gaussians(means, covs, old, new, cfg, _gen(7))
    third = calibrate_gaussians(means, covs, old, new, cfg, _gen(8))
    assert all(torch.equal(x, y) for x, y in zip(first[:2], second[:2]))
    assert not torch.equal(first[0], third[0])


def test_strong_contraction_keeps_covariances_positive_definite():
    means, covs, old = _world(c=3, d=16, n=200)
    cfg = _cfg(method="mean-shift", samples_per_class=4, sigma=0.05)
    _, c, info = calibrate_gaussians(means, covs, old, 0.05 * old, cfg, _gen())
    assert torch.linalg.eigvalsh(c).min() > 0
    assert info["n_repaired"] >= 1  # S=4 < D=16: Sigma - 0.9975 Cov(u) is indefinite


def test_degenerate_inputs():
    means, covs, old = _world(c=1, d=4, n=1)
    m, c, _ = calibrate_gaussians(means, covs, old, old + 1.0, _cfg(), _gen())  # 1 class, 1 image
    torch.testing.assert_close(m, means + 1.0)
    torch.testing.assert_close(c, covs)
    m1, c1, _ = calibrate_gaussians(*_world(c=2, d=1, n=10)[:2], torch.ones(10, 1, dtype=F64),
                                 2 * torch.ones(10, 1, dtype=F64), _cfg(), _gen())  # D = 1
    assert m1.shape == (2, 1) and c1.shape == (2, 1, 1)
    empty_m, empty_c = torch.zeros(0, 4, dtype=F64), torch.zeros(0, 4, 4, dtype=F64)
    m0, c0, _ = calibrate_gaussians(empty_m, empty_c, old, old, _cfg(), _gen())
    assert m0.shape == (0, 4) and c0.shape == (0, 4, 4)
    with pytest.raises(ValueError, match="0 images"):
        calibrate_gaussians(means, covs, old[:0], old[:0], _cfg(), _gen())
    with pytest.raises(ValueError, match="bad value for samples_per_class: 1; must be >= 2"):
        _cfg(samples_per_class=1)
    with pytest.raises(ValueError, match="empty point cloud"):
        ot_plan(torch.zeros(0, 3), torch.zeros(4, 3))
    same = ot_plan(torch.ones(3, 2), torch.ones(2, 2)).plan  # all costs 0: the uniform plan
    torch.testing.assert_close(same, torch.full((3, 2), 1 / 6))


def test_wrong_shapes_raise_clear_errors():
    means, covs, old = _world()
    with pytest.raises(ValueError, match="covs must be"):
        calibrate_gaussians(means, covs[:, :3], old, old, _cfg(), _gen())
    with pytest.raises(ValueError, match="old_feats and new_feats"):
        calibrate_gaussians(means, covs, old, old[:-1], _cfg(), _gen())
    with pytest.raises(ValueError, match="old_feats and new_feats"):
        calibrate_gaussians(means, covs, old[:, :4], old[:, :4], _cfg(), _gen())
    with pytest.raises(ValueError, match="means must be"):
        calibrate_gaussians(means[0], covs, old, old, _cfg(), _gen())
    with pytest.raises(ValueError, match="dtype"):
        calibrate_gaussians(means, covs, old.float(), old.float(), _cfg(), _gen())
    with pytest.raises(ValueError, match="delta must match"):
        transfer_drift_ot(old[:5], old, old[:, :2])
    with pytest.raises(ValueError, match=r"expected x \(n, D\)"):
        ot_plan(old, old[:, :2])
    with pytest.raises(ValueError, match="bad value for method: 'sdc'; choose one of: none, mean-shift, ot"):
        _cfg(method="sdc")
    with pytest.raises(ValueError, match="bad value for solver: 'emd'; choose one of"):
        _cfg(solver="emd")


def test_bench_reports_figures():
    out = bench_ot(n_classes=3, samples=8, n_feats=40, dim=8, repeats=3)
    assert out["seconds"] > 0 and out["iterations"] >= 1 and out["dim"] == 8 and out["solver"] == "sinkhorn"
    assert len(out["runs"]) == 3 and out["seconds"] == sorted(out["runs"])[1]  # the median call


@pytest.mark.parametrize("relax", [None, 0.03])
def test_plan_solves_the_problem_on_the_cost_scaled_to_max_one(relax):
    """ot_plan folds the cost's scaling into reg (and relax): same plan as POT on M / max(M) with reg."""
    import ot

    x = torch.randn(30, 6, generator=_gen(3), dtype=F64) * 3.0
    y = torch.randn(20, 6, generator=_gen(4), dtype=F64) + 0.5
    cost = squared_distances(x, y, normalize=False)
    scaled = cost / cost.max()
    a, b = torch.full((30,), 1 / 30, dtype=F64), torch.full((20,), 1 / 20, dtype=F64)
    if relax is None:
        ref = ot.sinkhorn(a, b, scaled, 0.05, numItermax=5000, stopThr=1e-12)
    else:
        ref = ot.unbalanced.sinkhorn_unbalanced(a, b, scaled, 0.05, reg_m=(float("inf"), relax),
                                                numItermax=5000, stopThr=1e-12)
    got = ot_plan(x, y, 0.05, normalize=False, relax=relax, max_iter=5000, tol=1e-10).plan
    assert cost.max() > 10  # the scaling matters: reg on the raw cost would give another plan
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=1e-6)


def test_semi_relaxed_plan_keeps_rows_and_tends_to_balanced():
    x = torch.randn(40, 5, generator=_gen(1), dtype=F64)
    y = torch.randn(30, 5, generator=_gen(2), dtype=F64) + 1.0
    balanced = ot_plan(x, y, 0.05, solver="sinkhorn_log", tol=1e-9, max_iter=5000).plan
    loose = ot_plan(x, y, 0.05, solver="sinkhorn_log", relax=0.01).plan
    tight = ot_plan(x, y, 0.05, solver="sinkhorn_log", relax=1e4, tol=1e-9, max_iter=5000).plan
    rows = torch.full((40,), 1 / 40, dtype=F64)
    torch.testing.assert_close(loose.sum(1), rows, atol=1e-8, rtol=0)  # every sample sends its mass
    cols = torch.full((30,), 1 / 30, dtype=F64)
    assert (loose.sum(0) - cols).abs().max() > 10 * (tight.sum(0) - cols).abs().max()  # columns relaxed
    torch.testing.assert_close(tight, balanced, atol=1e-4, rtol=0)


def test_semi_relaxed_recovers_constant_shift():
    means, covs, old = _world()
    cfg = _cfg(method="ot", relax=0.03, samples_per_class=16, solver="sinkhorn_log")
    m, c, _ = calibrate_gaussians(means, covs, old, old + 1.5, cfg, _gen())
    torch.testing.assert_close(m, means + 1.5, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(c, covs, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("method", ["mean-shift", "ot"])
def test_class_level_recovers_constant_shift_and_keeps_covariances(method):
    means, covs, old = _world()
    cfg = _cfg(method=method, level="class")
    m, c, _ = calibrate_gaussians(means, covs, old, old + 2.0, cfg, None)  # no samples: no generator needed
    torch.testing.assert_close(m, means + 2.0, atol=1e-12, rtol=1e-12)
    assert torch.equal(c, covs) and c is not covs


@pytest.mark.parametrize("relax", [None, 0.03])
def test_class_level_moves_each_class_with_its_region(relax):
    """Two well separated regions drift in opposite directions: each class follows its own region."""
    d = 4
    means = torch.tensor([[5.0, 0, 0, 0], [-5.0, 0, 0, 0]], dtype=F64)
    covs = torch.eye(d, dtype=F64).expand(2, d, d).clone()
    g = _gen()
    old = torch.cat([means[0] + 0.3 * torch.randn(50, d, generator=g, dtype=F64),
                     means[1] + 0.3 * torch.randn(50, d, generator=g, dtype=F64)])
    up, down = torch.tensor([0, 1.0, 0, 0], dtype=F64), torch.tensor([0, -1.0, 0, 0], dtype=F64)
    new = old + torch.cat([up.expand(50, d), down.expand(50, d)])
    cfg = _cfg(method="ot", level="class", relax=relax, normalize_cost=False, solver="sinkhorn_log",
                            reg=0.01)
    m, _, _ = calibrate_gaussians(means, covs, old, new, cfg, None)
    torch.testing.assert_close(m - means, torch.stack([up, down]), atol=1e-3, rtol=0)


def test_bench_reports_the_level():
    out = bench_ot(n_classes=4, samples=8, n_feats=40, dim=8, repeats=1, cfg=_cfg(level="class"))
    assert out["level"] == "class" and out["seconds"] > 0


# ---- the linear drift map and OT + linear map: means and covariances in closed form [beyond the paper]
def _affine(d: int = 5, seed: int = 3):
    g = _gen(seed)
    a = torch.eye(d, dtype=F64) + 0.3 * torch.randn(d, d, generator=g, dtype=F64)
    return a, torch.randn(d, generator=g, dtype=F64)


def test_linear_drift_map_recovers_an_exact_affine_map():
    means, covs, old = _world(d=5, n=400)
    a, b = _affine()
    fit_a, fit_b = fit_linear_drift(old, old @ a.T + b, 1e-10)
    torch.testing.assert_close(fit_a, a, atol=1e-6, rtol=0)
    torch.testing.assert_close(fit_b, b, atol=1e-6, rtol=0)
    out = calibrate_gaussians(means, covs, old, old @ a.T + b, _cfg(method="linear", linear_ridge=1e-10), None)
    torch.testing.assert_close(out.means, means @ a.T + b, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.covs, a @ covs @ a.T, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.covs, out.covs.transpose(1, 2), atol=0, rtol=0)  # exactly symmetric


@pytest.mark.parametrize("method", ["linear", "ot+linear"])
@pytest.mark.parametrize("diag", [False, True])
def test_linear_maps_recover_a_constant_shift_exactly(method, diag):
    """A constant drift c: A = I whatever the ridge, so mu' = mu + c and Sigma' = Sigma."""
    means, covs, old = _world(diag=diag)
    c = torch.linspace(-1, 1, means.shape[1], dtype=F64)
    out = calibrate_gaussians(means, covs, old, old + c, _cfg(method=method, linear_ridge=0.1), None)
    torch.testing.assert_close(out.means, means + c, atol=1e-9, rtol=0)
    torch.testing.assert_close(out.covs, covs, atol=1e-9, rtol=0)
    assert out.info["n_repaired"] == 0


def test_linear_map_covariances_stay_symmetric_positive_definite_under_a_collapse():
    """A map that collapses directions (rank 2 of 5) would leave A Sigma A^T singular: the floor keeps
    every covariance symmetric positive definite; float32 in, float32 out."""
    means, covs, old = _world(d=5, n=300, dtype=torch.float32)
    proj = torch.zeros(5, 5)
    proj[0, 0] = proj[1, 1] = 1.0
    out = calibrate_gaussians(means, covs, old, old @ proj.T, _cfg(method="linear", linear_ridge=1e-6), None)
    assert out.covs.dtype == torch.float32 and out.info["n_repaired"] == means.shape[0]
    assert torch.equal(out.covs, out.covs.transpose(1, 2))
    assert bool((torch.linalg.eigvalsh(out.covs.double()) > 0).all())
    GaussianBank().set_stats(0, out.means[0], out.covs[0])  # the memory can sample it (Cholesky succeeds)


def test_linear_map_moves_covariances_where_class_level_ot_cannot():
    """Under a linear drift, class-level OT keeps every covariance as it was; the linear map (and OT +
    linear map) brings them to A Sigma A^T, and the OT + linear map keeps OT's means."""
    means, covs, old = _world(d=5, n=400)
    a, b = _affine()
    truth = a @ covs @ a.T
    err = {}
    for method in ("ot", "linear", "ot+linear"):
        out = calibrate_gaussians(means, covs, old, old @ a.T + b, _cfg(method=method, level="class",
                                                                        linear_ridge=1e-3), None)
        err[method] = float((out.covs - truth).norm() / truth.norm())
        if method == "ot":
            ot_means = out.means
        if method == "ot+linear":
            torch.testing.assert_close(out.means, ot_means, atol=1e-12, rtol=0)
    assert err["ot"] > 0.3 and err["linear"] < 0.01 and err["ot+linear"] < 0.01, err


def test_linear_calibrations_are_registered_and_checked():
    from dmc.calibration import LinearMap, OTLinear, make_calibration
    from dmc.config.checks import BadValue

    assert type(make_calibration(CalibrationConfig(method="linear"))) is LinearMap
    assert type(make_calibration(CalibrationConfig(method="ot+linear"))) is OTLinear
    with pytest.raises(BadValue, match="linear_ridge"):
        CalibrationConfig(method="linear", linear_ridge=0.0)
    with pytest.raises(ValueError, match="paired"):
        fit_linear_drift(torch.zeros(4, 3, dtype=F64), torch.zeros(5, 3, dtype=F64), 0.1)
