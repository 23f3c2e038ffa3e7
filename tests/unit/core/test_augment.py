"""Training-time augmentation (``distill.core.augment``): shift, noise, SpecAugment masks, seeding."""

import numpy as np
import pytest
import torch

from distill.core.augment import AugmentConfig, NoiseBank, augment_waveforms, batch_generator, spectrogram_masks
from distill.core.models import build_model

SR = 16000


def ramp(n: int = 8, length: int = 4000) -> torch.Tensor:
    """Rows whose every sample is distinct and non-zero, so a shift can be read back exactly."""
    return (torch.arange(1, length + 1, dtype=torch.float32)[None, :] / length + torch.arange(n)[:, None]) / n


def test_shift_keeps_the_length_and_moves_each_input_by_at_most_the_limit():
    x = ramp()
    cfg = AugmentConfig(time_shift_ms=50, noise_prob=0)
    out = augment_waveforms(x, cfg, None, SR, batch_generator(0, 0, 0, 0))
    assert out.shape == x.shape
    limit = 50 * SR // 1000
    shifts = []
    for row, orig in zip(out, x):
        nz = torch.nonzero(row).flatten()
        start, end = int(nz[0]), int(nz[-1]) + 1
        if start > 0:  # moved later: the first samples are zeros, then the input from its start
            shift = start
            assert torch.equal(row[start:], orig[: len(orig) - start])
        else:  # moved earlier (or not at all): the input from `shift` on, then zeros
            shift = -(len(orig) - end)
            assert torch.equal(row[:end], orig[len(orig) - end:])
        assert abs(shift) <= limit
        shifts.append(shift)
    assert len(set(shifts)) > 1  # each input draws its own shift


def test_noise_is_mixed_at_the_asked_volume_and_probability():
    x = torch.zeros(4000, 1600)
    bank = NoiseBank.from_arrays([np.ones(3000, np.float32)])  # constant noise: the added level is the volume
    out = augment_waveforms(x, AugmentConfig(time_shift_ms=0, noise_prob=0.25, noise_volume=0.3), bank, SR,
                            batch_generator(1, 0, 0, 0))
    level = out[:, 0]
    assert torch.allclose(out, level[:, None].expand_as(out))  # one volume per input
    mixed = level > 0
    assert abs(mixed.float().mean().item() - 0.25) < 0.03  # 4000 draws: ±3 standard deviations
    assert level.max() <= 0.3 and level.max() > 0.29 and level[mixed].min() < 0.01  # uniform over [0, 0.3]
    always = augment_waveforms(x[:200], AugmentConfig(time_shift_ms=0, noise_prob=1.0, noise_volume=0.3), bank, SR,
                               batch_generator(1, 0, 0, 1))
    assert (always[:, 0] > 0).float().mean() > 0.98


def test_noise_segments_come_from_the_recordings_and_wrap_short_ones():
    bank = NoiseBank.from_arrays([np.arange(1, 101, dtype=np.float32), np.full(5000, -1.0, np.float32)])
    segs = bank.segments(300, 250, torch.Generator().manual_seed(0))
    assert segs.shape == (300, 250)
    short = segs[segs[:, 0] > 0]  # from the 100-sample recording, repeated to fill 250 samples
    assert len(short) and all(torch.equal((row[1:] - row[:-1]) % 100, torch.ones(249)) for row in short)
    assert torch.all(segs[segs[:, 0] < 0] == -1)
    int16 = NoiseBank.from_arrays([np.full(10, 16384, np.int16)])
    assert torch.allclose(int16.audio, torch.full((1, 10), 0.5))  # int16 recordings are scaled to [-1, 1]
    generated = NoiseBank.generated(0, SR)
    assert torch.allclose(generated.audio.pow(2).mean(dim=1).sqrt(), torch.full((2,), 0.1), atol=1e-4)


def test_a_seed_gives_the_same_batch_and_another_batch_differs():
    x = ramp()
    bank = NoiseBank.generated(0, SR)
    cfg = AugmentConfig()
    a = augment_waveforms(x, cfg, bank, SR, batch_generator(3, 2, 0, 5))
    b = augment_waveforms(x, cfg, bank, SR, batch_generator(3, 2, 0, 5))
    assert torch.equal(a, b)
    for other in (batch_generator(3, 2, 0, 6), batch_generator(3, 3, 0, 5), batch_generator(3, 2, 1, 5),
                  batch_generator(4, 2, 0, 5)):
        assert not torch.equal(a, augment_waveforms(x, cfg, bank, SR, other))


def test_off_is_the_identity():
    x = (torch.randn(4, 8000) * 3000).to(torch.int16)
    off = AugmentConfig(enabled=False, spec_time_masks=2, spec_freq_masks=2)
    out = augment_waveforms(x, off, NoiseBank.generated(0, SR), SR, batch_generator(0, 0, 0, 0))
    assert torch.equal(out, x.float() / 32768.0)
    assert spectrogram_masks((4, 1, 40, 51), off, 10.0, batch_generator(0, 0, 0, 0)) is None
    assert not off.active and not AugmentConfig(time_shift_ms=0, noise_prob=0).active and AugmentConfig().active


def test_spectrogram_masks_respect_their_widths_and_reach_the_network():
    cfg = AugmentConfig(spec_time_masks=2, spec_time_mask_ms=40, spec_freq_masks=1, spec_freq_mask_bands=6)
    assert spectrogram_masks((2, 1, 40, 51), AugmentConfig(), 10.0, batch_generator(0, 0, 0, 0)) is None
    mask = spectrogram_masks((500, 1, 40, 51), cfg, 10.0, batch_generator(0, 0, 0, 0))
    assert mask.shape == (500, 1, 40, 51) and mask.dtype == torch.bool
    freq_rows = mask[:, 0].all(dim=2).sum(dim=1)  # bands masked over all frames: the frequency mask
    time_cols = mask[:, 0].all(dim=1).sum(dim=1)  # frames masked over all bands: the time masks
    assert freq_rows.max() == 6 and freq_rows.min() == 0
    assert time_cols.max() <= 8 and time_cols.max() >= 5  # two masks of up to 4 frames each
    model = build_model("tiny", 3).eval()
    x = torch.randn(2, 8000)
    one = spectrogram_masks((2, 1, 40, model.features.frames(8000)), cfg, 10.0, batch_generator(0, 0, 0, 1))
    with torch.no_grad():
        assert torch.allclose(model(x, one), model.net(model.features(x).masked_fill(one, 0.0)))
        assert torch.equal(model(x, None), model(x))


def test_augment_config_refuses_bad_values():
    from pydantic import ValidationError

    for bad in ({"noise_prob": 1.5}, {"time_shift_ms": -1}, {"spec_time_masks": -1}, {"bogus": 1}):
        with pytest.raises(ValidationError):
            AugmentConfig(**bad)
