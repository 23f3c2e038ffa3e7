"""Training-time data augmentation for keyword spotting, in plain PyTorch.

The standard recipe (Honk; TensorFlow's speech_commands; kws_streaming adds SpecAugment):
- time shift: each input moves by up to ``time_shift_ms`` either way inside its own length,
  the gap filled with zeros (then covered by the noise below);
- background noise: with probability ``noise_prob`` a random stretch of a background-noise
  recording, scaled by a volume drawn uniformly from [0, ``noise_volume``], is added;
- SpecAugment (optional): ``spec_time_masks`` / ``spec_freq_masks`` bands of the log-mel set
  to its mean (0 after the per-input normalisation).

Every random draw comes from a ``torch.Generator`` seeded by (seed, epoch, rank, batch)
(``batch_generator``), made on the CPU, so a run is reproducible on CPUs and GPUs alike; the
arithmetic itself runs on the batch's device, inside the training step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

NOISE_RMS = 0.1  # generated noise is at the level of the synthetic corpus's noise files (-20 dBFS)


class AugmentConfig(BaseModel):
    """``train.augment``: the defaults are the standard recipe's (shift ±100 ms; noise on 80 % of
    inputs at volume up to 0.1); SpecAugment is off unless asked for."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="false: train on the inputs exactly as stored (every option below off).")
    time_shift_ms: float = Field(100.0, ge=0, description="Largest shift of an input in time, either way, in ms.")
    noise_prob: float = Field(0.8, ge=0, le=1, description="Share of inputs that get background noise mixed in.")
    noise_volume: float = Field(0.1, ge=0, description="Largest noise volume (the scale drawn from [0, this] per input).")
    spec_time_masks: int = Field(0, ge=0, description="SpecAugment: time masks per input (0: none).")
    spec_time_mask_ms: float = Field(50.0, gt=0, description="SpecAugment: widest time mask, in ms.")
    spec_freq_masks: int = Field(0, ge=0, description="SpecAugment: frequency masks per input (0: none).")
    spec_freq_mask_bands: int = Field(5, gt=0, description="SpecAugment: widest frequency mask, in mel bands.")

    @property
    def mixes_noise(self) -> bool:
        return self.enabled and self.noise_prob > 0 and self.noise_volume > 0

    @property
    def active(self) -> bool:
        return self.mixes_noise or self.enabled and (self.time_shift_ms > 0 or self.spec_time_masks > 0
                                                     or self.spec_freq_masks > 0)


def batch_generator(seed: int, epoch: int, rank: int, batch: int) -> torch.Generator:
    """A CPU generator private to one batch of one worker in one epoch."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{rank}/{batch}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


@dataclass
class NoiseBank:
    """Background-noise recordings as one (files, samples) float tensor, each row
    zero-padded to the longest and its true length kept."""

    audio: torch.Tensor  # (files, samples) float32 in [-1, 1]
    lengths: torch.Tensor  # (files,) int64

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray]) -> "NoiseBank":
        if not arrays:
            raise ValueError("a noise bank needs at least one recording")
        longest = max(len(a) for a in arrays)
        audio = torch.zeros(len(arrays), longest)
        for i, a in enumerate(arrays):
            x = torch.as_tensor(np.asarray(a, dtype=np.float32))
            audio[i, : len(x)] = x / 32768.0 if np.asarray(a).dtype == np.int16 else x
        return cls(audio, torch.tensor([len(a) for a in arrays], dtype=torch.int64))

    @classmethod
    def generated(cls, seed: int, samples: int) -> "NoiseBank":
        """White and pink noise at ``NOISE_RMS``, for a dataset that has no noise recordings."""
        g = torch.Generator().manual_seed(seed)
        white = torch.randn(samples, generator=g)
        spectrum = torch.fft.rfft(torch.randn(samples, generator=g))
        pink = torch.fft.irfft(spectrum / torch.arange(1, len(spectrum) + 1).sqrt(), samples)
        rows = [x * (NOISE_RMS / x.pow(2).mean().sqrt()) for x in (white, pink)]
        return cls(torch.stack(rows), torch.full((2,), samples, dtype=torch.int64))

    def to(self, device: torch.device | str) -> "NoiseBank":
        return NoiseBank(self.audio.to(device), self.lengths.to(device))

    def segments(self, n: int, samples: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random stretches of ``samples`` samples (a recording shorter than that repeats)."""
        files = torch.randint(len(self.lengths), (n,), generator=generator)
        lengths = self.lengths.cpu()[files]
        starts = (torch.rand(n, generator=generator) * lengths).long()
        positions = (starts[:, None] + torch.arange(samples)[None, :]) % lengths[:, None]
        return self.audio[files.to(self.audio.device)[:, None], positions.to(self.audio.device)]


def augment_waveforms(x: torch.Tensor, cfg: AugmentConfig, noise: NoiseBank | None, sample_rate: int,
                      generator: torch.Generator) -> torch.Tensor:
    """Time shift and background noise of a batch ``(batch, samples)``: float waveforms in
    [-1, 1] (int16 is scaled first). Returns a new tensor of the same shape."""
    if x.dtype == torch.int16:
        x = x.float() / 32768.0
    if not cfg.enabled:
        return x
    n, length = x.shape
    max_shift = min(int(round(cfg.time_shift_ms * sample_rate / 1000)), length - 1)
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator).to(x.device)
        source = torch.arange(length, device=x.device)[None, :] - shifts[:, None]  # out[t] = x[t - shift]
        inside = (source >= 0) & (source < length)
        x = torch.gather(x, 1, source.clamp(0, length - 1)) * inside
    if cfg.mixes_noise and noise is not None:
        mixed = torch.rand(n, generator=generator) < cfg.noise_prob
        volume = torch.rand(n, generator=generator) * cfg.noise_volume * mixed
        x = x + volume.to(x.device)[:, None] * noise.segments(n, length, generator).to(x.dtype)
    return x


def spectrogram_masks(shape: tuple[int, int, int, int], cfg: AugmentConfig, hop_ms: float,
                      generator: torch.Generator) -> torch.Tensor | None:
    """SpecAugment masks for log-mel features of ``shape`` (batch, 1, mels, frames): True where
    a feature is masked; None when no mask is asked for. (Not torchaudio's masking: it draws
    from the global RNG, which a per-batch generator cannot seed.)"""
    if not cfg.enabled or not (cfg.spec_time_masks or cfg.spec_freq_masks):
        return None
    n, _, mels, frames = shape
    mask = torch.zeros(n, mels, frames, dtype=torch.bool)

    def bands(count: int, widest: int, size: int) -> torch.Tensor:  # (n, size) True inside any band
        width = (torch.rand(n, count, generator=generator) * (min(widest, size) + 1)).long()
        start = (torch.rand(n, count, generator=generator) * (size - width + 1)).long()
        pos = torch.arange(size)[None, None, :]
        return ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(dim=1)

    if cfg.spec_freq_masks:
        mask |= bands(cfg.spec_freq_masks, cfg.spec_freq_mask_bands, mels)[:, :, None]
    if cfg.spec_time_masks:
        mask |= bands(cfg.spec_time_masks, max(1, int(round(cfg.spec_time_mask_ms / hop_ms))), frames)[:, None, :]
    return mask[:, None]
