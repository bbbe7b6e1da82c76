"""Under bf16 autocast the towers run in bf16, but every loss sees float32 logits (CPU autocast shows it)."""
import pytest
import torch
import torch.nn.functional as F

from dmc.engine.loop import run
from dmc.training.losses import cosine_logits
from dmc.training.runtime import make_runtime
from tests.helpers import tiny_cfg


def test_cosine_logits_are_float32_under_autocast():
    feats, protos = torch.randn(8, 16), F.normalize(torch.randn(5, 16), dim=-1)
    exact = 100.0 * F.normalize(feats, dim=-1) @ protos.t()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = 100.0 * F.normalize(feats, dim=-1) @ protos.t()
        logits = cosine_logits(feats, protos, 100.0)
    assert fast.dtype == torch.bfloat16 and (fast.float() - exact).abs().max() > 0.01  # what bf16 costs
    assert logits.dtype == torch.float32 and torch.allclose(logits, exact, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("method", ["dmc", "cotrain", "rapf", "finetune"])
def test_every_loss_sees_float32_logits_in_bf16(method, tmp_path, monkeypatch):
    seen = []
    ce = F.cross_entropy

    def spy(logits, *args, **kwargs):
        seen.append(logits.dtype)
        return ce(logits, *args, **kwargs)

    monkeypatch.setattr(F, "cross_entropy", spy)
    rt = make_runtime("cpu", "bf16", progress=False)
    run(tiny_cfg(method, benchmark__max_tasks=2, rapf__epochs=1), out=tmp_path / "r", rt=rt)
    assert seen and set(seen) == {torch.float32}
