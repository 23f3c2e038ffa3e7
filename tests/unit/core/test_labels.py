"""Teacher labels and the student loss: hard, soft at a temperature, mixed with the clip label."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.core.labels import student_loss, teacher_labels


def test_teacher_labels_hard_and_soft():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    out = teacher_labels(logits)
    assert out.label.tolist() == [0, 1]
    assert torch.allclose(out.probs.sum(-1), torch.ones(2))
    assert torch.allclose(out.confidence, out.probs.max(-1).values)
    warm = teacher_labels(logits, temperature=4.0)
    assert (warm.probs.max(-1).values < out.probs.max(-1).values).all()  # higher temperature, softer labels
    assert torch.allclose(warm.confidence, out.confidence)  # confidence is the model's own, at temperature 1
    assert warm.label.tolist() == out.label.tolist()
    with pytest.raises(ValueError):
        teacher_labels(logits, temperature=0)


def test_student_loss_hard_soft_and_temperature():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3, 0])
    hard = student_loss(logits, mode="hard", hard=target)
    assert torch.allclose(hard, F.cross_entropy(logits, target))
    onehot = F.one_hot(target, 4).float()
    # KL to a one-hot target equals cross-entropy at T=1
    assert torch.allclose(student_loss(logits, mode="soft", soft=onehot), hard, atol=1e-6)
    same = torch.softmax(logits.detach() / 3.0, -1)
    assert student_loss(logits, mode="soft", soft=same, temperature=3.0).abs() < 1e-6
    student_loss(logits, mode="soft", soft=torch.full((5, 4), 0.25), temperature=2.0).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        student_loss(logits, mode="hard")
    with pytest.raises(ValueError):
        student_loss(logits, mode="bogus", hard=target)


def test_confidence_does_not_depend_on_the_temperature():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.0, 3.0]])
    cold, hot = teacher_labels(logits, 1.0), teacher_labels(logits, 4.0)
    assert torch.equal(cold.label, hot.label) and torch.allclose(cold.confidence, hot.confidence)
    assert (hot.probs.max(dim=1).values < cold.probs.max(dim=1).values).all()  # softer targets


def test_soft_loss_is_temperature_scaled_kl_and_zero_at_the_target():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    t = 3.0
    soft = torch.softmax(teacher / t, dim=-1)
    expected = (soft * (soft.log() - F.log_softmax(student / t, dim=-1))).sum(dim=1).mean() * t * t
    assert torch.allclose(student_loss(student, mode="soft", soft=soft, temperature=t), expected, atol=1e-6)
    assert student_loss(teacher, mode="soft", soft=soft, temperature=t).abs() < 1e-5


def test_mixing_in_the_original_label_weights_the_two_losses():
    torch.manual_seed(1)
    logits, hard, original = torch.randn(6, 4), torch.randint(0, 4, (6,)), torch.randint(0, 4, (6,))
    teacher_loss = F.cross_entropy(logits, hard)
    original_loss = F.cross_entropy(logits, original)
    mixed = student_loss(logits, mode="hard", hard=hard, original=original, original_weight=0.25)
    assert torch.allclose(mixed, 0.75 * teacher_loss + 0.25 * original_loss)
    assert torch.allclose(student_loss(logits, mode="hard", hard=hard, original=original, original_weight=1.0),
                          original_loss)
    soft = torch.softmax(torch.randn(6, 4), dim=-1)
    assert torch.allclose(student_loss(logits, mode="soft", soft=soft, original=original, original_weight=0.5),
                          0.5 * student_loss(logits, mode="soft", soft=soft) + 0.5 * original_loss)
    with pytest.raises(ValueError, match="original label"):
        student_loss(logits, mode="hard", hard=hard, original_weight=0.5)


@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("original_weight", [0.0, 0.5])
def test_each_inputs_loss_averages_to_the_batch_loss(mode, original_weight):
    torch.manual_seed(2)
    logits, hard, original = torch.randn(6, 4), torch.randint(0, 4, (6,)), torch.randint(0, 4, (6,))
    soft = torch.softmax(torch.randn(6, 4), dim=-1)
    kw = dict(mode=mode, hard=hard, soft=soft, temperature=2.0, original=original, original_weight=original_weight)
    each = student_loss(logits, **kw, reduction="none")
    assert each.shape == (6,)
    assert torch.allclose(each.mean(), student_loss(logits, **kw))
    assert torch.allclose(each[2], student_loss(logits[2:3], **{**kw, "hard": hard[2:3], "soft": soft[2:3],
                                                                "original": original[2:3]}))
    with pytest.raises(ValueError, match="reduction"):
        student_loss(logits, **kw, reduction="sum")
