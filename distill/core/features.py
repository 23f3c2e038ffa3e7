"""Log-mel features with torchaudio.

The feature extractor is an ``nn.Module`` so that it moves with the model to a GPU and
runs batched; it accepts waveforms of any length, which is what lets one network family
serve every crop length of the PLD chain.
"""

from __future__ import annotations

from typing import Literal

import torch
import torchaudio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from distill.core.crops import num_samples  # noqa: F401  (re-exported: features are read in samples)


class FeatureConfig(BaseModel):
    """Log-mel front end (defaults follow Tang & Lin 2018: 40 mels, 30 ms window, 10 ms hop)."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(16000, gt=0, description="Sample rate of the audio the features read.")
    n_mels: int = Field(40, gt=0, description="Number of mel bands.")
    win_ms: float = Field(30.0, gt=0, description="Analysis window length in ms.")
    hop_ms: float = Field(10.0, gt=0, description="Hop between frames in ms.")
    f_min: float = Field(20.0, ge=0, description="Lowest mel filter frequency in Hz.")
    f_max: float = Field(4000.0, gt=0, description="Highest mel filter frequency in Hz.")
    normalize: Literal["utterance", "band", "none"] = Field(
        "utterance", description="utterance: zero-mean, unit-variance log-mel per input (CMVN); band: also each "
                                 "mel band's own mean over time removed (cepstral mean normalisation: a fixed "
                                 "spectral colouring, such as a voice's or a channel's tilt, cancels); none: raw log-mel.")
    cepstra: int | None = Field(None, gt=0, description="Keep the first N cepstral coefficients of each frame's "
                                "log-mel (orthonormal DCT-II) and transform back, before the normalisation: the "
                                "spectral envelope without the ripple of resolved pitch harmonics (cepstral "
                                "smoothing; the shape stays n_mels). None: the log-mel as it is.")

    @model_validator(mode="after")
    def _cepstra_within_bands(self) -> "FeatureConfig":
        if self.cepstra is not None and self.cepstra > self.n_mels:
            raise ValueError(f"features.cepstra is {self.cepstra}: at most features.n_mels ({self.n_mels})")
        return self


def cepstral_smoothing(cfg: FeatureConfig) -> torch.Tensor | None:
    """``(n_mels, n_mels)`` symmetric matrix that keeps a log-mel frame's first ``cfg.cepstra``
    cepstral coefficients (the projection onto the first DCT-II bases), or None when off."""
    if cfg.cepstra is None:
        return None
    dct = torchaudio.functional.create_dct(cfg.n_mels, cfg.n_mels, norm="ortho").double()[:, :cfg.cepstra]
    return (dct @ dct.T).float()


def log_and_normalize(mel: torch.Tensor, normalize: str, smoothing: torch.Tensor | None = None) -> torch.Tensor:
    """mel power ``(batch, n_mels, frames)`` → features ``(batch, 1, n_mels, frames)``;
    ``smoothing``: ``cepstral_smoothing``'s matrix, applied to each frame's log-mel."""
    # log(x + eps) keeps silence finite; the offset matches common KWS front ends.
    feats = torch.log(mel + 1e-6).unsqueeze(1)
    if smoothing is not None:
        feats = torch.matmul(smoothing, feats)
    if normalize == "band":  # each band's mean over time: a time-invariant filter is additive in log-mel
        feats = feats - feats.mean(dim=3, keepdim=True)
    if normalize in ("utterance", "band"):
        # Per-input CMVN removes gain and channel differences; on the synthetic corpus it
        # lifted res8_narrow's 10-epoch validation accuracy from 0.65 to 0.78.
        mean = feats.mean(dim=(2, 3), keepdim=True)
        std = feats.std(dim=(2, 3), keepdim=True)
        feats = (feats - mean) / (std + 1e-5)
    return feats


def float_waveform(waveform: torch.Tensor) -> torch.Tensor:
    """int16 samples (as the datasets hold them) as float in [-1, 1]; float as it is. Every front
    end reads its input through this, so that no network hears int16 at another level."""
    return waveform.float() / 32768.0 if waveform.dtype == torch.int16 else waveform


class LogMel(torch.nn.Module):
    """int16-scaled or float waveforms ``(batch, samples)`` → log-mel ``(batch, 1, n_mels, frames)``."""

    def __init__(self, cfg: FeatureConfig | None = None):
        super().__init__()
        cfg = cfg or FeatureConfig()
        self.cfg = cfg
        win = round(cfg.sample_rate * cfg.win_ms / 1000)
        hop = round(cfg.sample_rate * cfg.hop_ms / 1000)
        n_fft = 1 << (win - 1).bit_length()  # next power of two ≥ window
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=n_fft,
            win_length=win,
            hop_length=hop,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            power=2.0,
            center=True,
        )
        self.register_buffer("smoothing", cepstral_smoothing(cfg), persistent=False)  # None when off

    def forward(self, waveform: torch.Tensor, warp: torch.Tensor | None = None) -> torch.Tensor:
        """``warp`` (training only: ``train.augment.warp_prob``): a frequency warp factor per input."""
        waveform = float_waveform(waveform)
        if waveform.dim() == 1:
            waveform = waveform.unsqueeze(0)
        # The front end stays fp32 under bf16/fp16 autocast: a bf16 mel matmul would round every
        # energy to 8 bits, and the features of training, validation and test would differ from fp32's.
        with torch.autocast(waveform.device.type, enabled=False):
            power = self.power_spectrum(waveform)
            if warp is None:
                mel = self.melspec.mel_scale(power)  # (batch, n_mels, frames)
            else:
                filters = warped_filterbank(self.melspec.mel_scale.fb, warp.to(power.device))
                mel = torch.matmul(power.transpose(1, 2), filters).transpose(1, 2)
            return log_and_normalize(mel, self.cfg.normalize, self.smoothing)

    def frames(self, samples: int) -> int:
        """Feature frames of an input of ``samples`` samples (centred STFT)."""
        return samples // self.melspec.spectrogram.hop_length + 1

    def power_spectrum(self, waveform: torch.Tensor) -> torch.Tensor:
        """|STFT|² with the MelSpectrogram's own window and settings (so checkpoints keep their
        keys), as re² + im² of the complex STFT: cheaper than complex ``abs`` squared, and equal
        to 1e-7 (docs/design-notes.md)."""
        s = self.melspec.spectrogram
        spec = torchaudio.functional.spectrogram(waveform, s.pad, s.window, s.n_fft, s.hop_length, s.win_length, None,
                                                 s.normalized, s.center, s.pad_mode, s.onesided)
        return spec.real.square() + spec.imag.square()


def warped_filterbank(fb: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """The mel filterbank ``fb`` ``(bins, n_mels)`` warped per input: ``(n, bins, n_mels)`` whose
    filter k reads frequency f with the weight the plain filter gives ``factor * f`` (linear
    interpolation between bins), so what the input has at f is heard at ``factor * f``: vocal
    tract length perturbation (Jaitly & Hinton 2013). A factor of 1 gives ``fb`` exactly."""
    bins = fb.shape[0]
    pos = factors.to(fb)[:, None] * torch.arange(bins, device=fb.device, dtype=fb.dtype)  # (n, bins)
    low = pos.floor().long().clamp(max=bins - 1)
    frac = (pos - low).clamp(max=1)[..., None]
    above = fb[(low + 1).clamp(max=bins - 1)]
    filters = fb[low] * (1 - frac) + above * frac
    return filters * (pos <= bins - 1)[..., None]  # past the top bin the spectrum has nothing to give


def stft_geometry(logmel: "LogMel") -> tuple:
    """What an STFT-as-weights front end needs of ``logmel``: n_fft, hop, the mel matrix (float64,
    ``(n_fft // 2 + 1, n_mels)``), the bins some filter reads, the window centred in n_fft as
    torch.stft applies it, and its first and one-past-last non-zero taps."""
    s = logmel.melspec.spectrogram
    fb = logmel.melspec.mel_scale.fb.detach().double()
    bins = int(torch.nonzero(fb.abs().sum(dim=1)).max()) + 1  # bins above the top filter weigh 0
    window = torch.zeros(s.n_fft, dtype=torch.float64)
    left = (s.n_fft - s.win_length) // 2
    window[left:left + s.win_length] = s.window.detach().double()
    taps = torch.nonzero(window).flatten()
    return s.n_fft, s.hop_length, fb, bins, window, int(taps.min()), int(taps.max()) + 1


class ConvLogMel(torch.nn.Module):
    """The same log-mel features as ``LogMel``, with the STFT as a fixed-weight 1-D convolution
    (a windowed DFT basis): plain Conv/Pad/MatMul operators that any ONNX runtime executes. Only
    the frequency bins some mel filter reads and the window's non-zero taps are kept, so it does
    no work whose result is multiplied by zero. Takes float waveforms in [-1, 1]."""

    def __init__(self, logmel: LogMel):
        super().__init__()
        self.cfg = logmel.cfg
        n_fft, hop, fb, bins, window, first, last = stft_geometry(logmel)
        n = torch.arange(first, last, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        angle = 2 * torch.pi * k * n / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window[first:last]  # (2·bins, taps)
        self.register_buffer("basis", basis.float().unsqueeze(1), persistent=False)
        self.register_buffer("fb", fb[:bins].float(), persistent=False)
        self.register_buffer("smoothing", cepstral_smoothing(self.cfg), persistent=False)
        # the taps past ``last`` are zero: pad less on the right so the frame count is the STFT's
        self.pad, self.right, self.first, self.stride, self.bins = n_fft // 2, n_fft // 2 - (n_fft - last), first, hop, bins

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.pad(waveform.unsqueeze(1), (self.pad, self.right), mode="reflect")
        x = x[:, :, self.first:]  # each frame starts at its first non-zero tap
        spec = torch.nn.functional.conv1d(x, self.basis, stride=self.stride)  # (batch, 2·bins, frames)
        power = spec[:, :self.bins].square() + spec[:, self.bins:].square()
        mel = torch.matmul(power.transpose(1, 2), self.fb).transpose(1, 2)  # (batch, n_mels, frames)
        return log_and_normalize(mel, self.cfg.normalize, self.smoothing)


class FoldedLogMel(torch.nn.Module):
    """The same log-mel features as ``LogMel``, computed as ``pld export``'s graph computes them:
    half the multiply-adds of ``ConvLogMel``.

    The padded waveform is cut into hop-long blocks; frame ``f`` is the ``k`` blocks from block
    ``f`` on. The Hann window and the DFT basis are symmetric (cos) and antisymmetric (sin) about
    the frame's centre tap, so each frame is first folded about it: ``a + b`` and ``a - b`` of
    its right half ``a`` and its reversed left half ``b``, which then meet a basis half as long
    (its phase taken from the centre: a sign per bin that |·|² removes). Only the bins some mel
    filter reads are computed. Takes float (or int16) waveforms as ``LogMel`` does; raises
    ``ValueError`` for a window that is not centred on a tap (an odd ``n_fft - win_length``)."""

    def __init__(self, logmel: LogMel):
        super().__init__()
        self.cfg = logmel.cfg
        s = logmel.melspec.spectrogram
        n_fft, hop, fb, bins, window, first, last = stft_geometry(logmel)
        centre = n_fft // 2
        if centre - first != last - 1 - centre or not torch.allclose(window.flip(0)[:-1], window[1:], atol=1e-6):
            raise ValueError(f"FoldedLogMel: the window ({s.win_length} of {n_fft} samples) is not symmetric about "
                             "the frame's centre tap; use ConvLogMel")
        half = centre - first  # taps each side of the centre
        j = torch.arange(half + 1, dtype=torch.float64)[:, None]
        k = torch.arange(bins, dtype=torch.float64)[None, :]
        angle = 2 * torch.pi * j * k / n_fft
        w = window[centre:centre + half + 1, None]
        cos = torch.cos(angle) * w
        cos[0] /= 2  # a + b holds the centre tap twice
        sin = -torch.sin(angle) * w  # row 0 is 0 (a - b is 0 there too): kept, so both halves are one slice
        self.register_buffer("cos", cos.float(), persistent=False)  # (half + 1, bins)
        self.register_buffer("sin", sin.float(), persistent=False)
        self.register_buffer("fb", fb[:bins].float(), persistent=False)  # (bins, n_mels)
        self.register_buffer("smoothing", cepstral_smoothing(self.cfg), persistent=False)
        self.blocks = -(-(last - first) // hop)  # hop-long blocks per frame
        # reflect-pad so the first frame's first non-zero tap is sample 0 (torch pads n_fft // 2 and
        # starts there); k·hop samples in all, so that samples // hop + k blocks fit for any length
        self.left = centre - first
        self.right = self.blocks * hop - self.left
        self.hop, self.half, self.bins = hop, half, bins

    def frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` → ``(batch, frames, blocks · hop)``; frame f's taps start at its sample 0."""
        n = waveform.shape[1] // self.hop + 1
        x = torch.nn.functional.pad(waveform.unsqueeze(1), (self.left, self.right), mode="reflect").squeeze(1)
        blocks = x[:, :(n + self.blocks - 1) * self.hop].reshape(x.shape[0], -1, self.hop)
        return torch.cat([blocks[:, i:i + n] for i in range(self.blocks)], dim=2)

    def mel(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(batch, n, blocks · hop)`` → their mel power ``(batch, n, n_mels)``; a frame's
        does not depend on the others (``streaming.py`` computes a few at a time)."""
        h = self.half
        a, b = frames[..., h:2 * h + 1], frames[..., :h + 1].flip(-1)
        power = torch.matmul(a + b, self.cos).square() + torch.matmul(a - b, self.sin).square()
        return torch.matmul(power, self.fb)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = self.mel(self.frames(float_waveform(waveform))).transpose(1, 2)  # (batch, n_mels, frames)
        return log_and_normalize(mel, self.cfg.normalize, self.smoothing)
