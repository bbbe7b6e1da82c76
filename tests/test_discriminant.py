"""Gaussian discriminant read-outs against torch.distributions and closed forms."""
import pytest
import torch

from dmc.discriminant import gaussian_factors, lda_scores, lda_weights, qda_scores, shrink_to_identity


def _random_stats(c=4, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(c, d, generator=g, dtype=torch.float64)
    a = torch.randn(c, d, d, generator=g, dtype=torch.float64)
    covs = a @ a.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return means, covs


def test_shrinkage_keeps_the_trace_and_moves_toward_the_scaled_identity():
    _, covs = _random_stats()
    out = shrink_to_identity(covs, 0.3)
    tr = torch.diagonal(covs, dim1=1, dim2=2).sum(1)
    assert torch.allclose(torch.diagonal(out, dim1=1, dim2=2).sum(1), tr)
    full = shrink_to_identity(covs, 1.0)
    assert torch.allclose(full, (tr / 6)[:, None, None] * torch.eye(6, dtype=torch.float64))
    assert torch.equal(shrink_to_identity(covs, 0.0), covs)
    with pytest.raises(ValueError):
        shrink_to_identity(covs, 1.5)


def test_qda_scores_are_gaussian_log_likelihoods_up_to_one_constant():
    means, covs = _random_stats()
    x = torch.randn(10, 6, dtype=torch.float64)
    mu, chol, logdet = gaussian_factors(means, covs, 0.0)
    scores = qda_scores(x, mu, chol, logdet).double()  # (10, 4)
    ref = torch.stack([torch.distributions.MultivariateNormal(means[c], covs[c]).log_prob(x) for c in range(4)], 1)
    gap = scores - ref  # the constant D/2 log(2 pi)
    log_two_pi = torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
    assert torch.allclose(gap, torch.full_like(gap, 3 * log_two_pi), atol=1e-4)
    maha = qda_scores(x, mu, chol, None).double()
    assert torch.allclose(maha - scores, 0.5 * logdet[None, :].expand(10, 4), atol=1e-4)


def test_lda_is_qda_with_one_shared_covariance_minus_what_every_class_shares():
    means, covs = _random_stats()
    x = torch.randn(10, 6, dtype=torch.float64)
    w, b = lda_weights(means, covs, 0.2)
    pooled = shrink_to_identity(covs.mean(0), 0.2).expand(4, 6, 6)
    mu, chol, logdet = gaussian_factors(means, pooled, 0.0)
    qda = qda_scores(x, mu, chol, logdet).double()
    lin = lda_scores(x, w, b).double()
    quad = -0.5 * (x @ torch.linalg.solve(pooled[0], x.T)).diagonal()  # the x^T Sigma^-1 x term, per row
    assert torch.allclose(qda - lin, (quad - 0.5 * logdet[0])[:, None].expand(10, 4), atol=1e-4)
    assert torch.equal(qda.argmax(1), lin.argmax(1))


def test_student_t_scores_are_multivariate_t_log_densities_up_to_one_constant():
    from scipy.stats import multivariate_t

    from dmc.discriminant import student_t_scores

    means, covs = _random_stats()
    x = torch.randn(10, 6, dtype=torch.float64)
    mu, chol, logdet = gaussian_factors(means, covs, 0.0)
    for dof in (3.0, 20.0):
        scores = student_t_scores(x, mu, chol, logdet, dof).double()  # (10, 4)
        ref = torch.stack([torch.as_tensor(multivariate_t(means[c].numpy(), covs[c].numpy(), df=dof).logpdf(x.numpy()))
                           for c in range(4)], 1)
        gap = scores - ref  # one constant of dof and D, the same for every class and sample
        assert torch.allclose(gap, torch.full_like(gap, float(gap[0, 0])), atol=1e-4)
    # many degrees of freedom: the Gaussian (QDA) scores
    far = student_t_scores(x, mu, chol, logdet, 1e7).double()
    assert torch.allclose(far, qda_scores(x, mu, chol, logdet).double(), atol=1e-3)
    with pytest.raises(ValueError):
        student_t_scores(x, mu, chol, logdet, 0.0)


def test_fused_scores_are_the_head_log_posterior_plus_weighted_cosines():
    from dmc.discriminant import fused_scores

    head = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    cos = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, -0.5]])
    got = fused_scores(head, cos, 4.0)
    want = torch.log(torch.softmax(head.double(), 1)) + 4.0 * cos.double()
    assert got.dtype == torch.float64 and torch.allclose(got, want)
    assert torch.equal(fused_scores(head, cos, 0.0).argmax(1), head.argmax(1))  # weight 0: the head alone


# ---- settings that follow the data [beyond the paper]
def test_oas_intensity_on_a_hand_computed_case_and_its_limits():
    """S = diag(2, 0), n = 7: tr S = 2, tr S^2 = 4, rho = (4 + 4) / (8 (4 - 4/2)) = 0.5; n = 3 gives
    8 / 8 = 1; a flat spectrum (S ~ I) needs no shrinkage estimate: rho = 1 (den = 0); more samples,
    less shrinkage; the scale of S does not matter."""
    from dmc.discriminant import oas_intensity

    s = torch.diag(torch.tensor([2.0, 0.0], dtype=torch.float64))
    assert float(oas_intensity(s, torch.tensor(7))) == pytest.approx(0.5, abs=1e-12)
    assert float(oas_intensity(s, torch.tensor(3))) == pytest.approx(1.0, abs=1e-12)
    assert float(oas_intensity(torch.eye(3, dtype=torch.float64), torch.tensor(10))) == 1.0
    _, covs = _random_stats(c=3, d=8)
    rho = oas_intensity(covs, torch.tensor([5, 50, 500]))
    assert rho.shape == (3,) and bool((rho > 0).all()) and bool((rho <= 1).all())
    torch.testing.assert_close(oas_intensity(covs * 7.0, torch.tensor([5, 50, 500])), rho)
    many = oas_intensity(covs, torch.tensor([500, 500, 500]))
    assert bool((many < oas_intensity(covs, torch.tensor([5, 5, 5]))).all())


def test_oas_intensity_matches_scikit_learn():
    sklearn_cov = pytest.importorskip("sklearn.covariance")
    from dmc.discriminant import oas_intensity

    g = torch.Generator().manual_seed(1)
    for n, d in ((40, 10), (8, 20)):  # more samples than dimensions, and fewer
        x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, d, dtype=torch.float64)
        _, want = sklearn_cov.oas(x.numpy())
        got = oas_intensity(torch.cov(x.T), torch.tensor(n))  # the unbiased S: same intensity (scale-free)
        assert float(got) == pytest.approx(want, rel=1e-9)


def test_oas_head_gives_a_class_with_fewer_samples_than_dimensions_a_positive_definite_covariance():
    from dmc.discriminant import build_head, head_scores, head_shrinkage

    g = torch.Generator().manual_seed(2)
    d = 20
    x = torch.randn(2, 5, d, generator=g, dtype=torch.float64)  # 2 classes of n = 5 <= D samples
    covs = torch.stack([torch.cov(x[i].T) for i in range(2)])  # (2, D, D), rank 4: singular
    means = x.mean(1)
    with pytest.raises(RuntimeError):
        torch.linalg.cholesky(covs)
    rho = head_shrinkage(covs, torch.tensor([5, 5]), "oas", 0.02)
    assert rho.shape == (2,) and bool((rho > 0.1).all())
    head = build_head(means, covs, "t", 0.02, counts=torch.tensor([5, 5]), rule="oas")
    assert bool((torch.diagonal(head.factors[1], dim1=1, dim2=2) > 0).all())
    assert torch.isfinite(head_scores(x[0], head, 20.0)).all()
    lda = build_head(means, covs, "lda", 0.02, counts=torch.tensor([5, 5]), rule="oas")
    assert lda.factors[0].shape == (2, d)
    with pytest.raises(ValueError, match="sample count"):
        build_head(means, covs, "qda", 0.02, rule="oas")


def test_per_class_shrinkage_is_the_fixed_one_class_by_class():
    _, covs = _random_stats()
    gammas = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    per = shrink_to_identity(covs, gammas)
    for i, gm in enumerate(gammas.tolist()):
        torch.testing.assert_close(per[i], shrink_to_identity(covs[i], gm), atol=1e-14, rtol=0)
    with pytest.raises(ValueError):
        shrink_to_identity(covs, torch.tensor([0.1, 2.0, 0.1, 0.1]))


def test_head_scale_keeps_the_fusion_balance_across_widths():
    """"dim": the identity at D = 128 and a temperature D / 128 elsewhere, so a head whose scores grow
    with D (each of D dimensions adding its term) gives the same log-posterior at any width; "std":
    unit standard deviation per image; "none": untouched."""
    from dmc.discriminant import scaled_head

    g = torch.Generator().manual_seed(0)
    per_dim = torch.randn(6, 4, 512, generator=g, dtype=torch.float64)  # (N, C, D) per-dimension terms
    at128 = per_dim[:, :, :128].sum(-1) * 4.0  # a head at width 128 whose terms are 4x larger ...
    at512 = per_dim[:, :, :128].repeat(1, 1, 4).sum(-1)  # ... and the same terms at width 512
    torch.testing.assert_close(scaled_head(at512, "dim", 512) * 4.0, at128)
    assert torch.equal(scaled_head(at128, "dim", 128), at128) and scaled_head(at128, "none", 128) is at128
    z = scaled_head(at512, "std", 512)
    torch.testing.assert_close(z.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(6, dtype=torch.float64))
    with pytest.raises(ValueError):
        scaled_head(at128, "both", 128)
