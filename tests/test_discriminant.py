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
