"""torchrun with 2 CPU processes (gloo): DDP training, sharded evaluation, rank-0 writing."""
import json
import os
import subprocess
import sys

import pytest

from dmc.engine.loop import run
from dmc.training.runtime import make_runtime
from tests.helpers import TINY, tiny_cfg

pytestmark = pytest.mark.slow


def test_two_process_run_matches_single_process(tmp_path):
    sets = [f"{k}={v}" for k, v in TINY.items()]
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
            "-m", "dmc", "run", "--benchmark", "synthetic", "--method", "dmc", "--quiet",
            "--out", str(tmp_path / "ddp")]
    for s in sets:
        argv += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    single = json.loads((run(tiny_cfg("dmc"), out=tmp_path / "one",
                             rt=make_runtime("cpu", "fp32", progress=False)) / "summary.json").read_text())
    # every test sample counted exactly once across ranks
    assert ddp["counts"] == single["counts"]
    assert abs(ddp["avg"] - single["avg"]) < 15.0 and abs(ddp["last"] - single["last"]) < 15.0
    assert len(list((tmp_path / "ddp").iterdir())) == len(list((tmp_path / "one").iterdir()))
