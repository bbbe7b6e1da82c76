"""RAPF: identity start (= zero-shot), the fusion and hinge rules on hand-made cases, a 3-task run with exact resume."""
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from dmc.cli import main
from dmc.engine.loop import make_task, prepare, run
from dmc.training.runtime import make_runtime
from dmc.errors import UserError
from dmc.methods import METHODS
from dmc.methods.rapf import fuse_adapter, hinge_loss, neighbour_pairs
from dmc.training.evaluate import predict
from tests.helpers import killed_copy, tiny_cfg

QUIET = make_runtime("cpu", "fp32", progress=False)


def test_identity_adapter_equals_zero_shot_until_trained(tmp_path):
    cfg, rt, bench, data, rapf, _ = prepare(tiny_cfg("rapf", rapf__epochs=2), tmp_path / "run", None, QUIET)
    assert cfg.memory.shrink  # the preset turns on RAPF's shrinkage
    zeroshot = METHODS.get("zeroshot")(cfg, rapf.backbone, bench, rt)
    task = make_task(0, bench, data, cfg.seed)
    rapf.begin_task(task)
    classes = sorted({c for t in bench.tasks for c in t})
    x = torch.stack([data["test"][i][0] for i in range(16)])  # (16, 3, H, W)
    with torch.no_grad():
        logits_r = rapf.logits(rapf.image_features(x), rapf.class_features(classes))
        logits_z = zeroshot.logits(zeroshot.image_features(x), zeroshot.class_features(classes))
    torch.testing.assert_close(logits_r, logits_z, rtol=0, atol=1e-6)
    preds = [predict(m.model.visual, m.scores, m.class_features(classes), classes, data["test"], rt, 64)
             for m in (rapf, zeroshot)]
    assert (preds[0] == preds[1]).all()
    rapf.train_task(task)
    with torch.no_grad():
        assert not torch.allclose(rapf.image_features(x), zeroshot.image_features(x), atol=1e-4)


def test_bad_rapf_values_are_user_errors():
    with pytest.raises(UserError, match="hinge_pairs"):
        tiny_cfg("rapf", rapf__hinge_pairs="some")
    with pytest.raises(UserError, match="fusion_bias"):
        tiny_cfg("rapf", rapf__fusion_bias=-0.1)


def test_fusion_rule_hand_made():
    # W_old = diag(2, 1): U = I, S V^T = W_old. Delta = |W_new - W_old| = [[2, 1], [0, 1]], max 2;
    # lambda = min(1, Delta / 2 + .25) = [[1, .75], [.25, .75]]; W = lambda*W_new + (1 - lambda)*W_old.
    w_old = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    w_new = torch.tensor([[4.0, 1.0], [0.0, 2.0]])
    fused, lam = fuse_adapter(w_old, w_new, 0.25)
    torch.testing.assert_close(fused, torch.tensor([[4.0, 0.75], [0.0, 0.75 * 2.0 + 0.25 * 1.0]]))
    torch.testing.assert_close(lam, torch.tensor([[1.0, 0.75], [0.25, 0.75]], dtype=torch.float64))
    torch.testing.assert_close(fuse_adapter(w_old, w_new, 1.0)[0], w_new)  # bias 1 keeps the new weights
    torch.testing.assert_close(fuse_adapter(w_old, w_old, 0.25)[0], w_old)  # nothing moved: nothing changes


def test_fusion_blends_in_the_left_singular_basis():
    # W_old = diag(2, 1) R^T has U = I but V = R: the blend is elementwise in the original coordinates
    # (U^T W = W), with the same lambda as above, so W = W_old + lambda * (W_new - W_old).
    c, s = math.cos(0.3), math.sin(0.3)
    w_old = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64) @ torch.tensor([[c, s], [-s, c]]).double()
    step = torch.tensor([[2.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    lam = torch.tensor([[1.0, 0.75], [0.25, 0.75]], dtype=torch.float64)
    torch.testing.assert_close(fuse_adapter(w_old, w_old + step, 0.25)[0], w_old + lam * step)


def test_fusion_commutes_with_a_rotation_of_the_output_space():
    g = torch.Generator().manual_seed(0)
    w_old = torch.randn(6, 6, generator=g, dtype=torch.float64)
    w_new = w_old + 0.3 * torch.randn(6, 6, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    fused, _ = fuse_adapter(w_old, w_new, 0.5)
    torch.testing.assert_close(fuse_adapter(q @ w_old, q @ w_new, 0.5)[0], q @ fused)
    assert not torch.allclose(fused, w_new) and not torch.allclose(fused, w_old)


def test_hinge_loss_hand_made():
    own, rival = torch.tensor([[1.0, 0.0]] * 3), torch.tensor([[0.0, 1.0]] * 3)
    feats = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # gap cos(own) - cos(rival): 1, 0, -1
    # max(0, 0.1 - gap) = 0, 0.1, 1.1 -> mean 0.4
    assert hinge_loss(feats, own, rival, 0.1).item() == pytest.approx(0.4)
    assert hinge_loss(feats[:1], own[:1], rival[:1], 0.1).item() == 0.0


def test_neighbour_pairs_hand_made():
    unit = lambda a: [math.cos(a), math.sin(a)]  # noqa: E731
    old = torch.tensor([unit(0.0), unit(math.pi / 2)])
    new = torch.tensor([unit(0.3), unit(1.0)])
    # ||t_i - t_j|| = 2 sin(|angle difference| / 2): [[0.30, 0.96], [1.19, 0.56]]
    assert neighbour_pairs(old, new, 0.6).tolist() == [[0, 0], [1, 1]]
    assert neighbour_pairs(old, new, 1.0).tolist() == [[0, 0], [0, 1], [1, 1]]
    assert neighbour_pairs(old, new, 1.0, nearest=True).tolist() == [[0, 0], [1, 1]]
    assert neighbour_pairs(old, new, 0.2).shape == (0, 2)


def test_hinge_term_separates_old_classes_from_their_new_neighbours(tmp_path):
    cfg, _, bench, data, rapf, _ = prepare(tiny_cfg("rapf", rapf__epochs=1, rapf__fusion=False, replay__enabled=False,
                                                    rapf__hinge_threshold=2.01, rapf__hinge_weight=20.0),
                                           tmp_path / "run", None, QUIET)
    first, second = make_task(0, bench, data, cfg.seed), make_task(1, bench, data, cfg.seed)
    rapf.train_task(first)
    pairs = neighbour_pairs(rapf.template_features(second.old), rapf.template_features(second.classes), 2.01)
    own, rival = rapf.template_features(second.old)[pairs[:, 0]], rapf.template_features(second.classes)[pairs[:, 1]]
    means = rapf.bank.means(second.old)[pairs[:, 0]]  # (P, D): each old class's mean, once per neighbour

    def violation() -> float:
        with torch.no_grad():
            return hinge_loss(rapf.adapter(means), own, rival, cfg.rapf.hinge_margin).item()

    before = violation()
    cfg.rapf.epochs, cfg.rapf.lr = 20, 1e-2
    rapf.train_task(second)
    assert before > 0.05 and violation() < 0.5 * before  # without the hinge it grows (about 2x)


def test_three_task_run_with_hinge_and_fusion_resumes_exactly(tmp_path):
    cfg = tiny_cfg("rapf", rapf__hinge_threshold=2.01, rapf__epochs=3)  # 2.01: every old/new pair is a neighbour
    full = run(cfg, out=tmp_path / "full", rt=QUIET)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["method"] == "rapf" and summary["tasks"] == 3 and len(summary["acc_matrix"]) == 3
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["hinge_pairs"] for r in records] == [0, 16, 32]  # 4 new classes vs 0, 4, 8 old ones
    assert all(len(r["loss"]) == 3 and all(math.isfinite(v) for v in r["loss"]) for r in records)
    assert "fusion_mean_lambda" not in records[0]  # nothing to fuse with after the first task
    assert all(cfg.rapf.fusion_bias <= r["fusion_mean_lambda"] < 1.0 for r in records[1:])
    last = load_file(str(full / "checkpoints" / "task_03.safetensors"))
    assert last["adapter.weight"].shape[0] == last["adapter.weight"].shape[1]
    assert sum(k.startswith("memory.mean.") for k in last) == 12
    killed = killed_copy(full, tmp_path / "killed", finished_tasks=2)  # killed during task 3
    resumed = run(None, resume=killed, rt=QUIET)
    assert json.loads((resumed / "summary.json").read_text())["acc_matrix"] == summary["acc_matrix"]
    again = load_file(str(resumed / "checkpoints" / "task_03.safetensors"))
    assert again.keys() == last.keys() and all(torch.equal(again[k], last[k]) for k in last)


def test_list_shows_rapf(capsys):
    assert main(["list"]) == 0
    assert "rapf" in capsys.readouterr().out
