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


def test_tf32_is_allowed_only_in_the_towers_training_passes(tmp_path, monkeypatch):
    """The TF32 policy of CUDA runs, checked on CPU: TF32 is never on globally; it is on inside the image and
    text towers' forward passes while gradients flow (stage 1, stage 2), and off everywhere else: encoding
    and evaluation, logits and losses, Gaussian statistics and sampling, OT, RanPAC's solve. Every torch
    call of two short runs is watched."""
    import dmc.training.runtime as runtime

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    runtime.tf32_off_globally()  # what make_runtime does on CUDA
    try:
        _watch_tf32(tmp_path, monkeypatch, runtime)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _watch_tf32(tmp_path, monkeypatch, runtime) -> None:
    from torch.overrides import TorchFunctionMode

    inside = {"depth": 0}

    def towers(self, model):  # the CUDA branch of Runtime.tf32_towers, and a probe of where calls run
        for tower in (model.visual, model.transformer):
            tower.register_forward_pre_hook(lambda *a: inside.__setitem__("depth", inside["depth"] + 1))
            tower.register_forward_hook(lambda *a: inside.__setitem__("depth", inside["depth"] - 1), always_call=True)
            runtime.tf32_in_training(tower)

    monkeypatch.setattr(runtime.Runtime, "tf32_towers", towers)
    calls = []

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            calls.append((getattr(func, "__name__", str(func)), flags, inside["depth"] > 0 and torch.is_grad_enabled()))
            return func(*args, **(kwargs or {}))

    rt = make_runtime("cpu", "fp32", progress=False)
    with Watch():
        run(tiny_cfg("dmc-ot", benchmark__max_tasks=2), out=tmp_path / "dmc-ot", rt=rt)
        run(tiny_cfg("ranpac", benchmark__max_tasks=2, ranpac__dim=64), out=tmp_path / "ranpac", rt=rt)
    wrong = [(name, flags, training) for name, flags, training in calls if flags != (training, training)]
    assert not wrong, wrong[:5]
    names = {name for name, _, training in calls if not training}
    assert {"linear", "cholesky_ex", "cholesky_solve"} & names and any(training for *_, training in calls)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
