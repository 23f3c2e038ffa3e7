"""The log-mel front end (torchaudio)."""

from __future__ import annotations

import numpy as np
import torch

from distill.core.features import FeatureConfig, LogMel


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


def test_band_normalisation_cancels_a_fixed_colouring_that_utterance_cmvn_keeps():
    from distill.core.features import log_and_normalize
    mel = torch.rand(2, 40, 101) + 1.0  # well above log's 1e-6 offset
    tilt = torch.logspace(0, -2, 40)[None, :, None]  # a fixed spectral tilt: 20 dB from low to high bands
    band = log_and_normalize(mel, "band"), log_and_normalize(mel * tilt, "band")
    assert torch.allclose(*band, atol=1e-3)
    assert not torch.allclose(log_and_normalize(mel, "utterance"), log_and_normalize(mel * tilt, "utterance"), atol=0.1)
    assert band[0].mean().abs() < 1e-5 and (band[0].std() - 1).abs() < 1e-3  # still zero-mean, unit-variance
    assert torch.allclose(band[0].mean(dim=3), torch.zeros(2, 1, 40), atol=1e-5)  # each band: zero mean over time


def test_cepstral_smoothing_keeps_the_envelope_and_drops_the_harmonic_ripple():
    from distill.core.features import cepstral_smoothing, log_and_normalize
    basis = lambda k: torch.cos(torch.pi * (torch.arange(40) + 0.5) * k / 40)  # noqa: E731  (DCT-II, 40 bands)
    envelope = 2.0 * basis(1) - 0.7 * basis(4) + 0.3 * basis(12)  # a slow spectral shape: the first 13 bases
    ripple = 0.8 * basis(30)  # a fast alternation across bands: resolved harmonics
    mel = torch.exp(envelope + ripple)[None, :, None].expand(2, 40, 7)
    smoothing = cepstral_smoothing(FeatureConfig(cepstra=13, normalize="none"))
    smoothed = log_and_normalize(mel, "none", smoothing)[0, 0, :, 0]
    assert (smoothed - envelope).abs().max() < 1e-4 and (torch.log(mel[0, :, 0]) - envelope).abs().max() > 0.5
    # every coefficient kept: the log-mel as it is; none asked for: no matrix and no buffer in checkpoints
    assert torch.allclose(cepstral_smoothing(FeatureConfig(cepstra=40)), torch.eye(40), atol=1e-5)
    assert cepstral_smoothing(FeatureConfig()) is None
    assert set(LogMel(FeatureConfig(cepstra=13)).state_dict()) == set(LogMel().state_dict())
    # before the normalisation: the features stay zero-mean, unit-variance per input
    feats = LogMel(FeatureConfig(cepstra=13))(torch.randn(2, 8000) * 0.1)
    assert feats.mean(dim=(2, 3)).abs().max() < 1e-5 and (feats.std(dim=(2, 3)) - 1).abs().max() < 1e-3


def test_more_cepstra_than_bands_is_refused_naming_the_field():
    import pytest
    with pytest.raises(ValueError, match="features.cepstra is 41: at most features.n_mels"):
        FeatureConfig(cepstra=41)


def test_logmel_stays_fp32_under_mixed_precision():
    """bf16 autocast (train.precision / relabel.precision): the network runs in bf16, the front end
    in fp32, so the features are those of fp32 to the bit."""
    lm = LogMel(FeatureConfig(cepstra=13))
    wave = torch.randn(2, 8000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = lm(wave)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, lm(wave))
