"""tools/heads_on_runs.py: the run's own classifier, re-scored from its checkpoints, gives back the run's
accuracies (so the images and labels are the run's), and the heads on its Gaussian memory are scored."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import heads_on_runs  # noqa: E402


def test_text_head_reproduces_the_run_and_memory_heads_are_scored(tiny_dmc_run):
    summary = json.loads((tiny_dmc_run / "summary.json").read_text())
    heads = heads_on_runs.heads_of_run(tiny_dmc_run, [0.1], [1.0], [20.0])
    # within two of the 48 last-task images: the tiny model sits near chance, where near-ties of scores can
    # break differently between batchings (on the glyph runs the figures are reproduced exactly)
    two_images = 100.0 * 2 / sum(summary["counts"])
    assert heads["text"][0] == pytest.approx(summary["avg"], abs=two_images)
    assert heads["text"][1] == pytest.approx(summary["last"], abs=two_images)
    fused_heads = (f"{h} 0.1{fused}" for h in ("qda", "t20", "lda") for fused in ("", " + 1·cos"))
    assert set(heads) == {"text", "cos", *fused_heads}
    for avg, last in heads.values():
        assert 0.0 <= last <= 100.0 and 0.0 <= avg <= 100.0
