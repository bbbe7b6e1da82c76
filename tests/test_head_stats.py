"""The head-statistics diagnostic (`diagnostics.head_stats`) and the data-following options of
`dmc-ot-mem`'s head, end to end on the tiny world."""
import json

import pytest
import torch

from dmc.config.checks import BadValue
from dmc.config import MemHeadConfig
from dmc.data.benchmark import make_benchmark
from dmc.engine.diagnostics import HEAD_STATS, head_stats_table
from dmc.engine.loop import load_datasets, make_task, run
from dmc.methods import METHODS
from dmc.models.clip import build_backbone
from dmc.training.runtime import make_runtime
from tests.helpers import tiny_cfg

RT = make_runtime("cpu", "fp32", progress=False)


def _records(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_head_stats_measure_without_changing_the_run(tmp_path):
    """The diagnostic scores five statistics of old classes and changes nothing the method trains or
    predicts; with the run's own calibration (class-level OT) its "means_only" fused accuracy is the
    run's A_t at every task, and at the first task (no old classes) every variant is the same."""
    drift = {"vision__lr": 1e-3}  # a stage 1 that moves the tower
    a = run(tiny_cfg("dmc-ot-mem", diagnostics__head_stats=True, **drift), out=tmp_path / "diag", rt=RT)
    b = run(tiny_cfg("dmc-ot-mem", **drift), out=tmp_path / "plain", rt=RT)
    ra, rb = (json.loads((d / "summary.json").read_text())["acc_matrix"] for d in (a, b))
    assert ra == rb
    records = _records(a)
    assert "head_stats" not in _records(b)[0]
    for rec in records:
        stats = rec["head_stats"]
        assert sorted(stats) == sorted(HEAD_STATS)
        assert stats["means_only"]["fused"] == pytest.approx(rec["A_t"], abs=1e-9)
        assert all(0.0 <= v[k] <= 100.0 for v in stats.values() for k in ("head", "fused"))
    first = records[0]["head_stats"]
    assert all(v == first["stored"] for v in first.values())
    later = [rec["head_stats"] for rec in records[1:]]
    assert any(s["stored"] != s["oracle"] for s in later), "the tower moved: stored statistics are stale"
    # a run that never calibrates hands the diagnostic no paired features: the "stored" chain (never
    # calibrated) is then that run's own memory, and its fused accuracy the run's A_t
    off = run(tiny_cfg("dmc-ot-mem", diagnostics__head_stats=True, calibration__method="none", **drift),
              out=tmp_path / "off", rt=RT)
    assert all(rec["head_stats"]["stored"]["fused"] == pytest.approx(rec["A_t"], abs=1e-9) for rec in _records(off))


def test_head_stats_table_reads_avg_last_and_the_share_of_the_gap():
    rows = [{"stored": {"head": 90.0, "fused": 92.0}, "means_only": {"head": 90.0, "fused": 92.0},
             "oracle": {"head": 90.0, "fused": 92.0}},
            {"stored": {"head": 60.0, "fused": 70.0}, "means_only": {"head": 66.0, "fused": 70.0},
             "oracle": {"head": 70.0, "fused": 70.0}}]
    table = head_stats_table([{"task": i + 1, "head_stats": r} for i, r in enumerate(rows)] + [{"task": 9}])
    assert sorted(table) == ["means_only", "oracle", "stored"]
    assert table["means_only"]["head"] == {"avg": 78.0, "last": 66.0, "gap_closed": pytest.approx(0.6)}
    assert table["oracle"]["head"]["gap_closed"] == 1.0 and table["stored"]["head"]["gap_closed"] == 0.0
    assert table["stored"]["fused"]["gap_closed"] is None  # no gap: nothing to close
    assert head_stats_table([{"task": 1}]) == {}


def test_linear_calibration_and_data_following_head_run_end_to_end(tmp_path):
    """`dmc-ot-mem` with the OT + linear map calibration, per-class OAS shrinkage and the width-free
    fusion: a run that finishes, whose memory moved old covariances (A Sigma A^T) and keeps each class's
    sample count."""
    cfg = tiny_cfg("dmc-ot-mem", calibration__method="ot+linear", memhead__shrink="oas",
                   memhead__head_scale="dim", vision__lr=1e-3)
    out = run(cfg, out=tmp_path / "r", rt=RT)
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 < summary["last"] <= 100.0
    from safetensors.torch import load_file

    state = load_file(str(sorted((out / "checkpoints").glob("task_*.safetensors"))[-1]))
    counts = {k: int(v) for k, v in state.items() if k.startswith("memory.count.")}
    assert counts and set(counts.values()) == {cfg.benchmark.train_per_class}


def test_checkpoint_without_counts_is_completed_from_the_tasks():
    """A memory checkpointed before counts were kept: the method, replaying its tasks' `begin_task` as a
    resume does, loads it with each class's count from the task's labels."""
    cfg = tiny_cfg("dmc-ot-mem", memhead__stage1="none")
    bench = make_benchmark(cfg, cfg.seed)
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    data = load_datasets(cfg, bench, backbone)
    m = METHODS.get("dmc-ot-mem")(cfg, backbone, bench, RT)
    for t in range(2):
        task = make_task(t, bench, data, cfg.seed)
        m.begin_task(task)
        m.train_task(task)
    state = {k: v for k, v in m.learned.state_dict().items() if ".count." not in k}
    other = METHODS.get("dmc-ot-mem")(cfg, build_backbone("tiny"), bench, RT)
    for t in range(2):
        other.begin_task(make_task(t, bench, data, cfg.seed))
    other.learned.load_state_dict(state)
    assert other.bank.counts().tolist() == m.bank.counts().tolist() == [cfg.benchmark.train_per_class] * len(m.bank)


def test_head_options_are_checked():
    with pytest.raises(BadValue, match="shrink"):
        MemHeadConfig(shrink="ledoit")
    with pytest.raises(BadValue, match="head_scale"):
        MemHeadConfig(head_scale="log")
    assert MemHeadConfig().shrink == "fixed" and MemHeadConfig().head_scale == "none"  # defaults unchanged
