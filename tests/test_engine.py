import json

import numpy as np
import pytest
from safetensors.torch import load_file

from dmc.engine.loop import run
from dmc.training.runtime import make_runtime
from dmc.errors import UserError
from dmc.methods import METHODS
from tests.helpers import killed_copy, tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)
BASELINES = ["zeroshot", "finetune", "coop", "cotrain", "joint"]


@pytest.mark.parametrize("method", BASELINES)
def test_every_baseline_runs_a_three_task_sequence(method, tmp_path):
    out = run(tiny_cfg(method), out=tmp_path / "run", rt=QUIET)
    summary = json.loads((out / "summary.json").read_text())
    T = 1 if METHODS.get(method).single_task else 3
    assert summary["tasks"] == T and len(summary["acc_matrix"]) == T
    assert all(len(row) == T for row in summary["acc_matrix"])
    assert summary["acc_matrix"][0][T - 1] is None or T == 1
    assert 0.0 <= summary["last"] <= 100.0 and summary["avg"] == pytest.approx(np.mean(summary["incremental"]))
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == T
    rec = json.loads(lines[-1])
    assert rec["classes_seen"] == 12 and len(rec["acc_row"]) == T and "time_s" in rec
    assert (out / "accuracy.png").stat().st_size > 1000
    assert (out / "config.yaml").exists() and json.loads((out / "plan.json").read_text())["class_order"]
    ckpt = out / "checkpoints" / f"task_{T:02d}.safetensors"
    assert ckpt.exists()
    load_file(str(ckpt))


def test_finished_run_is_never_overwritten(tmp_path):
    out = run(tiny_cfg("zeroshot"), out=tmp_path / "run", rt=QUIET)
    before = (out / "summary.json").read_text()
    with pytest.raises(UserError, match="finished run"):
        run(tiny_cfg("zeroshot"), out=out, rt=QUIET)
    assert (out / "summary.json").read_text() == before


def test_resume_matches_uninterrupted_run_exactly(tmp_path):
    cfg = tiny_cfg("dmc-ot")
    full = run(cfg, out=tmp_path / "full", rt=QUIET)
    killed = killed_copy(full, tmp_path / "killed", finished_tasks=2)  # killed during task 3
    resumed = run(None, resume=killed, rt=QUIET)
    a = json.loads((full / "summary.json").read_text())["acc_matrix"]
    b = json.loads((resumed / "summary.json").read_text())["acc_matrix"]
    assert a == b
    full_last = load_file(str(full / "checkpoints" / "task_03.safetensors"))
    res_last = load_file(str(resumed / "checkpoints" / "task_03.safetensors"))
    assert full_last.keys() == res_last.keys()
    assert all((full_last[k] == res_last[k]).all() for k in full_last)


def test_glyph_run_config_records_fonts(tmp_path):
    import yaml

    from dmc import config

    cfg = config.resolve("glyphs", "zeroshot", {"model.backbone": "tiny", "benchmark.max_tasks": 1,
                                                "data.world.train_per_class": 2, "data.world.test_per_class": 2})
    out = run(cfg, out=tmp_path / "g", rt=QUIET)
    tree = yaml.safe_load((out / "config.yaml").read_text())
    fonts = tree["provenance"]["fonts"]
    assert {f["domain"] for f in fonts} == {"clean", "renditions"}
    assert all(len(f["sha256"]) == 64 for f in fonts)
    assert config.load(out / "config.yaml").benchmark.name == "glyphs"  # provenance is ignored on load


def _method_and_tasks(cls):
    from dmc.data.benchmark import make_benchmark
    from dmc.engine.loop import load_datasets, make_task
    from dmc.models.clip import build_backbone

    cfg = tiny_cfg("zeroshot")
    bench = make_benchmark(cfg, cfg.seed)
    backbone = build_backbone("tiny")
    data = load_datasets(cfg, bench, backbone)
    return cls(cfg, backbone, bench, QUIET), data, [make_task(t, bench, data, cfg.seed) for t in range(2)]


def _scramble(visual):
    import torch

    with torch.no_grad():
        for p in visual.parameters():
            p.mul_(-1.5)


def test_a_method_that_trains_the_tower_is_never_evaluated_on_cached_features():
    """Caching the test features is opt-in: a method that changes the tower without saying anything is
    evaluated on features of its current tower."""
    from dmc.engine.evaluation import EvalCache, evaluate_task
    from dmc.methods.base import Method
    from dmc.training.evaluate import predict

    method, data, tasks = _method_and_tasks(type("Forgetful", (Method,), {"name": "forgetful"}))
    test, cache = data["test"], EvalCache()
    evaluate_task(method, tasks[0], test, 64, cache)
    _scramble(method.model.visual)
    preds, labels = evaluate_task(method, tasks[1], test, 64, cache)
    fresh = predict(method.model.visual, method.classifier(tasks[1].seen), tasks[1].seen, test, QUIET, 64)
    assert (preds == fresh[np.isin(test.labels, tasks[1].seen)]).all()
    assert "visual" in method.learned  # and its tower is checkpointed


def test_a_method_that_claims_a_frozen_tower_and_changes_it_stops():
    from dmc.engine.evaluation import EvalCache, evaluate_task
    from dmc.methods.base import Method

    method, data, tasks = _method_and_tasks(type("Liar", (Method,), {"name": "liar", "frozen_image_encoder": True}))
    test, cache = data["test"], EvalCache()
    evaluate_task(method, tasks[0], test, 64, cache)
    evaluate_task(method, tasks[1], test, 64, cache)  # unchanged: the cache is used
    assert "test_features" not in data and cache.feats is not None  # held by the cache, not the datasets
    _scramble(method.model.visual)
    with pytest.raises(RuntimeError, match="sets frozen_image_encoder = True but its image tower changed"):
        evaluate_task(method, tasks[1], test, 64, cache)
