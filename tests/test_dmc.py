"""DMC's stages touch only what they should; each ablation switch does what it says."""
import json

import pytest
import torch

from dmc.data.benchmark import make_benchmark
from dmc.engine.loop import load_datasets, make_task, run
from dmc.training.runtime import make_runtime
from dmc.methods import METHODS
from dmc.methods.stages import train_prompts, train_vision
from dmc.models.clip import build_backbone
from tests.helpers import tiny_cfg

RT = make_runtime("cpu", "fp32", progress=False)


def _setup(method="dmc", **extra):
    cfg = tiny_cfg(method, **extra)
    bench = make_benchmark(cfg, cfg.seed)
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    data = load_datasets(cfg, bench, backbone)
    return METHODS.get(method)(cfg, backbone, bench, RT), bench, data, cfg


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _largest_change(after, before):
    return max((after[k] - before[k]).abs().max().item() for k in after
               if after[k].is_floating_point() and after[k].numel())


def _text_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("visual.")}


def test_stage1_moves_only_vision_and_stage2_only_prompts():
    m, bench, data, cfg = _setup()
    task = make_task(0, bench, data, cfg.seed)
    m.begin_task(task)
    text0, vis0, prm0 = _text_state(m.model), _snapshot(m.model.visual), _snapshot(m.prompts)
    train_vision(m.model.visual, m.anchors(task.classes), task.classes, task, cfg.vision, RT, m.scale())
    vis1 = _snapshot(m.model.visual)
    assert not _same(vis0, vis1), "stage 1 must adapt the image tower"
    assert _same(prm0, _snapshot(m.prompts)), "stage 1 must leave the prompts untouched"
    assert _same(text0, _text_state(m.model)), "the text tower is always frozen"
    feats, labels = m.encode(task.train_plain, "features")
    orig_forward = m.model.visual.forward
    m.model.visual.forward = lambda *a, **k: (_ for _ in ()).throw(AssertionError("stage 2 ran the image encoder"))
    try:
        train_prompts(m.prompts, feats, labels, task.seen, task, cfg.prompt, RT, m.scale())
    finally:
        m.model.visual.forward = orig_forward
    assert _same(vis1, _snapshot(m.model.visual)), "stage 2 must not touch the image tower"
    assert _same(text0, _text_state(m.model))
    assert not _same(prm0, _snapshot(m.prompts)), "stage 2 must learn the prompts"


@pytest.mark.parametrize("switch, frozen", [("vision__enabled", "visual"), ("prompt__enabled", "prompts")])
def test_stage_switches(switch, frozen):
    m, bench, data, cfg = _setup(**{switch: False})
    task = make_task(0, bench, data, cfg.seed)
    m.begin_task(task)
    module = m.model.visual if frozen == "visual" else m.prompts
    before = _snapshot(module)
    m.train_task(task)
    assert _same(before, _snapshot(module))
    assert m.bank.classes() == sorted(task.classes)


def test_replay_switch_and_memory_growth(monkeypatch):
    for enabled in (True, False):
        m, bench, data, cfg = _setup(replay__enabled=enabled)
        calls = []
        original = m.bank.sample
        monkeypatch.setattr(m.bank, "sample", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
        for t in range(2):
            task = make_task(t, bench, data, cfg.seed)
            m.begin_task(task)
            m.train_task(task)
        assert bool(calls) == enabled
        if enabled:
            assert all(sorted(c) == sorted(bench.tasks[0]) for c in calls)
        assert m.bank.classes() == sorted(bench.tasks[0] + bench.tasks[1])


def test_calibration_moves_old_statistics_only_with_ot():
    for method, expect_change in (("dmc", False), ("dmc-ot", True)):
        m, bench, data, cfg = _setup(method)
        for t in range(2):
            task = make_task(t, bench, data, cfg.seed)
            m.begin_task(task)
            if t == 1:
                stored = m.bank.means(bench.tasks[0]).clone()
            m.train_task(task)
        changed = not torch.allclose(stored, m.bank.means(bench.tasks[0]))
        assert changed == expect_change, method


def test_task_tokens_and_drift_diagnostics_in_a_run(tmp_path):
    out = run(tiny_cfg("dmc-ot", diagnostics__drift=True), out=tmp_path / "r", rt=RT)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert "drift" not in recs[0]
    for rec in recs[1:]:
        d = rec["drift"]
        assert set(d) >= {"stored", "calibrated"} and d["stored"] >= 0 and d["calibrated"] >= 0
    from safetensors.torch import load_file

    state = load_file(str(out / "checkpoints" / "task_03.safetensors"))
    assert {"prompt.task_ctx.0", "prompt.task_ctx.2"} <= set(state)
    assert any(k.startswith("memory.") for k in state) and any(k.startswith("visual.") for k in state)


def test_cotrain_trains_prompts_with_the_prompt_settings(monkeypatch):
    m, bench, data, cfg = _setup("cotrain", prompt__lr=0.05, vision__lr=1e-9)
    task = make_task(0, bench, data, cfg.seed)
    m.begin_task(task)
    group = m.prompt_group()
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.0
    assert {id(p) for p in group["params"]} == {id(p) for p in m.prompts.parameters()}
    prm0, vis0 = _snapshot(m.prompts), _snapshot(m.model.visual)
    m.train_task(task)
    prm_step = _largest_change(_snapshot(m.prompts), prm0)
    vis_step = _largest_change(_snapshot(m.model.visual), vis0)
    assert prm_step > 1e-3 > 1e-5 > vis_step  # the prompts move at their own lr, not the tower's


def test_fit_groups_have_their_own_learning_rate():
    from dmc.training.fit import fit

    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    batches = lambda epoch: [None] * 4  # noqa: E731
    fit([a], batches, lambda _: (a.sum() + b.sum()), 1, 0.1, RT, groups=[{"params": [b], "lr": 0.0}])
    assert not torch.equal(a.detach(), torch.ones(3)) and torch.equal(b.detach(), torch.ones(3))


def test_feature_distillation_and_weight_averaging_restrain_stage1():
    def drift(**extra):
        m, bench, data, cfg = _setup("dmc", vision__lr=1e-3, **extra)
        for t in range(2):
            task = make_task(t, bench, data, cfg.seed)
            m.begin_task(task)
            if t == 1:
                before = _snapshot(m.model.visual)
            m.train_task(task)
        return _largest_change(_snapshot(m.model.visual), before)

    free = drift()
    assert drift(vision__average=0.5) == pytest.approx(free / 2, rel=0.05)  # theta = 0.5 new + 0.5 old
    assert drift(vision__average=0.0) == 0.0
    assert drift(vision__distill=100.0) < free


def test_oracle_statistics_replace_the_stored_ones():
    from dmc.engine.diagnostics import observers

    m, bench, data, cfg = _setup("dmc-ot", diagnostics__oracle_stats=True, vision__lr=1e-3)
    m.observers = observers(cfg)  # what the loop attaches
    for t in range(2):
        task = make_task(t, bench, data, cfg.seed)
        m.begin_task(task)
        m.train_task(task)
    old = bench.tasks[0]
    feats, labels = m.encode(task.reference(old), "true")
    true_means = torch.stack([feats[labels == c].double().mean(0) for c in old])
    torch.testing.assert_close(m.bank.means(old).double(), true_means, atol=1e-5, rtol=1e-4)
