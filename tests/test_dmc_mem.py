"""`dmc-ot-mem` [beyond the paper]: DMC-OT's training, a discriminant head on its memory fused with the
text classifier, and the stage-1 schedules."""
import json
import math

import pytest
import torch

from dmc import config
from dmc.config.checks import BadValue
from dmc.data.benchmark import make_benchmark
from dmc.discriminant import shrink_to_identity
from dmc.engine.loop import load_datasets, make_task, run
from dmc.memory.gaussian import fit_gaussian
from dmc.methods import METHODS
from dmc.models.clip import build_backbone
from dmc.training.runtime import make_runtime
from tests.helpers import tiny_cfg

RT = make_runtime("cpu", "fp32", progress=False)


def _method(**extra):
    cfg = tiny_cfg("dmc-ot-mem", **extra)
    bench = make_benchmark(cfg, cfg.seed)
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    data = load_datasets(cfg, bench, backbone)
    return METHODS.get("dmc-ot-mem")(cfg, backbone, bench, RT), bench, data, cfg


def _tasks(m, bench, data, cfg, n):
    """Train the first n tasks; per task, the tower's weights and the memory after it."""
    states = []
    for t in range(n):
        task = make_task(t, bench, data, cfg.seed)
        m.begin_task(task)
        m.train_task(task)
        states.append(({k: v.clone() for k, v in m.model.visual.state_dict().items()},
                       {c: (m.bank.means([c])[0].clone(), m.bank.covs([c])[0].clone()) for c in m.bank.classes()}))
    return states, task


def test_with_no_head_it_is_dmc_ot_exactly(tmp_path):
    """The same training as DMC-OT: with memhead.kind=none every accuracy equals DMC-OT's."""
    a = run(tiny_cfg("dmc-ot"), out=tmp_path / "ot", rt=RT)
    b = run(tiny_cfg("dmc-ot-mem", memhead__kind="none"), out=tmp_path / "mem", rt=RT)
    ra, rb = (json.loads((d / "summary.json").read_text())["acc_matrix"] for d in (a, b))
    assert ra == rb


def test_qda_head_is_the_gaussian_log_likelihood_of_the_memory():
    """With a frozen tower the memory holds every class's exact statistics (nothing calibrated), and the
    head's scores are the multivariate normal log-densities of those statistics, shrunk by gamma."""
    gamma = 0.1
    m, bench, data, cfg = _method(memhead__kind="qda", memhead__stage1="none", memhead__gamma=gamma,
                                  memhead__text_weight=0.0)
    states, task = _tasks(m, bench, data, cfg, 2)
    assert all(torch.equal(states[0][0][k], states[1][0][k]) for k in states[0][0]), "stage1=none: tower frozen"
    feats, labels = m.encode(task.reference(bench.tasks[0]), "old classes")
    for c in bench.tasks[0]:  # old classes: exact statistics, never calibrated
        mean, cov = fit_gaussian(feats[labels == c], cfg.memory)
        assert torch.allclose(m.bank.means([c])[0], mean.float(), atol=1e-5)
        assert torch.equal(states[0][1][c][1], states[1][1][c][1])
    seen = task.seen
    classifier = m.classifier(seen)
    x = feats[:7]
    got = classifier.head(x).double()  # (7, C)
    covs = shrink_to_identity(m.bank.covs(seen).double(), gamma)
    want = torch.stack([torch.distributions.MultivariateNormal(mu.double(), cov).log_prob(x.double())
                        for mu, cov in zip(m.bank.means(seen), covs)], dim=1)
    d = x.shape[1]
    assert torch.allclose(got - 0.5 * d * math.log(2 * math.pi), want, rtol=1e-4, atol=1e-3)
    fused = classifier(x)  # text_weight 0: the head's log-posterior alone
    assert torch.allclose(fused.double(), torch.log_softmax(want, 1), atol=1e-3)


def test_t_head_is_the_student_t_log_density_of_the_memory():
    """memhead.kind=t reads the same (shrunk) statistics as multivariate t densities with memhead.dof
    degrees of freedom: equal to scipy's log-densities up to one constant."""
    from scipy.stats import multivariate_t

    gamma, dof = 0.1, 7.0
    m, bench, data, cfg = _method(memhead__kind="t", memhead__dof=dof, memhead__gamma=gamma)
    _, task = _tasks(m, bench, data, cfg, 1)
    seen = task.seen
    x, _ = m.encode(task.train_plain, "features")
    x = x[:9]
    got = m.gaussian_head(seen)(x).double()  # (9, C)
    covs = shrink_to_identity(m.bank.covs(seen).double(), gamma)
    want = torch.stack([torch.as_tensor(multivariate_t(mu.double().numpy(), cov.numpy(), df=dof)
                                        .logpdf(x.double().numpy()))
                        for mu, cov in zip(m.bank.means(seen), covs)], dim=1)
    gap = got - want
    assert torch.allclose(gap, torch.full_like(gap, float(gap[0, 0])), atol=1e-3)


def test_text_weight_fuses_the_two_classifiers():
    m, bench, data, cfg = _method(memhead__kind="lda", memhead__text_weight=2.5)
    _, task = _tasks(m, bench, data, cfg, 1)
    classifier = m.classifier(task.seen)
    with torch.no_grad():
        protos = m.prompts(task.seen)  # (C, D): DMC-OT's text classifier
    x, _ = m.encode(task.train_plain, "features")
    cos = torch.nn.functional.normalize(x, dim=-1) @ protos.t()
    want = torch.log_softmax(m.gaussian_head(task.seen)(x).double(), 1) + 2.5 * cos.double()
    assert torch.allclose(classifier(x).double(), want, atol=1e-4)
    assert classifier(x).shape == (len(x), len(task.seen))
    three = m.classifier(task.seen[:3])  # a classifier per set of classes: the head's posterior over those three
    want3 = torch.log_softmax(m.gaussian_head(task.seen[:3])(x).double(), 1) + 2.5 * cos[:, :3].double()
    assert torch.allclose(three(x).double(), want3, atol=1e-4)


def test_stage1_first_adapts_once_and_then_calibrates_nothing():
    m, bench, data, cfg = _method(memhead__stage1="first")
    states, _ = _tasks(m, bench, data, cfg, 3)
    (v0, mem0), (v1, mem1), (v2, mem2) = states
    assert all(torch.equal(v0[k], v1[k]) and torch.equal(v1[k], v2[k]) for k in v0), "frozen after task 1"
    for c in mem0:  # the first task's statistics are never moved
        assert torch.equal(mem0[c][0], mem2[c][0]) and torch.equal(mem0[c][1], mem2[c][1])
    m2, bench2, data2, cfg2 = _method(memhead__stage1="every")
    (w0, _), (w1, _) = _tasks(m2, bench2, data2, cfg2, 2)[0]
    assert any(not torch.equal(w0[k], w1[k]) for k in w0), "stage1=every adapts on every task"


@pytest.mark.parametrize("key, value, says", [("memhead.kind", "knn", "choose one of"),
                                              ("memhead.stage1", "last", "choose one of"),
                                              ("memhead.gamma", 1.0, "must be in [0, 1)"),
                                              ("memhead.dof", 0.0, "must be > 0")])
def test_bad_settings_fail_in_one_line(key, value, says):
    with pytest.raises(BadValue, match=says.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        config.resolve("synthetic", "dmc-ot-mem", {key: value})


def test_text_only_needs_a_text_weight():
    with pytest.raises(BadValue, match="needs text_weight > 0"):
        config.resolve("synthetic", "dmc-ot-mem", {"memhead.kind": "none", "memhead.text_weight": 0.0})
