"""Pure-PyTorch method core: features, models, crops, labels and loss (no Ray, no MLflow)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.crops import cut_crops, sample_crop_offsets
from distill.features import FeatureConfig, LogMel, num_samples
from distill.labels import student_loss, teacher_labels
from distill.models import MODELS, build_model, count_macs


def test_logmel_shape_follows_window_and_hop():
    feats = LogMel(FeatureConfig())(torch.randn(3, 16000))
    assert feats.shape == (3, 1, 40, 101)  # 10 ms hop, centred frames: 16000 / 160 + 1
    assert LogMel(FeatureConfig(n_mels=32, hop_ms=20))(torch.randn(1, 8000)).shape == (1, 1, 32, 26)


def test_logmel_reads_int16_as_scaled_float():
    wave = (np.random.default_rng(0).standard_normal(16000) * 3000).astype(np.int16)
    lm = LogMel()
    a = lm(torch.from_numpy(wave)[None])
    b = lm(torch.from_numpy(wave.astype(np.float32) / 32768.0)[None])
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.isfinite(lm(torch.zeros(1, 16000))).all()  # silence stays finite


def test_logmel_power_spectrum_is_torchaudios_melspectrogram():
    # The front end squares the complex STFT as re² + im² (faster than torch's complex abs);
    # it must still be torchaudio's power-2 mel spectrogram, and checkpoints keep their keys.
    lm = LogMel()
    wave = torch.randn(2, 12000) * 0.1
    reference = lm.melspec(wave)  # torchaudio.transforms.MelSpectrogram(power=2.0)
    ours = lm.melspec.mel_scale(lm.power_spectrum(wave))
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-9)
    log_mel = torch.log(reference + 1e-6).unsqueeze(1)
    expected = (log_mel - log_mel.mean(dim=(2, 3), keepdim=True)) / (log_mel.std(dim=(2, 3), keepdim=True) + 1e-5)
    assert torch.allclose(lm(wave), expected, atol=1e-4)
    assert set(lm.state_dict()) == {"melspec.spectrogram.window", "melspec.mel_scale.fb"}


@pytest.mark.parametrize("name", ["res8", "res8_narrow", "tiny"])
@pytest.mark.parametrize("ms", [100, 500, 750, 1000])
def test_models_accept_any_input_length(name, ms):
    model = build_model(name, n_classes=12).eval()
    out = model(torch.randn(2, num_samples(ms, 16000)))
    assert out.shape == (2, 12)
    assert torch.isfinite(out).all()


def test_res8_matches_the_paper_size_and_macs_scale_with_input():
    model = build_model("res8", 12)
    params = sum(p.numel() for p in model.net.parameters())
    assert 105_000 < params < 115_000  # Tang & Lin report 110K parameters for res8
    narrow = sum(p.numel() for p in build_model("res8_narrow", 12).net.parameters())
    assert 18_000 < narrow < 22_000  # and 19.9K for res8-narrow
    full, half = count_macs(model, 16000), count_macs(model, 8000)
    assert 30e6 < full < 45e6
    assert 0.45 < half / full <= 0.51


def test_model_registry_errors_are_clear():
    with pytest.raises(KeyError, match="registered models: .*res8"):
        build_model("nope", 12)
    with pytest.raises(ValueError, match="bad options"):
        build_model("tiny", 12, {"width": 3})
    assert {"res8", "res8_narrow", "tiny"} <= set(MODELS.names())


def test_crops_are_seeded_per_clip_and_length():
    a = sample_crop_offsets("yes/a_nohash_0.wav", 16000, 8000, 4, seed=7)
    assert np.array_equal(a, sample_crop_offsets("yes/a_nohash_0.wav", 16000, 8000, 4, seed=7))
    assert not np.array_equal(a, sample_crop_offsets("yes/a_nohash_0.wav", 16000, 8000, 4, seed=8))
    assert not np.array_equal(a, sample_crop_offsets("yes/b_nohash_0.wav", 16000, 8000, 4, seed=7))
    assert not np.array_equal(a, sample_crop_offsets("yes/a_nohash_0.wav", 16000, 9600, 4, seed=7))
    many = np.concatenate([sample_crop_offsets(f"c{i}", 16000, 8000, 8, seed=0) for i in range(200)])
    assert many.min() >= 0 and many.max() <= 8000
    assert many.min() < 400 and many.max() > 7600  # uniform over every position that fits
    assert (sample_crop_offsets("x", 16000, 16000, 3, seed=0) == 0).all()


def test_crop_errors_and_cutting():
    with pytest.raises(ValueError, match="does not fit"):
        sample_crop_offsets("x", 8000, 16000, 1, seed=0)
    with pytest.raises(ValueError, match="≥ 1"):
        sample_crop_offsets("x", 16000, 8000, 0, seed=0)
    waves = np.arange(20).reshape(2, 10)
    assert cut_crops(waves, np.array([1, 6]), 3).tolist() == [[1, 2, 3], [16, 17, 18]]
    assert cut_crops(waves, np.array([0, 5, 7]), 2, rows=np.array([1, 1, 0])).tolist() == [[10, 11], [15, 16], [7, 8]]


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


def test_bf16_autocast_trains_on_cpu_and_fp32_is_untouched():
    from distill.models import autocast, build_model

    torch.manual_seed(0)
    model = build_model("res8_narrow", 12)
    x = torch.randn(4, 8000) * 0.1
    with autocast("cpu", "fp32"):
        assert model(x).dtype == torch.float32
    with autocast("cpu", "bf16"):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.arange(4))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad(), autocast("cpu", "bf16"):
        assert torch.allclose(model(x).float(), model.float()(x).float(), atol=0.2)  # bf16: close, not equal
