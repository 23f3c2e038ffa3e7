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
