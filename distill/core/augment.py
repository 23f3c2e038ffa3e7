"""Training-time data augmentation for keyword spotting, in plain PyTorch.

The standard recipe (Honk; TensorFlow's speech_commands; kws_streaming adds SpecAugment):
- time shift: each input moves by up to ``time_shift_ms`` either way inside its own length,
  the gap filled with zeros (then covered by the noise below);
- background noise: with probability ``noise_prob`` a random stretch of a background-noise
  recording, scaled by a volume drawn uniformly from [0, ``noise_volume``], is added;
- SpecAugment (optional): ``spec_time_masks`` / ``spec_freq_masks`` bands of the log-mel set
  to its mean (0 after the per-input normalisation).

Off by default, for a model trained on synthetic speech to carry over to other voices, rooms
and channels (each on a share ``*_prob`` of the inputs, in this order: speech → room → level →
+ noise → channel):
- speed perturbation (Ko et al. 2015): tempo and pitch together, a factor per input drawn
  log-uniformly from ``speed_range``;
- room reverberation: a room impulse response from a ``RoomBank`` (image-method shoebox rooms,
  pyroomacoustics) convolved in, the input's RMS kept;
- gain: a level in dB from ``gain_db_range`` before the noise, so it moves the SNR;
- band-limiting: a high-pass and a low-pass edge per input, as an FFT-domain mask;
- codec: 8-bit mu-law encode and decode;
- frequency warp (vocal tract length perturbation, Jaitly & Hinton 2013): the spectrum's
  frequency axis scaled by a factor per input, drawn uniformly from ``warp_range``, so formants
  and pitch move while tempo does not (speed moves all three). It warps the mel filterbank, so
  it is drawn here (``frequency_warps``, after the SpecAugment masks) and applied in the front end;
- Freq-MixStyle (MixStyle, Zhou et al. 2021, over frequency bands; used in acoustic scene
  classification for recording devices a model never heard): each log-mel band's mean and
  deviation over time, the timbre of a voice and its channel, mixed with those of another input
  of the batch by a weight drawn from Beta(``mixstyle_alpha``, ``mixstyle_alpha``), so a word is
  heard in another speaker's colouring. Drawn here (``style_mixes``, after the warps) and applied
  to the features, before the SpecAugment masks;
- mixup (Zhang et al. 2018): an input's waveform, after the augmentations above, becomes
  ``w`` × its own + (1 − ``w``) × another input's of the batch, with ``w`` drawn from
  Beta(``mixup_alpha``, ``mixup_alpha``), and the loss is weighted the same way between the two
  inputs' labels. Drawn here (``mixups``, after the style mixes), applied in the training step.

Every random draw comes from a ``torch.Generator`` seeded by (seed, epoch, rank, batch)
(``batch_generator``), made on the CPU, so a run is reproducible on CPUs and GPUs alike; the
arithmetic itself runs on the batch's device, inside the training step.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio.functional as AF
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.core.features import float_waveform

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
    speed_prob: float = Field(0.0, ge=0, le=1, description="Share of inputs played faster or slower (tempo and pitch "
                              "together, same length: centred, cropped or zero-padded at both ends).")
    speed_range: tuple[float, float] = Field((0.9, 1.1), description="Speed factors [low, high] (> 0), drawn "
                                             "log-uniformly per input; 1.1 raises pitch by 10 % and shortens by 1/1.1.")
    reverb_prob: float = Field(0.0, ge=0, le=1, description="Share of inputs convolved with a room impulse response "
                               "(their RMS kept).")
    reverb_rooms: int = Field(64, gt=0, description="Simulated rooms (image method) in the chain's room bank.")
    reverb_rt60_range: tuple[float, float] = Field((0.15, 0.8), description="Reverberation times [low, high] of "
                                                   "the simulated rooms, in s (drawn uniformly per room).")
    gain_prob: float = Field(0.0, ge=0, le=1, description="Share of inputs scaled by a random gain before the "
                             "noise is mixed in (so it moves the SNR); clipped to [-1, 1].")
    gain_db_range: tuple[float, float] = Field((-10.0, 10.0), description="Gains [low, high] in dB, drawn uniformly.")
    band_prob: float = Field(0.0, ge=0, le=1, description="Share of inputs band-limited (telephone-like channel).")
    highpass_hz_range: tuple[float, float] = Field((50.0, 400.0), description="High-pass edge [low, high] in Hz, "
                                                   "drawn uniformly: nothing passes below it.")
    lowpass_hz_range: tuple[float, float] = Field((3000.0, 8000.0), description="Low-pass edge [low, high] in Hz, "
                                                  "drawn uniformly: nothing passes above it.")
    codec_prob: float = Field(0.0, ge=0, le=1, description="Share of inputs through 8-bit mu-law (G.711-like) "
                              "encoding and decoding, last.")
    warp_prob: float = Field(0.0, ge=0, le=1, description="Share of inputs whose spectrum's frequency axis is "
                             "scaled (vocal tract length perturbation): formants and pitch move, tempo does not.")
    warp_range: tuple[float, float] = Field((0.9, 1.1), description="Frequency warp factors [low, high] (> 0), "
                                            "drawn uniformly; 1.1 moves every frequency up by 10 %.")
    mixstyle_prob: float = Field(0.0, ge=0, le=1, description="Freq-MixStyle: share of inputs whose log-mel bands "
                                 "take a mix of their own and another input's mean and deviation over time.")
    mixstyle_alpha: float = Field(0.3, gt=0, description="Freq-MixStyle: the own statistics' weight is drawn from "
                                  "Beta(alpha, alpha); small alphas give weights near 0 or 1.")
    mixup_prob: float = Field(0.0, ge=0, le=1, description="mixup: share of inputs whose waveform is mixed with "
                              "another input's of the batch, the loss weighted between their labels alike.")
    mixup_alpha: float = Field(0.3, gt=0, description="mixup: the own input's weight is drawn from "
                               "Beta(alpha, alpha).")

    @model_validator(mode="after")
    def _ranges(self) -> "AugmentConfig":
        for name in ("speed_range", "reverb_rt60_range", "gain_db_range", "highpass_hz_range", "lowpass_hz_range",
                     "warp_range"):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high) and low <= high):
                raise ValueError(f"{name} must be [low, high], finite, low <= high; got {[low, high]}")
        for name in ("speed_range", "reverb_rt60_range", "highpass_hz_range", "lowpass_hz_range", "warp_range"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name} must be > 0; got {list(getattr(self, name))}")
        if self.highpass_hz_range[1] >= self.lowpass_hz_range[0]:
            raise ValueError("highpass_hz_range must lie below lowpass_hz_range")
        return self

    @property
    def mixes_noise(self) -> bool:
        return self.enabled and self.noise_prob > 0 and self.noise_volume > 0

    @property
    def reverberates(self) -> bool:
        """Whether training needs a ``RoomBank``."""
        return self.enabled and self.reverb_prob > 0

    @property
    def active(self) -> bool:
        return self.mixes_noise or self.enabled and (self.time_shift_ms > 0 or self.spec_time_masks > 0
                                                     or self.spec_freq_masks > 0 or self.speed_prob > 0
                                                     or self.reverb_prob > 0 or self.gain_prob > 0
                                                     or self.band_prob > 0 or self.codec_prob > 0
                                                     or self.warp_prob > 0 or self.mixstyle_prob > 0
                                                     or self.mixup_prob > 0)


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


@dataclass
class RoomBank:
    """Room impulse responses of simulated shoebox rooms as one (rooms, samples) float tensor:
    each starts at its direct-path peak (the propagation delay trimmed), of height 1, and is
    zero-padded to the longest."""

    rirs: torch.Tensor  # (rooms, samples) float32
    rt60: torch.Tensor  # (rooms,) float32: the reverberation time each room was built for, in s

    @classmethod
    def generated(cls, seed: int, count: int, sample_rate: int, rt60_range: tuple[float, float] = (0.15, 0.8),
                  max_seconds: float = 0.5) -> "RoomBank":
        """``count`` rooms by the image method (pyroomacoustics): per room, from a numpy
        generator seeded by ``seed``, an RT60 uniform in ``rt60_range``, a floor 3-10 m long and
        0.6-1 times as wide (at least 2.5 m), 2.4-4 m high, the walls' absorption from the RT60
        by Sabine's formula (``inverse_sabine``), source and microphone anywhere 0.5 m or more
        from the walls. Each response is cut to ``max_seconds``. About 0.3 s a room."""
        import pyroomacoustics as pra  # only the driver builds a bank; the workers need only torch

        rng = np.random.default_rng(seed)
        limit = max(1, int(round(max_seconds * sample_rate)))
        rirs, rt60s = [], []
        while len(rirs) < count:
            rt60 = rng.uniform(*rt60_range)
            length = rng.uniform(3.0, 10.0)
            dims = np.array([length, max(2.5, length * rng.uniform(0.6, 1.0)), rng.uniform(2.4, 4.0)])
            try:
                absorption, max_order = pra.inverse_sabine(rt60, dims)
            except ValueError:  # the room is too large for so short an RT60: draw another
                continue
            room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=max_order)
            room.add_source(rng.uniform(0.5, dims - 0.5))
            room.add_microphone(rng.uniform(0.5, dims - 0.5))
            room.compute_rir()
            h = np.asarray(room.rir[0][0], dtype=np.float64)
            peak = int(np.argmax(np.abs(h)))
            h = h[peak: peak + limit] / h[peak]
            rirs.append(torch.as_tensor(h, dtype=torch.float32))
            rt60s.append(rt60)
        audio = torch.zeros(count, max(len(h) for h in rirs))
        for i, h in enumerate(rirs):
            audio[i, : len(h)] = h
        return cls(audio, torch.tensor(rt60s, dtype=torch.float32))

    def to(self, device: torch.device | str) -> "RoomBank":
        return RoomBank(self.rirs.to(device), self.rt60)


def _chosen(n: int, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Indices (CPU, int64) of the inputs an option with probability ``prob`` applies to."""
    return torch.nonzero(torch.rand(n, generator=generator) < prob).flatten()


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    return bounds[0] + torch.rand(n, generator=generator, dtype=torch.float64) * (bounds[1] - bounds[0])


def _replace(x: torch.Tensor, rows: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``x`` with ``rows`` replaced by ``new``: a new tensor (the caller's batch is not written to)."""
    return x.index_copy(0, rows.to(x.device), new.to(x.dtype))


def change_speed(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Each row played ``factors[i]`` times as fast (tempo and pitch), by linear interpolation
    at fractional indices; the same length out."""
    n, length = x.shape
    centre = (length - 1) / 2
    t = torch.arange(length, device=x.device, dtype=torch.float64)
    # centred: out[centre] = in[centre]; faster inputs are zero-padded at both ends, slower cropped at both
    source = centre + (t[None, :] - centre) * factors.to(x.device, torch.float64)[:, None]
    inside = (source >= 0) & (source <= length - 1)
    left = source.floor().clamp(0, max(length - 2, 0)).long()
    w = (source - left).clamp(0, 1).to(x.dtype)
    right = (left + 1).clamp(max=length - 1)
    return (torch.gather(x, 1, left) * (1 - w) + torch.gather(x, 1, right) * w) * inside


def _fft_size(n: int) -> int:
    """The smallest 2^a·3^b·5^c >= n: an FFT length that is fast everywhere."""
    best = 1 << max(0, (n - 1).bit_length())
    p3 = 1
    while p3 < best:
        p35 = p3
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 5
        p3 *= 3
    return best


def reverberate(x: torch.Tensor, rirs: torch.Tensor) -> torch.Tensor:
    """Each row convolved with its room's response (row i with ``rirs[i]``), cut to the input's
    length (the direct path at index 0: no delay) and rescaled to the dry row's RMS."""
    length = x.shape[1]
    size = _fft_size(length + rirs.shape[1] - 1)  # no wrap-around; torchaudio's fftconvolve takes the exact size
    wet = torch.fft.irfft(torch.fft.rfft(x, size, dim=1) * torch.fft.rfft(rirs.to(x.dtype), size, dim=1), size,
                          dim=1)[:, :length]
    dry_rms, wet_rms = x.pow(2).mean(dim=1).sqrt(), wet.pow(2).mean(dim=1).sqrt()
    return wet * (dry_rms / wet_rms.clamp_min(1e-12))[:, None]


def _ramp(u: torch.Tensor) -> torch.Tensor:  # 0 below 0, raised cosine up to 1 at 1
    return 0.5 - 0.5 * torch.cos(torch.pi * u.clamp(0, 1))


BAND_EDGE_OCTAVES = 0.25  # the band-limiting mask's transitions, inside the passband


def band_limit(x: torch.Tensor, highpass_hz: torch.Tensor, lowpass_hz: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Each row through an FFT-domain band-pass: zero at and below ``highpass_hz[i]`` and at and
    above ``lowpass_hz[i]``, rising to 1 over a quarter octave inside each edge (raised cosine)."""
    length = x.shape[1]
    spectrum = torch.fft.rfft(x, dim=1)
    freqs = torch.fft.rfftfreq(length, 1 / sample_rate, device=x.device, dtype=torch.float64)
    octave = torch.log2(freqs.clamp_min(1e-3))[None, :]
    high = torch.log2(highpass_hz.to(x.device, torch.float64))[:, None]
    low = torch.log2(lowpass_hz.to(x.device, torch.float64))[:, None]
    mask = _ramp((octave - high) / BAND_EDGE_OCTAVES) * _ramp((low - octave) / BAND_EDGE_OCTAVES)
    return torch.fft.irfft(spectrum * mask.to(x.dtype), n=length, dim=1)


def mu_law(x: torch.Tensor, channels: int = 256) -> torch.Tensor:
    """8-bit mu-law encoding and decoding (clipped to [-1, 1] first)."""
    return AF.mu_law_decoding(AF.mu_law_encoding(x.clamp(-1, 1), channels), channels).to(x.dtype)


def augment_waveforms(x: torch.Tensor, cfg: AugmentConfig, noise: NoiseBank | None, sample_rate: int,
                      generator: torch.Generator, rooms: RoomBank | None = None) -> torch.Tensor:
    """The waveform augmentations of a batch ``(batch, samples)``: float waveforms in [-1, 1]
    (int16 is scaled first), in the order speed → reverb → gain → time shift → noise →
    band-limit → codec. An option that is off draws nothing, so the others' draws do not
    depend on it. ``rooms`` is needed when ``cfg.reverb_prob`` > 0. Returns a new tensor of the
    same shape."""
    x = float_waveform(x)
    if not cfg.enabled:
        return x
    n, length = x.shape
    if cfg.speed_prob > 0:
        rows = _chosen(n, cfg.speed_prob, generator)
        log_low, log_high = np.log(cfg.speed_range[0]), np.log(cfg.speed_range[1])
        factors = _uniform(n, (log_low, log_high), generator).exp()
        if len(rows):
            x = _replace(x, rows, change_speed(x[rows.to(x.device)], factors[rows]))
    if cfg.reverb_prob > 0:
        if rooms is None:
            raise ValueError("reverb_prob > 0 needs a RoomBank (rooms=...)")
        rows = _chosen(n, cfg.reverb_prob, generator)
        which = torch.randint(len(rooms.rirs), (n,), generator=generator)
        if len(rows):
            x = _replace(x, rows, reverberate(x[rows.to(x.device)], rooms.rirs[which[rows].to(rooms.rirs.device)]))
    if cfg.gain_prob > 0:
        rows = _chosen(n, cfg.gain_prob, generator)
        gains = 10 ** (_uniform(n, cfg.gain_db_range, generator) / 20)
        if len(rows):
            scaled = x[rows.to(x.device)] * gains[rows].to(x.device, x.dtype)[:, None]
            x = _replace(x, rows, scaled.clamp(-1, 1))
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
    if cfg.band_prob > 0:
        rows = _chosen(n, cfg.band_prob, generator)
        high, low = _uniform(n, cfg.highpass_hz_range, generator), _uniform(n, cfg.lowpass_hz_range, generator)
        if len(rows):
            x = _replace(x, rows, band_limit(x[rows.to(x.device)], high[rows], low[rows], sample_rate))
    if cfg.codec_prob > 0:
        rows = _chosen(n, cfg.codec_prob, generator)
        if len(rows):
            x = _replace(x, rows, mu_law(x[rows.to(x.device)]))
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


def frequency_warps(n: int, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor | None:
    """Frequency warp factors ``(n,)`` for a batch (1.0 where an input is not warped), for the
    front end (``LogMel(waveform, warp)``); None when the option is off, and then nothing is drawn."""
    if not cfg.enabled or cfg.warp_prob <= 0:
        return None
    warped = torch.rand(n, generator=generator) < cfg.warp_prob
    factors = _uniform(n, cfg.warp_range, generator).float()
    return torch.where(warped, factors, torch.ones(n))


def style_mixes(n: int, cfg: AugmentConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Freq-MixStyle's draw for a batch of ``n``: (partner index ``(n,)``, own weight ``(n,)``),
    the weight 1.0 where an input keeps its own statistics; None when the option is off, and then
    nothing is drawn."""
    if not cfg.enabled or cfg.mixstyle_prob <= 0:
        return None
    return _partners(n, cfg.mixstyle_prob, cfg.mixstyle_alpha, generator)


def mixups(n: int, cfg: AugmentConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor] | None:
    """mixup's draw for a batch of ``n``: (partner index ``(n,)``, own weight ``(n,)``), the
    weight 1.0 where an input is not mixed; None when the option is off, and then nothing is drawn."""
    if not cfg.enabled or cfg.mixup_prob <= 0:
        return None
    return _partners(n, cfg.mixup_prob, cfg.mixup_alpha, generator)


def _partners(n: int, prob: float, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A partner in the batch for each input and its own weight: Beta(alpha, alpha) on a share
    ``prob`` of the inputs, 1.0 on the rest."""
    mixed = torch.rand(n, generator=generator) < prob
    partner = torch.randperm(n, generator=generator)
    # Beta from two gammas; numpy's generator, seeded from this batch's, since torch's Beta takes none
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    weight = torch.from_numpy(rng.beta(alpha, alpha, n)).float()
    return partner, torch.where(mixed, weight, torch.ones(n))


def mix_inputs(waves: torch.Tensor, partner: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """mixup on waveforms ``(batch, samples)``: ``weight`` × each input + (1 − ``weight``) × its
    partner's; inputs of weight 1 come back unchanged."""
    partner, w = partner.to(waves.device), weight.to(waves.device, waves.dtype)[:, None]
    return torch.where(w == 1, waves, w * waves + (1 - w) * waves[partner])


def mix_styles(feats: torch.Tensor, partner: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Freq-MixStyle on features ``(batch, 1, mels, frames)``: each input's bands normalised by
    their own mean and deviation over time, then given ``weight`` × its own + (1 − ``weight``) ×
    its partner's. The statistics carry no gradient (as in MixStyle); inputs of weight 1 come back
    unchanged."""
    partner, weight = partner.to(feats.device), weight.to(feats.device, feats.dtype)
    mean = feats.mean(dim=-1, keepdim=True).detach()
    std = (feats.var(dim=-1, keepdim=True, unbiased=False) + eps).sqrt().detach()
    w = weight.view(-1, 1, 1, 1)
    mixed = (feats - mean) / std * (w * std + (1 - w) * std[partner]) + w * mean + (1 - w) * mean[partner]
    return torch.where(w == 1, feats, mixed)
