"""Decoding one clip to int16 at the configured rate with soundfile (libsndfile ships in its
wheel) and torchaudio's resampler. Failures raise ``AudioError`` naming the file."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch
import torchaudio


class AudioError(ValueError):
    pass


def decode_clip(path: str, start: int, clip_samples: int, sample_rate: int) -> np.ndarray:
    """``clip_samples`` int16 samples of mono audio from ``path`` beginning at sample ``start``
    (counted at the file's own rate when it differs), zero-padded at the end if short."""
    try:
        info = sf.info(path)
        file_rate = info.samplerate
        frames = clip_samples if file_rate == sample_rate else int(np.ceil(clip_samples * file_rate / sample_rate))
        data, _ = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from None
    mono = data.mean(axis=1)
    if file_rate != sample_rate:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), file_rate, sample_rate).numpy()
    out = np.zeros(clip_samples, dtype=np.int16)
    n = min(clip_samples, len(mono))
    out[:n] = np.clip(np.round(mono[:n] * 32768.0), -32768, 32767).astype(np.int16)
    return out


def audio_frames(path: str) -> tuple[int, int]:
    """(frames, sample_rate) of an audio file."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot read audio header ({exc})") from None
    return info.frames, info.samplerate
