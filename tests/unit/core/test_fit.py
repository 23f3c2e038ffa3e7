"""core/fit.py, the one training loop, without Ray: it learns, it continues from its own state
to the bit, it averages what it says it averages, and it validates by counting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.config import TrainConfig
import distill.core.fit as fit_module
from distill.core.fit import (Augmentation, Validation, fit_state, kept_model, load_fit_state, scored_epoch, start_fit,
                              steps_per_epoch, train_epoch)
from distill.core.protocols import predict
from distill.core.labels import LabelSpec
from distill.core.models import build_model
from distill.stages import StageSpec

CLASSES, SAMPLES, ROWS, BATCH = 4, 4000, 32, 8
CPU = torch.device("cpu")


def tone_batches(seed: int, epoch: int) -> list[dict[str, torch.Tensor]]:
    """Four textures a 3×3 convolution tells apart (a tone, noise, clicks, near silence); the
    clip label as the teacher's and the source's."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(ROWS) % CLASSES
    t = torch.arange(SAMPLES) / 16000
    clicks = (torch.arange(SAMPLES) % 320 == 0).float()
    textures = torch.stack([0.3 * torch.sin(2 * torch.pi * 500 * t), 0.1 * torch.randn(SAMPLES, generator=g),
                            0.9 * clicks, torch.zeros(SAMPLES)])
    waves = textures[labels] + 0.001 * torch.randn(ROWS, SAMPLES, generator=g)
    order = torch.randperm(ROWS, generator=torch.Generator().manual_seed(seed * 100 + epoch))
    return [{"waveform": waves[i], "teacher_label_index": labels[i],
             "teacher_probs": torch.nn.functional.one_hot(labels[i], CLASSES).float(), "source_label_index": labels[i]}
            for i in order.split(BATCH)]


def new_fit(train: TrainConfig, epochs: int):
    torch.manual_seed(0)
    model = build_model("tiny", CLASSES)
    return start_fit(model, train, epochs=epochs, steps_per_epoch=steps_per_epoch(ROWS, 1, BATCH), device=CPU)


STAGE = StageSpec("s", "student", "pld", 250, "teacher", 4, labels=LabelSpec(mode="soft", temperature=2.0, original_weight=0.5))
NO_AUGMENT = Augmentation(None, None, 16000, 10.0, 40)


def run(fit, train, epochs, start=0, stop=None):
    """Epochs ``start`` to ``stop`` (default: all) of a fit of ``epochs``; their mean losses."""
    losses = []
    for epoch in range(start, epochs if stop is None else stop):
        total, seen = train_epoch(fit, tone_batches(1, epoch), STAGE, train, NO_AUGMENT, epoch=epoch, rank=0, device=CPU)
        kept_model(fit, epoch, epochs, train.average_epochs)
        losses.append(total / seen)
    return losses


def test_training_lowers_the_loss_and_counts_every_sample():
    train = TrainConfig(batch_size=BATCH, lr=0.05, augment={"enabled": False})
    fit = new_fit(train, 6)
    losses = run(fit, train, 6)
    assert losses[-1] < 0.7 * losses[0], losses
    total, seen = train_epoch(fit, tone_batches(1, 9), STAGE, train, NO_AUGMENT, epoch=9, rank=0, device=CPU)
    assert seen == ROWS and total > 0


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_fit_continued_from_its_state_equals_one_never_stopped(optimizer):
    train = TrainConfig(batch_size=BATCH, lr=0.01, optimizer=optimizer, keep="average", average_epochs=2,
                        augment={"enabled": False})
    straight = new_fit(train, 3)
    run(straight, train, 3)
    stopped = new_fit(train, 3)
    run(stopped, train, 3, stop=2)
    state = fit_state(stopped, 1)
    continued = new_fit(train, 3)  # a fresh process: new network, optimizer, schedule, average
    load_fit_state(continued, state)
    assert continued.start_epoch == 2
    run(continued, train, 3, start=continued.start_epoch)
    for a, b in ((straight.net, continued.net), (straight.averaged.module, continued.averaged.module)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name


def test_average_keeps_the_mean_of_the_last_epochs_and_best_keeps_the_network():
    train = TrainConfig(batch_size=BATCH, lr=0.01, keep="average", average_epochs=2, augment={"enabled": False})
    fit = new_fit(train, 3)
    weights = []
    for epoch in range(3):
        train_epoch(fit, tone_batches(1, epoch), STAGE, train, NO_AUGMENT, epoch=epoch, rank=0, device=CPU)
        kept = kept_model(fit, epoch, 3, train.average_epochs)
        weights.append({k: v.clone() for k, v in fit.net.state_dict().items()})
        assert (kept is fit.net) == (epoch < 2)
    assert int(fit.averaged.n_averaged) == 2
    for name, value in kept.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (weights[1][name] + weights[2][name]) / 2, msg=name)
    best = TrainConfig(batch_size=BATCH, keep="best", augment={"enabled": False})
    plain = new_fit(best, 1)
    assert plain.averaged is None and kept_model(plain, 0, 1, 5) is plain.net


def test_validation_counts_correct_clips():
    class Always(torch.nn.Module):  # answers class 2 for every window
        features = torch.nn.Identity()

        def net_input(self, x):
            return self.features(x)

        def net(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), 2), CLASSES).float()

    waves = np.zeros((5, 16000), np.float32)
    labels = np.array([2, 2, 0, 1, 2])

    def validation(n: int) -> Validation:
        return Validation((waves[:n], labels[:n]), input_samples=8000, hop_samples=1600, silence_index=None,
                          batch_size=4, device=CPU, precision="fp32")

    assert validation(5).counts(Always()).tolist() == [3.0, 5.0]
    assert validation(0).counts(Always()).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("cache_bytes", [fit_module.VALIDATION_CACHE_BYTES, 0])
def test_validation_computes_the_features_once_and_counts_what_predict_counts(monkeypatch, cache_bytes):
    """Every epoch's counts equal the stream protocol's ``predict`` on the whole model, to the
    bit; the front end runs once per stage while the features fit the cache, every epoch past it."""
    monkeypatch.setattr(fit_module, "VALIDATION_CACHE_BYTES", cache_bytes)
    rng = np.random.default_rng(0)
    waves = (rng.standard_normal((9, 16000)) * 3000).astype(np.int16)
    labels = rng.integers(0, CLASSES, 9)
    train = TrainConfig(batch_size=BATCH, lr=0.05, augment={"enabled": False})
    fit = new_fit(train, 2)
    calls = []
    fit.net.features.register_forward_hook(lambda *_: calls.append(1))
    validation = Validation((waves, labels), input_samples=8000, hop_samples=1600, silence_index=1, batch_size=7,
                            device=CPU, precision="fp32")
    batches = -(-9 * 6 // 7)  # six 500 ms windows a clip at a 100 ms hop, 7 to a batch
    for epoch in range(2):  # the weights change between the two validations
        run(fit, train, 2, start=epoch, stop=epoch + 1)
        fit.net.eval()
        predicted = predict(fit.net, waves, 8000, "stream", hop_samples=1600, silence_index=1, batch_size=7)
        before = len(calls)
        assert validation.counts(fit.net).tolist() == [float((predicted == labels).sum()), 9.0]
        assert len(calls) - before == (batches if epoch == 0 or not cache_bytes else 0)


def test_mixup_weights_the_loss_between_each_input_and_its_partner():
    from distill.core.fit import batch_loss
    torch.manual_seed(3)
    logits = torch.randn(4, CLASSES)
    labels = torch.tensor([0, 1, 2, 3])
    batch = {"teacher_label_index": labels, "teacher_probs": torch.softmax(torch.randn(4, CLASSES), -1),
             "source_label_index": labels.flip(0)}
    spec = STAGE.labels
    plain = batch_loss(logits, batch, spec)
    assert torch.allclose(batch_loss(logits, batch, spec, (torch.tensor([1, 0, 3, 2]), torch.ones(4))), plain)
    partner, weight = torch.tensor([1, 0, 3, 2]), torch.tensor([0.3, 1.0, 0.0, 0.5])
    swapped = {k: v[partner] for k, v in batch.items()}
    each = lambda b: torch.stack([batch_loss(logits[i:i + 1], {k: v[i:i + 1] for k, v in b.items()}, spec)
                                  for i in range(4)])
    want = (weight * each(batch) + (1 - weight) * each(swapped)).mean()
    assert torch.allclose(batch_loss(logits, batch, spec, (partner, weight)), want)


def test_mixup_changes_training_and_off_leaves_it_as_it_was():
    aug = Augmentation(None, None, 16000, 10.0, 40)
    def first_loss(**augment):
        train = TrainConfig(batch_size=BATCH, lr=0.05, augment={"time_shift_ms": 0, "noise_prob": 0, **augment})
        fit = new_fit(train, 1)
        return train_epoch(fit, tone_batches(1, 0), STAGE, train, aug, epoch=0, rank=0, device=CPU)[0], fit
    base, fit_base = first_loss()
    off, fit_off = first_loss(mixup_prob=0.0)
    on, fit_on = first_loss(mixup_prob=1.0)
    assert base == off
    assert all(torch.equal(a, b) for a, b in zip(fit_base.net.state_dict().values(), fit_off.net.state_dict().values()))
    assert on != base


def test_scored_epochs_are_every_nth_and_always_the_last():
    assert [e for e in range(30) if scored_epoch(e, 30, 10)] == [9, 19, 29]
    assert [e for e in range(7) if scored_epoch(e, 7, 3)] == [2, 5, 6]  # the last, though not a multiple
    assert [e for e in range(4) if scored_epoch(e, 4, 1)] == [0, 1, 2, 3]
    assert [e for e in range(4) if scored_epoch(e, 4, 50)] == [3]


def test_the_average_takes_every_tensor_alone_on_any_device(monkeypatch):
    """keep: average on CUDA: torch's default averaging takes its _foreach path there, which
    refuses batch norm's integer num_batches_tracked from the second update. The platform's
    average takes each tensor alone on every device, with the same numbers as torch's CPU path."""
    from torch.optim import swa_utils

    def net_with_batch_norm():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))

    train = TrainConfig(batch_size=BATCH, keep="average", average_epochs=3, augment={"enabled": False})
    net = net_with_batch_norm()
    ours = start_fit(net, train, epochs=3, steps_per_epoch=1, device=CPU).averaged
    torchs = swa_utils.AveragedModel(net, use_buffers=True)  # torch's default, on the CPU: one tensor at a time
    for step in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1 * (step + 1))
        net.train()(torch.randn(2, 1, 5, 5))  # moves the running statistics and num_batches_tracked
        ours.update_parameters(net)
        torchs.update_parameters(net)
    for (name, a), b in zip(ours.module.state_dict().items(), torchs.module.state_dict().values()):
        assert torch.equal(a, b), name

    monkeypatch.setattr(swa_utils, "_get_foreach_kernels_supported_devices", lambda: ["cpu", "cuda"])  # CUDA's path
    default = swa_utils.AveragedModel(net, use_buffers=True)
    default.update_parameters(net)
    with pytest.raises(RuntimeError, match="addcdiv"):
        default.update_parameters(net)
    ours = start_fit(net, train, epochs=3, steps_per_epoch=1, device=CPU).averaged
    for _ in range(3):
        ours.update_parameters(net)
    assert int(ours.n_averaged) == 3
