"""Training-time augmentation (``distill.core.augment``): shift, noise, SpecAugment masks, seeding."""

import numpy as np
import pytest
import torch

from distill.core.augment import (AugmentConfig, NoiseBank, augment_waveforms, batch_generator, frequency_warps,
                                  mix_inputs, mix_styles, mixups, spectrogram_masks, style_mixes)
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


# --- augmentations for other voices, rooms and channels (speed, reverb, gain, band, codec) ---

from distill.core.augment import RoomBank  # noqa: E402

ALONE = dict(time_shift_ms=0, noise_prob=0)  # one new option at a time, nothing else


@pytest.fixture(scope="module")
def rooms() -> RoomBank:
    return RoomBank.generated(0, 16, SR)


def sine(freq: float, n: int = 4, length: int = SR, level: float = 0.1) -> torch.Tensor:
    t = torch.arange(length, dtype=torch.float64) / SR
    return (level * np.sqrt(2) * torch.sin(2 * torch.pi * freq * t)).float()[None, :].repeat(n, 1)


def peak_hz(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.rfft(x, dim=-1).abs().argmax(dim=-1).double() * SR / x.shape[-1]


def db(ratio) -> float:
    return 10 * float(np.log10(float(ratio)))


def _todays_shift_and_noise(x, cfg, noise, sample_rate, generator):
    """The augmentation as it was before speed/reverb/gain/band/codec: shift, then noise."""
    n, length = x.shape
    max_shift = min(int(round(cfg.time_shift_ms * sample_rate / 1000)), length - 1)
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator).to(x.device)
        source = torch.arange(length, device=x.device)[None, :] - shifts[:, None]
        inside = (source >= 0) & (source < length)
        x = torch.gather(x, 1, source.clamp(0, length - 1)) * inside
    if cfg.mixes_noise and noise is not None:
        mixed = torch.rand(n, generator=generator) < cfg.noise_prob
        volume = torch.rand(n, generator=generator) * cfg.noise_volume * mixed
        x = x + volume.to(x.device)[:, None] * noise.segments(n, length, generator).to(x.dtype)
    return x


NEW_ON = [dict(speed_prob=1.0), dict(reverb_prob=1.0), dict(gain_prob=1.0), dict(band_prob=1.0), dict(codec_prob=1.0)]


def test_new_options_off_give_todays_output_bit_for_bit(rooms):
    x = ramp(16, 8000) - 0.5
    bank = NoiseBank.generated(0, SR)
    off_but_changed = dict(speed_prob=0, speed_range=(0.5, 2.0), reverb_prob=0, reverb_rooms=3, gain_prob=0,
                           gain_db_range=(-3, 3), band_prob=0, highpass_hz_range=(10, 20), codec_prob=0)
    for base in (dict(), dict(time_shift_ms=30, noise_prob=0.5, noise_volume=0.3, spec_time_masks=2, spec_freq_masks=1)):
        cfg = AugmentConfig(**base, **off_but_changed)
        g_new, g_old = batch_generator(7, 1, 0, 3), batch_generator(7, 1, 0, 3)
        new = augment_waveforms(x, cfg, bank, SR, g_new, rooms)
        assert torch.equal(new, _todays_shift_and_noise(x, AugmentConfig(**base), bank, SR, g_old))
        # the generator is left where today's code leaves it: the SpecAugment masks drawn next agree too
        assert torch.equal(torch.rand(5, generator=g_new), torch.rand(5, generator=g_old))
    for on in NEW_ON:  # enabled false: the identity, whatever the options say
        out = augment_waveforms(x, AugmentConfig(enabled=False, **on), bank, SR, batch_generator(0, 0, 0, 0), rooms)
        assert torch.equal(out, x)


@pytest.mark.parametrize("on", NEW_ON, ids=lambda d: next(iter(d)))
def test_each_new_option_keeps_the_length_and_follows_its_seed(on, rooms):
    x = sine(440, n=6, length=8001) + 0.01 * torch.randn(6, 8001, generator=torch.Generator().manual_seed(0))
    cfg = AugmentConfig(**ALONE, **on)
    assert cfg.active and not cfg.mixes_noise and cfg.reverberates == ("reverb_prob" in on)
    a = augment_waveforms(x, cfg, None, SR, batch_generator(1, 0, 0, 0), rooms)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.equal(a, x)
    assert torch.equal(a, augment_waveforms(x, cfg, None, SR, batch_generator(1, 0, 0, 0), rooms))
    if "codec_prob" not in on:  # mu-law at prob 1 draws nothing that changes an output
        assert not torch.equal(a, augment_waveforms(x, cfg, None, SR, batch_generator(1, 0, 0, 1), rooms))
    half = augment_waveforms(x, AugmentConfig(**ALONE, **{next(iter(on)): 0.5}), None, SR,
                             batch_generator(2, 0, 0, 0), rooms)
    same = [torch.equal(h, r) for h, r in zip(half, x)]
    assert any(same) and not all(same)  # a share of the inputs, the rest untouched


@pytest.mark.parametrize("factor", [0.9, 0.95, 1.05, 1.1])
def test_speed_moves_a_sine_by_the_factor(factor):
    x = sine(1000.0)
    out = augment_waveforms(x, AugmentConfig(**ALONE, speed_prob=1.0, speed_range=(factor, factor)), None, SR,
                            batch_generator(0, 0, 0, 0))
    assert torch.allclose(peak_hz(out), torch.full((4,), 1000.0 * factor, dtype=torch.float64), atol=2.0)
    if factor > 1:  # played faster: the same length, zero-padded at both ends
        pad = int((SR - SR / factor) / 2) - 2
        assert out[:, :pad].abs().max() == 0 and out[:, -pad:].abs().max() == 0
    else:  # slower: cropped, no zeros
        assert (out[:, 10:-10].abs().amax(dim=1) > 0.1).all()
    spread = augment_waveforms(sine(1000.0, n=64), AugmentConfig(**ALONE, speed_prob=1.0), None, SR,
                               batch_generator(0, 0, 0, 1))
    hz = peak_hz(spread)
    assert hz.min() >= 898 and hz.max() <= 1102 and hz.max() - hz.min() > 100


def test_room_bank_is_deterministic_and_starts_at_the_direct_path():
    a, b = RoomBank.generated(3, 3, SR), RoomBank.generated(3, 3, SR)
    assert torch.equal(a.rirs, b.rirs) and torch.equal(a.rt60, b.rt60)
    assert not torch.equal(a.rirs, RoomBank.generated(4, 3, SR).rirs)
    assert a.rirs.shape == (3, SR // 2)
    assert torch.equal(a.rirs[:, 0], torch.ones(3)) and torch.equal(a.rirs.abs().argmax(dim=1), torch.zeros(3).long())


def test_room_bank_reverberation_times_are_the_asked_ones(rooms):
    import pyroomacoustics as pra

    assert ((rooms.rt60 >= 0.15) & (rooms.rt60 <= 0.8)).all()
    # Schroeder backward integration, T20 (the responses are cut at 0.5 s)
    measured = torch.tensor([pra.experimental.measure_rt60(h.numpy(), SR, decay_db=20) for h in rooms.rirs])
    assert ((measured >= 0.05) & (measured <= 0.9)).float().mean() >= 0.8  # the asked range ±0.1 s
    assert ((measured - rooms.rt60).abs() <= 0.1).float().mean() >= 0.75  # and mostly each room's own


def test_reverb_gives_a_click_a_decaying_tail_at_the_same_rms(rooms):
    x = torch.zeros(8, SR)
    x[:, 1000] = 0.5
    out = augment_waveforms(x, AugmentConfig(**ALONE, reverb_prob=1.0), None, SR, batch_generator(0, 0, 0, 0), rooms)
    assert torch.allclose(out.pow(2).mean(dim=1).sqrt(), x.pow(2).mean(dim=1).sqrt(), rtol=1e-4)
    assert out[:, :1000].abs().max() < 1e-4  # causal: nothing before the click
    window = int(0.05 * SR)
    early = out[:, 1000 + 16: 1000 + 16 + window].pow(2).sum(dim=1)
    late = out[:, 1000 + 4 * window: 1000 + 5 * window].pow(2).sum(dim=1)
    assert (early > 0).all() and (late < early).all()  # a tail, and it decays
    with pytest.raises(ValueError, match="RoomBank"):
        augment_waveforms(x, AugmentConfig(**ALONE, reverb_prob=1.0), None, SR, batch_generator(0, 0, 0, 0))


def test_band_limiting_removes_what_lies_outside_the_band():
    white = torch.randn(8, SR, generator=torch.Generator().manual_seed(0)) * 0.1
    cfg = AugmentConfig(**ALONE, band_prob=1.0, highpass_hz_range=(300, 300), lowpass_hz_range=(3000, 3000))
    out = augment_waveforms(white, cfg, None, SR, batch_generator(0, 0, 0, 0))
    hz = torch.fft.rfftfreq(SR, 1 / SR)
    power_in, power_out = torch.fft.rfft(white).abs().pow(2), torch.fft.rfft(out).abs().pow(2)

    def drop(band):
        return db(power_in[:, band].sum() / power_out[:, band].sum().clamp_min(1e-30))

    assert drop(hz >= 3000) >= 20 and drop(hz <= 300) >= 20
    assert abs(drop((hz >= 300 * 2 ** 0.25) & (hz <= 3000 * 2 ** -0.25))) < 0.01  # the passband untouched
    spread = augment_waveforms(white, AugmentConfig(**ALONE, band_prob=1.0), None, SR, batch_generator(0, 0, 0, 1))
    top = torch.fft.rfft(spread).abs().pow(2)
    edge = [int(hz[row > row.max() * 1e-8].max()) for row in top]  # highest frequency let through, per input
    assert min(edge) >= 3000 and len(set(edge)) > 1


def test_codec_is_mu_law_at_its_expected_snr():
    g = torch.Generator().manual_seed(0)
    speechlike = sine(220.0, n=8) + sine(1300.0, n=8, level=0.03) + 0.01 * torch.randn(8, SR, generator=g)
    out = augment_waveforms(speechlike, AugmentConfig(**ALONE, codec_prob=1.0), None, SR, batch_generator(0, 0, 0, 0))
    assert not torch.equal(out, speechlike)
    snr = db(speechlike.pow(2).sum() / (out - speechlike).pow(2).sum())
    assert 20 <= snr <= 45
    loud = augment_waveforms(torch.full((1, 100), 3.0), AugmentConfig(**ALONE, codec_prob=1.0), None, SR,
                             batch_generator(0, 0, 0, 0))
    assert torch.allclose(loud, torch.ones(1, 100))  # clipped to [-1, 1] before encoding


def test_gain_scales_by_the_drawn_decibels_before_clipping():
    x = sine(500.0, n=32, level=0.01)
    for fixed in (-6.0, 6.0):
        out = augment_waveforms(x, AugmentConfig(**ALONE, gain_prob=1.0, gain_db_range=(fixed, fixed)), None, SR,
                                batch_generator(0, 0, 0, 0))
        ratio = 20 * torch.log10(out.pow(2).mean(dim=1).sqrt() / x.pow(2).mean(dim=1).sqrt())
        assert torch.allclose(ratio, torch.full_like(ratio, fixed), atol=0.1)
    cfg = AugmentConfig(**ALONE, gain_prob=1.0)
    out = augment_waveforms(x, cfg, None, SR, batch_generator(0, 0, 0, 1))
    g = batch_generator(0, 0, 0, 1)  # the draws, in augment_waveforms' order: chosen, then gains
    torch.rand(32, generator=g)
    drawn = -10 + 20 * torch.rand(32, generator=g, dtype=torch.float64)
    ratio = 20 * torch.log10(out.pow(2).mean(dim=1).sqrt() / x.pow(2).mean(dim=1).sqrt()).double()
    assert torch.allclose(ratio, drawn, atol=0.1) and drawn.max() - drawn.min() > 10
    loud = augment_waveforms(torch.full((2, 10), 0.5), AugmentConfig(**ALONE, gain_prob=1.0, gain_db_range=(20, 20)),
                             None, SR, batch_generator(0, 0, 0, 0))
    assert torch.equal(loud, torch.ones(2, 10))  # clipped


def test_gain_moves_the_snr_of_the_noise_mixed_after_it():
    x = sine(500.0, n=2, level=0.1)
    bank = NoiseBank.from_arrays([np.ones(3000, np.float32)])
    cfg = AugmentConfig(time_shift_ms=0, noise_prob=1.0, noise_volume=0.05, gain_prob=1.0, gain_db_range=(-6, -6))
    added = augment_waveforms(x, cfg, bank, SR, batch_generator(0, 0, 0, 0)) - x * 10 ** (-6 / 20)
    # what is left is the constant noise at its drawn volume: the speech quieter by 6 dB, the noise not
    assert torch.allclose(added, added[:, :1].expand_as(added), atol=1e-6) and (added[:, 0] > 0).all()


def test_new_ranges_are_checked():
    from pydantic import ValidationError

    for bad in ({"speed_range": (1.1, 0.9)}, {"speed_range": (0, 1)}, {"gain_db_range": (float("nan"), 1)},
                {"highpass_hz_range": (50, 4000)}, {"reverb_rt60_range": (-0.1, 0.5)}, {"codec_prob": 2},
                {"reverb_rooms": 0}, {"speed_range": (1.0,)}):
        with pytest.raises(ValidationError):
            AugmentConfig(**bad)
    assert AugmentConfig(speed_range=[0.8, 1.2]).speed_range == (0.8, 1.2)


def band_centroid(mel_power: torch.Tensor) -> torch.Tensor:
    """Each input's mean mel band, weighted by its power: (batch, n_mels, frames) → (batch,)."""
    power = mel_power.sum(dim=2)
    return (power * torch.arange(power.shape[1])).sum(dim=1) / power.sum(dim=1)


def test_frequency_warp_off_draws_nothing_and_on_follows_its_seed_and_share():
    g = batch_generator(3, 0, 0, 0)
    assert frequency_warps(8, AugmentConfig(warp_range=(0.5, 2.0)), g) is None
    assert frequency_warps(8, AugmentConfig(enabled=False, warp_prob=1.0), g) is None
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=batch_generator(3, 0, 0, 0)))
    cfg = AugmentConfig(warp_prob=0.5, warp_range=(0.9, 1.1))
    assert cfg.active
    a = frequency_warps(2000, cfg, batch_generator(1, 0, 0, 0))
    assert torch.equal(a, frequency_warps(2000, cfg, batch_generator(1, 0, 0, 0)))
    assert not torch.equal(a, frequency_warps(2000, cfg, batch_generator(1, 0, 0, 1)))
    warped = a != 1.0
    assert 0.45 < warped.float().mean() < 0.55  # the asked share, the others exactly 1
    assert a[warped].min() >= 0.9 and a[warped].max() <= 1.1 and a[warped].std() > 0.05


def test_frequency_warp_moves_a_tone_by_its_factor_and_factor_one_is_the_plain_front_end():
    from distill.core.features import FeatureConfig, LogMel, warped_filterbank

    front = LogMel(FeatureConfig(normalize="none"))
    fb = front.melspec.mel_scale.fb
    assert torch.equal(warped_filterbank(fb, torch.ones(3)), fb.expand(3, *fb.shape))
    x = sine(1000.0, n=3)
    assert torch.allclose(front(x, torch.ones(3)), front(x), atol=1e-4)
    for factor in (0.9, 1.1):
        warped = front(x, torch.full((3,), factor)).squeeze(1).exp()  # log-mel back to mel power
        moved = front(sine(1000.0 * factor, n=3)).squeeze(1).exp()
        plain = front(x).squeeze(1).exp()
        shift = band_centroid(warped) - band_centroid(plain)
        assert (shift.sign() == np.sign(factor - 1)).all() and (shift.abs() > 0.8).all()  # about a band or more
        assert torch.allclose(band_centroid(warped), band_centroid(moved), atol=0.05)  # where the moved tone is
        assert warped.shape == plain.shape  # frames and bands kept


def test_frequency_warp_reaches_the_network_through_forward():
    model = build_model("res8_narrow", 12).eval()
    x = sine(700.0, n=4, length=8000) + 0.01 * torch.randn(4, 8000, generator=torch.Generator().manual_seed(0))
    warp = torch.tensor([1.0, 1.1, 1.0, 0.9])
    with torch.no_grad():
        plain, out = model(x), model(x, None, warp)
    assert torch.allclose(out[[0, 2]], plain[[0, 2]], atol=1e-5)
    assert (out[[1, 3]] - plain[[1, 3]]).abs().max() > 1e-3


def test_warp_range_is_checked():
    from pydantic import ValidationError

    for bad in ({"warp_range": (1.1, 0.9)}, {"warp_range": (0.0, 1.1)}, {"warp_prob": 1.5}):
        with pytest.raises(ValidationError):
            AugmentConfig(**bad)


@pytest.mark.parametrize("draw, option", [(style_mixes, "mixstyle"), (mixups, "mixup")])
def test_a_partner_draw_off_draws_nothing_and_on_follows_its_seed_share_and_alpha(draw, option):
    g = batch_generator(3, 0, 0, 0)
    assert draw(8, AugmentConfig(), g) is None
    assert draw(8, AugmentConfig(enabled=False, **{f"{option}_prob": 1.0}), g) is None
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=batch_generator(3, 0, 0, 0)))
    cfg = AugmentConfig(**{f"{option}_prob": 0.5})
    assert cfg.active
    partner, weight = draw(2000, cfg, batch_generator(1, 0, 0, 0))
    again = draw(2000, cfg, batch_generator(1, 0, 0, 0))
    assert torch.equal(partner, again[0]) and torch.equal(weight, again[1])
    assert not torch.equal(weight, draw(2000, cfg, batch_generator(1, 0, 0, 1))[1])
    assert torch.equal(partner.sort().values, torch.arange(2000))  # a permutation of the batch
    mixed = weight != 1.0
    assert 0.45 < mixed.float().mean() < 0.55  # the asked share, the others exactly 1
    w = weight[mixed]
    assert w.min() >= 0 and w.max() <= 1
    assert ((w < 0.1) | (w > 0.9)).float().mean() > 0.4  # Beta(0.3, 0.3): most weights near an end
    flat = draw(4000, AugmentConfig(**{f"{option}_prob": 1.0, f"{option}_alpha": 50.0}), batch_generator(1, 0, 0, 0))[1]
    assert abs(flat.mean() - 0.5) < 0.01 and flat.std() < 0.1  # a large alpha: weights near 1/2


def test_style_mix_gives_each_band_its_mixed_statistics_and_keeps_the_rest():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 1, 40, 51, generator=gen) * (torch.rand(3, 1, 40, 1, generator=gen) * 3 + 0.5) \
        + torch.randn(3, 1, 40, 1, generator=gen) * 2
    partner, weight = torch.tensor([1, 2, 0]), torch.tensor([0.25, 1.0, 0.0])
    out = mix_styles(feats, partner, weight)
    assert out.shape == feats.shape
    assert torch.equal(out[1], feats[1])  # weight 1: unchanged, to the bit
    mean, std = feats.mean(-1), feats.std(-1, unbiased=False)
    for row, w in ((0, 0.25), (2, 0.0)):
        p = partner[row]
        assert torch.allclose(out[row].mean(-1), w * mean[row] + (1 - w) * mean[p], atol=1e-4)
        assert torch.allclose(out[row].std(-1, unbiased=False), w * std[row] + (1 - w) * std[p], atol=1e-3)
        # the time course within each band is the input's own, only its level and spread change
        own = (feats[row] - mean[row][..., None]) / std[row][..., None]
        new = (out[row] - out[row].mean(-1, keepdim=True)) / out[row].std(-1, unbiased=False, keepdim=True)
        assert torch.allclose(own, new, atol=1e-3)
    feats.requires_grad_(True)
    mix_styles(feats, partner, weight).sum().backward()  # statistics detached: gradient flows only through x
    assert torch.isfinite(feats.grad).all()


def test_style_mix_reaches_the_network_through_forward():
    model = build_model("res8_narrow", 12).eval()
    x = sine(700.0, n=4, length=8000) + 0.05 * torch.randn(4, 8000, generator=torch.Generator().manual_seed(0))
    x[2:] = sine(2500.0, n=2, length=8000) + 0.05 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    mix = (torch.tensor([2, 3, 0, 1]), torch.tensor([1.0, 0.0, 1.0, 0.5]))
    with torch.no_grad():
        plain, out = model(x), model(x, None, None, mix)
    assert torch.equal(out[[0, 2]], plain[[0, 2]])
    assert (out[[1, 3]] - plain[[1, 3]]).abs().max() > 1e-3


def test_mixup_alone_runs_the_augmentation_and_its_values_are_checked():
    assert not AugmentConfig(time_shift_ms=0, noise_prob=0).active
    assert AugmentConfig(time_shift_ms=0, noise_prob=0, mixup_prob=0.5).active
    with pytest.raises(Exception):
        AugmentConfig(mixup_prob=1.5)
    with pytest.raises(Exception):
        AugmentConfig(mixup_alpha=0.0)


def test_mixup_mixes_each_waveform_with_its_partner_by_its_weight():
    x = ramp(4, 8000) - 0.5
    partner, weight = torch.tensor([1, 0, 3, 2]), torch.tensor([1.0, 0.25, 0.0, 0.6])
    out = mix_inputs(x, partner, weight)
    assert out.shape == x.shape
    assert torch.equal(out[0], x[0])  # weight 1: unchanged, to the bit
    assert torch.allclose(out[1], 0.25 * x[1] + 0.75 * x[0])
    assert torch.allclose(out[2], x[3])
    assert torch.allclose(out[3], 0.6 * x[3] + 0.4 * x[2])
