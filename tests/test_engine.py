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
    ckpt = out / "checkpoints" / f"task_{T - 1:02d}.safetensors"
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
    full_last = load_file(str(full / "checkpoints" / "task_02.safetensors"))
    res_last = load_file(str(resumed / "checkpoints" / "task_02.safetensors"))
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
