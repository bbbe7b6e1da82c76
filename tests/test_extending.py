"""docs/extending.md's examples are real code: the example method runs three tasks and resumes exactly, the
example benchmark reads a folder of images."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from dmc import config
from dmc.config import BadValue
from dmc.engine.loop import run
from dmc.training.runtime import make_runtime
from tests.helpers import killed_copy, tiny_cfg
from tests.image_files import PNG, write_file

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
QUIET = make_runtime("cpu", "fp32", progress=False)


def example(name: str):
    """Import docs/examples/NAME.py once per session (it registers itself)."""
    module = f"dmc_example_{name}"
    if module not in sys.modules:
        spec = importlib.util.spec_from_file_location(module, EXAMPLES / f"{name}.py")
        sys.modules[module] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[module])
    return sys.modules[module]


def test_the_example_method_runs_three_tasks_and_resumes_exactly(tmp_path):
    text_mean = example("text_mean")
    full = run(tiny_cfg("text-mean"), out=tmp_path / "full", rt=QUIET)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["method"] == "text-mean" and summary["tasks"] == 3 and 0 <= summary["last"] <= 100
    resumed = run(None, resume=killed_copy(full, tmp_path / "killed", finished_tasks=1), rt=QUIET)
    assert json.loads((resumed / "summary.json").read_text())["acc_matrix"] == summary["acc_matrix"]
    with pytest.raises(BadValue, match="bad value for alpha: 1.5; must be in"):
        text_mean.TextMeanConfig(alpha=1.5)


def test_the_example_benchmark_reads_an_image_folder(tmp_path):
    example("flowers")
    for split in ("train", "test"):
        for flower in ("daisy", "sweet_pea", "tulip", "rose", "iris", "lily"):
            for i in range(2):
                write_file(tmp_path / split / flower / f"{i}.png", PNG)
    cfg = config.resolve("flowers", "zeroshot", {"model.backbone": "tiny", "data.root": str(tmp_path)})
    out = run(cfg, out=tmp_path / "run", rt=QUIET)
    plan = json.loads((out / "plan.json").read_text())
    assert [len(t) for t in plan["tasks"]] == [5, 1] and "sweet pea" in plan["tasks"][0] + plan["tasks"][1]
    assert torch.isfinite(torch.tensor(json.loads((out / "summary.json").read_text())["incremental"])).all()
