"""`--log csv|tensorboard|wandb`: what a run logs is read back from each tracker's own files and checked
against the run's records (metrics.jsonl, summary.json)."""
import csv
import json
import os
import struct
from pathlib import Path

import pytest
import torch

from dmc.engine import trackers
from dmc.engine.loop import run
from dmc.errors import UserError
from dmc.training.runtime import make_runtime
from tests.helpers import cli, tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)
EPOCHS = {"stage 1": 1, "stage 2": 2}  # tiny_cfg: vision.epochs=1, prompt.epochs=2


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny 3-task DMC run logged to all three trackers (W&B offline: no key, no network)."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb")
    root = tmp_path_factory.mktemp("logged")
    os.environ.pop("WANDB_API_KEY", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with trackers.tracking(["csv", "tensorboard", "wandb"], root / "logs"):
            out = run(tiny_cfg("dmc"), out=root / "run", rt=QUIET)
    finally:
        torch.set_num_threads(threads)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return root / "logs", records, json.loads((out / "summary.json").read_text())


def forgetting_so_far(summary: dict, t: int) -> float:
    from dmc import metrics
    import numpy as np

    R = np.array([[np.nan if v is None else v for v in row] for row in summary["acc_matrix"]])
    return metrics.forgetting(R[:t, :t])


def test_tensorboard_events_hold_the_run_figures(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs, records, summary = logged
    acc = EventAccumulator(str(logs / "tensorboard" / "run"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    assert scalars["task/A_t"] == [(r["task"], pytest.approx(r["A_t"], rel=1e-6)) for r in records]
    assert scalars["task/new"] == [(r["task"], pytest.approx(r["new"], rel=1e-6)) for r in records]
    assert scalars["task/old"] == [(r["task"], pytest.approx(r["old"], rel=1e-6)) for r in records[1:]]
    assert [v for _, v in scalars["task/forgetting"]] == pytest.approx(
        [forgetting_so_far(summary, t) for t in (1, 2, 3)], abs=1e-5)
    assert [v for _, v in scalars["task/seconds"]] == pytest.approx([r["time_s"]["total"] for r in records], rel=1e-5)
    for stage, epochs in EPOCHS.items():
        assert len(scalars[f"loss/{stage}"]) == epochs * len(records)
    assert scalars["final/avg"] == [(3, pytest.approx(summary["avg"], rel=1e-6))]
    assert scalars["final/last"] == [(3, pytest.approx(summary["last"], rel=1e-6))]
    image = acc.Images("accuracy")
    assert len(image) == 1 and image[0].encoded_image_string[:4] == b"\x89PNG" and image[0].width > 100


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (`run-<id>.wandb`): a 7-byte header (":W&B", magic, version), then
    LevelDB-style log records in 32 KiB blocks (checksum, length, type: full / first / middle / last)."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    pos, out, part = 7, [], b""
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            out.append(record)
    return out


def key(item) -> str:
    """A logged value's name (W&B keeps names with "/" as a nested key)."""
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_run_holds_the_run_figures(logged):
    logs, records, summary = logged
    runs = list((logs / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    found = wandb_records(runs[0])
    history = [{key(i): json.loads(i.value_json) for i in r.history.item} for r in found
               if r.WhichOneof("record_type") == "history"]
    tasks = [h for h in history if "task/A_t" in h]
    assert [h["task"] for h in tasks] == [1, 2, 3]
    assert [h["task/A_t"] for h in tasks] == pytest.approx([r["A_t"] for r in records], rel=1e-9)
    assert [h.get("task/old") for h in tasks][1:] == pytest.approx([r["old"] for r in records[1:]], rel=1e-9)
    assert sum("loss/stage 2" in h for h in history) == EPOCHS["stage 2"] * len(records)
    final = {}
    for r in found:
        if r.WhichOneof("record_type") == "summary":
            final.update({key(i): json.loads(i.value_json) for i in r.summary.update})
    assert final["avg"] == pytest.approx(summary["avg"]) and final["last"] == pytest.approx(summary["last"])
    assert final["acc_matrix"] == summary["acc_matrix"]
    run_info = next(r.run for r in found if r.WhichOneof("record_type") == "run")
    assert run_info.display_name == "run"
    assert list(runs[0].parent.glob("files/media/images/accuracy_*.png"))


def test_csv_rows_hold_the_run_figures(logged):
    logs, records, summary = logged
    rows = list(csv.DictReader((logs / "csv" / "run.csv").open()))
    a_t = [(int(r["task"]), float(r["value"])) for r in rows if r["metric"] == "A_t"]
    assert a_t == [(r["task"], pytest.approx(r["A_t"])) for r in records]
    assert float(next(r["value"] for r in rows if r["metric"] == "avg")) == pytest.approx(summary["avg"])
    assert sum(r["metric"] == "loss" and r["stage"] == "stage 2" for r in rows) == 2 * len(records)
    cells = {r["metric"]: float(r["value"]) for r in rows if r["metric"].startswith("acc_matrix")}
    assert cells["acc_matrix[3,1]"] == pytest.approx(summary["acc_matrix"][2][0])


def test_a_sweep_run_is_grouped_by_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("DMC_LOG_SWEEP", "grid")
    with trackers.tracking(["csv"], tmp_path):
        trackers.begin(tmp_path / "dmc-ot-vision.lr=1e-05-s3", tiny_cfg("dmc"))
        trackers.task_done({"task": 1, "A_t": 50.0, "old": None, "new": 50.0, "time_s": {"total": 1.0}},
                           __import__("numpy").array([[50.0]]))
    rows = list(csv.DictReader((tmp_path / "csv" / "grid" / "dmc-ot-vision.lr=1e-05" /
                                "dmc-ot-vision.lr=1e-05-s3.csv").open()))
    assert rows[0]["group"] == "grid/dmc-ot-vision.lr=1e-05" and rows[0]["value"] == "50.0"


def test_a_missing_tracker_package_names_its_extra(monkeypatch, capsys):
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r'pip install "dmc\[wandb\]"'):
        trackers.check(["wandb"])
    code, _, _, errors = cli(capsys, "run", "--benchmark", "synthetic", "--smoke", "--log", "tensorboard")
    assert code == 2 and len(errors) == 1 and 'pip install "dmc[tensorboard]"' in errors[0]
    code, _, _, errors = cli(capsys, "learn", "m", "f", "--log", "excel")
    assert code == 2 and "unknown tracker for --log: 'excel'" in errors[0]
