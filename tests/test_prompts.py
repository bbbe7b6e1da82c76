import pytest
import torch
import torch.nn.functional as F

from dmc.errors import UserError
from dmc.models.clip import build_backbone, vision_trainable_params
from dmc.models.prompts import PromptLearner


def _backbone():
    torch.manual_seed(0)
    return build_backbone("tiny")


def test_template_context_equals_encode_text():
    bb = _backbone()
    names = ["cat", "greek small letter psi", "cyrillic capital letter shcha"]
    for template in ("a photo of a {}.", "a photo of a person {}.", "a rendering of the {}."):
        learner = PromptLearner(bb, template)
        learner.add_task(names[:2])
        learner.add_task(names[2:])
        ref = F.normalize(bb.model.encode_text(bb.tokenizer([template.format(n) for n in names])), dim=-1)
        torch.testing.assert_close(learner(), ref)


def test_task_tokens_change_only_their_task_and_are_trainable():
    bb = _backbone()
    learner = PromptLearner(bb, "a photo of a {}.", n_task=2)
    learner.add_task(["cat", "dog"])
    learner.add_task(["car"])
    before = learner().detach()
    with torch.no_grad():
        learner.task_ctx[1].add_(torch.randn_like(learner.task_ctx[1]))  # not a constant: LayerNorm removes those
    after = learner().detach()
    torch.testing.assert_close(after[:2], before[:2])
    assert (after[2] - before[2]).abs().max() > 1e-4
    learner.freeze_task_tokens(before=1)
    assert not learner.task_ctx[0].requires_grad and learner.task_ctx[1].requires_grad
    assert set(learner.state_dict()) == {"ctx", "task_ctx.0", "task_ctx.1"}


def test_gradient_reaches_context_only():
    bb = _backbone()
    for p in bb.model.parameters():
        p.requires_grad_(False)
    learner = PromptLearner(bb, "a photo of a {}.")
    learner.add_task(["cat", "dog"])
    learner().sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0


def test_vision_trainable_parts():
    bb = _backbone()
    visual = bb.model.visual
    n_blocks = len(visual.transformer.resblocks)
    last1 = vision_trainable_params(bb.model.visual, "last-1")
    all_blocks = vision_trainable_params(bb.model.visual, "all")
    full = vision_trainable_params(bb.model.visual, "full")
    assert len(last1) < len(all_blocks) < len(full)
    assert any(p is visual.proj for p in last1)
    assert not any(p is visual.conv1.weight for p in all_blocks)
    assert any(p is visual.conv1.weight for p in full)
    assert n_blocks == 2
    with pytest.raises(UserError, match="'last-3'; the tower has 2 blocks"):  # the one check that needs the tower
        vision_trainable_params(bb.model.visual, "last-3")


def test_class_context_starts_at_the_template_and_is_owned_by_each_class():
    bb = _backbone()
    names = ["cat", "dog", "car"]
    learner = PromptLearner(bb, "a photo of a {}.", context="class")
    learner.add_task(names[:2])
    learner.add_task(names[2:])
    ref = F.normalize(bb.model.encode_text(bb.tokenizer([f"a photo of a {n}." for n in names])), dim=-1)
    torch.testing.assert_close(learner(), ref)  # template initialisation: the zero-shot prototypes
    assert learner.ctx.numel() == 0 and [tuple(p.shape[:1]) for p in learner.class_ctx] == [(2,), (1,)]
    before = learner().detach()
    with torch.no_grad():
        learner.class_ctx[0][1].add_(torch.randn_like(learner.class_ctx[0][1]))  # class "dog" only
    after = learner().detach()
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]])
    assert (after[1] - before[1]).abs().max() > 1e-4


@pytest.mark.parametrize("task_init", ["zeros", "previous", "random"])
def test_task_token_initialisation(task_init):
    bb = _backbone()
    learner = PromptLearner(bb, "a photo of a {}.", n_task=2, task_init=task_init)
    learner.add_task(["cat"])
    with torch.no_grad():
        learner.task_ctx[0].add_(1.5)
    learner.add_task(["dog"])
    new = learner.task_ctx[1].detach()
    if task_init == "zeros":
        assert torch.count_nonzero(new) == 0
    elif task_init == "previous":
        torch.testing.assert_close(new, learner.task_ctx[0].detach())
        assert new.data_ptr() != learner.task_ctx[0].data_ptr()
    else:
        assert 0.005 < new.std() < 0.05
