"""The analytic read-out (RanPAC): incremental statistics equal the solve on all data at once, whatever the
task order; lambda selection on its path of solutions; the projection lives in the checkpoint as a seed."""
import torch

from dmc.analytic import (RIDGE_GRID, class_means, one_hot, random_features, random_projection, ridge_path,
                          ridge_solve, ridge_sums, select_ridge)
from dmc.methods.ranpac import RidgeReadout

D, M, C = 8, 40, 6


def _tasks(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three tasks of features (N, D) with labels: classes {0, 1}, {2, 3}, {4, 5}, 15 images each."""
    g = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(C, D, generator=g)
    out = []
    for t in range(3):
        labels = torch.arange(2 * t, 2 * t + 2).repeat_interleave(15)
        out.append((centres[labels] + torch.randn(len(labels), D, generator=g), labels))
    return out


def _accumulate(tasks, seed: int = 7) -> RidgeReadout:
    readout = RidgeReadout(D, M, seed)
    for x, y in tasks:
        readout.grow(int(y.max()) + 1)
        readout.add(x, y)
    return readout


def test_incremental_solution_equals_the_closed_form_on_all_data():
    tasks = _tasks()
    readout = _accumulate(tasks)
    readout.set_ridge(0.3)
    x = torch.cat([t[0] for t in tasks])
    y = torch.cat([t[1] for t in tasks])
    h = random_features(x, random_projection(D, M, 7))  # (90, M)
    target = one_hot(y, C)  # (90, C)
    # the dual closed form W = h^T (h h^T + lam I)^-1 Y: another system (N x N) than the one solved (M x M)
    dual = h.T @ torch.linalg.solve(h @ h.T + 0.3 * torch.eye(len(h), dtype=torch.float64), target)
    torch.testing.assert_close(readout.weights(), dual, rtol=1e-9, atol=1e-11)
    assert readout.gram.dtype == torch.float64 and readout.q.shape == (M, C)


def test_the_last_task_does_not_depend_on_task_order():
    tasks = _tasks()
    forward, backward = _accumulate(tasks), _accumulate(tasks[::-1])
    torch.testing.assert_close(forward.gram, backward.gram, rtol=1e-13, atol=1e-11)
    torch.testing.assert_close(forward.q, backward.q, rtol=0, atol=1e-11)
    for r in (forward, backward):
        r.set_ridge(1.0)
    torch.testing.assert_close(forward.weights(), backward.weights(), rtol=1e-10, atol=1e-12)


def test_ridge_path_equals_one_solve_per_lambda():
    g = torch.Generator().manual_seed(1)
    for n in (30, 80):  # fewer and more rows than features (M = 40): both sides of the SVD
        h = torch.relu(torch.randn(n, M, generator=g, dtype=torch.float64))
        y = one_hot(torch.randint(0, 3, (n,), generator=g), 3)
        h_eval = torch.rand(5, M, generator=g, dtype=torch.float64)
        gram, q = ridge_sums(h, y)
        for lam, pred in zip((1e-3, 1.0, 1e3), ridge_path(h, y, h_eval, (1e-3, 1.0, 1e3))):
            torch.testing.assert_close(pred, h_eval @ ridge_solve(gram, q, lam), rtol=1e-7, atol=1e-10)


def test_select_ridge_prefers_little_ridge_for_clean_targets_and_much_for_noise():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(400, 10, generator=g, dtype=torch.float64)
    clean = h @ torch.randn(10, 3, generator=g, dtype=torch.float64)  # exactly linear: no ridge is best
    lam, errors = select_ridge(h, clean, generator=torch.Generator().manual_seed(0))
    assert lam == RIDGE_GRID[0] and len(errors) == len(RIDGE_GRID) and errors[0] < 1e-12
    noise = torch.randn(400, 3, generator=g, dtype=torch.float64)  # unrelated to h: shrink everything
    lam, _ = select_ridge(h, noise, generator=torch.Generator().manual_seed(0))
    assert lam >= 1e2


def test_projection_is_kept_as_a_seed_and_regenerated_after_loading():
    tasks = _tasks()
    trained = _accumulate(tasks, seed=11)
    state = trained.state_dict()
    assert set(state) == {"gram", "q", "lam", "seed"} and int(state["seed"]) == 11  # no (D, M) matrix
    fresh = RidgeReadout(D, M, seed=999)
    fresh.grow(C)
    fresh.load_state_dict(state)
    x = tasks[0][0]
    assert torch.equal(fresh.features(x), trained.features(x))
    torch.testing.assert_close(fresh.weights(), trained.weights(), rtol=0, atol=0)
    assert torch.equal(random_projection(D, M, 11), random_projection(D, M, 11))
    assert not torch.equal(random_projection(D, M, 11), random_projection(D, M, 12))


def test_class_means_are_normalised_means_of_normalised_features():
    x = torch.tensor([[3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    means = class_means(x, torch.tensor([0, 0, 1]), [1, 0])
    torch.testing.assert_close(means, torch.tensor([[2 ** -0.5, 2 ** -0.5], [2 ** -0.5, 2 ** -0.5]],
                                                   dtype=torch.float64))


def test_bench_ridge_times_each_stage_of_a_task():
    from dmc.bench import bench_ridge

    out = bench_ridge(dim_in=8, dim=32, n=50, classes=4, new=2)
    assert out["dim"] == 32 and out["n"] == 50 and out["gram_mb"] == 0  # 32^2 float64: 8 KB
    stages = [out[k] for k in ("features_and_sums_s", "select_s", "solve_s")]
    assert all(t >= 0 for t in stages) and abs(out["total_s"] - sum(stages)) < 0.05
