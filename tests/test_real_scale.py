"""A dry run at real scale: every method, two tasks, on ViT-B/16 (random weights) at 224 px, on a small fake
CIFAR-100 tree (the 100 classes as `train/<class>/`, `test/<class>/` folders of 32 x 32 images, resized to
224 as real images are). It proves the real-scale paths run end to end on a machine without weights or
data, and measures what a task costs: CPU time and peak memory per method (docs/results.md, "Budgeting a
real run"). `joint` is left out: its one task is every class at once (finetune's cost per image, times the
whole training set). Slow (about half an hour on 2 cores): `pytest -m slow tests/test_real_scale.py -s`.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dmc import catalog
from dmc.data.sources.cifar100 import cifar100_names

SETS = ["model.pretrained=random", "benchmark.max_tasks=2", "benchmark.train_per_class=8",
        "benchmark.test_per_class=4", "vision.epochs=1", "prompt.epochs=1", "rapf.epochs=1", "proof.epochs=1",
        "data.num_workers=2"]


def fake_cifar_tree(root, train=8, test=4):
    """100 class folders per split, named as CIFAR-100's classes, of 32 x 32 PNG images."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("test", test)):
        for name in cifar100_names():
            folder = root / split / name.replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), np.uint8)).save(folder / f"{i}.png")
    return root


def measured_run(method, root, out):
    """One `dmc run` in its own process, one thread (CPU time is then the work, whatever else runs on the
    machine): (exit code, stderr, CPU seconds, peak resident MB)."""
    argv = [sys.executable, "-m", "dmc", "run", "--benchmark", "imagefolder", "--method", method, "--quiet",
            "--threads", "1", "--out", str(out), "--set", f"data.root={root}"] + [a for s in SETS for a in ("--set", s)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


@pytest.mark.slow
def test_every_method_runs_two_tasks_of_vit_b16_at_224_px(tmp_path):
    root = fake_cifar_tree(tmp_path / "cifar100")
    rows = []
    for method in [m for m in catalog.METHODS if m != "joint"]:  # joint's one task is every class at once
        out = tmp_path / method
        code, err, cpu, peak = measured_run(method, root, out)
        assert code == 0, f"{method}: {err[-2000:]}"
        summary = json.loads((out / "summary.json").read_text())
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert summary["tasks"] == len(lines) == 2
        wall = [r["time_s"]["total"] for r in lines]
        rows.append(f"| {method} | {len(lines)} | {cpu / len(lines):.0f} | {np.mean(wall):.0f} | {peak / 1024:.1f} |")
    table = "\n".join(["| method | tasks | CPU s per task | wall s per task | peak memory (GB) |",
                       "|---|---|---|---|---|", *rows])
    print("\n" + table)
    (tmp_path / "table.md").write_text(table + "\n")
