"""Samples in, samples out: background noise, resampling, where the speech is in a recording,
the loudest second of it, and 16-bit WAV files. Nothing here knows about speakers or words.

Background noise: the corpus's _background_noise_ folder holds one long recording of each of
NOISE_KINDS (generated with numpy, seeded); the same files are mixed under every clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from distill.corpus.espeak import ESPEAK_RATE
from distill.corpus.layout import CLIP_SAMPLES, SAMPLE_RATE
from distill.corpus.streams import rng_for
from distill.names import NOISE_DIR

PEAK_LIMIT = 0.98         # the mixed clip is scaled down if it would exceed this: no clipping
TRIM_DB = 40.0            # speech = 5 ms frames within 40 dB of the loudest frame
NOISE_KINDS: tuple[str, ...] = ("white_noise", "pink_noise", "brown_noise", "running_tap", "hum")


def make_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of one kind of noise at SAMPLE_RATE, RMS 0.1 (-20 dBFS), float64."""
    t = np.arange(n) / SAMPLE_RATE
    f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)  # floor at 20 Hz: no DC drift

    def shaped(gain: np.ndarray) -> np.ndarray:  # white noise coloured in the frequency domain
        return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * gain, n)

    if kind == "white_noise":
        x = rng.standard_normal(n)
    elif kind == "pink_noise":
        x = shaped(1 / np.sqrt(f))
    elif kind == "brown_noise":
        x = shaped(1 / f)
    elif kind == "running_tap":  # hiss centred near 1.5 kHz with a slow, irregular swell
        x = shaped(np.exp(-0.5 * (np.log(f / 1500.0) / 0.6) ** 2))
        wobble = shaped(np.exp(-f / 3.0))  # a few-Hz random modulation
        x *= 1 + 0.25 * wobble / (np.abs(wobble).max() + 1e-12)
        x *= 1 + 0.15 * np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 2 * np.pi))
    elif kind == "hum":  # mains hum: harmonics of 50 or 60 Hz over a faint pink floor
        f0 = float(rng.choice([50.0, 60.0])) * (1 + 0.002 * np.sin(2 * np.pi * 0.1 * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        x = sum(np.sin(h * phase + rng.uniform(0, 2 * np.pi)) / h for h in range(1, 9))
        pink = shaped(1 / np.sqrt(f))
        x = x / np.std(x) + 0.1 * pink / np.std(pink)
    else:
        raise ValueError(f"unknown noise kind {kind!r}; expected one of {NOISE_KINDS}")
    x = x * (0.1 / (np.sqrt(np.mean(x ** 2)) + 1e-12))
    return np.clip(x, -PEAK_LIMIT, PEAK_LIMIT)


def write_pcm16(path: Path, x: np.ndarray) -> None:
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def write_background_noise(out: Path, seed: int, seconds: float) -> list[str]:
    folder = out / NOISE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * SAMPLE_RATE))
    names = []
    for kind in NOISE_KINDS:
        write_pcm16(folder / f"{kind}.wav", make_noise(kind, n, rng_for(seed, "noise", kind)))
        names.append(f"{kind}.wav")
    return names


def noise_segment(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of `noise` from a random position (looped if the noise is shorter)."""
    if len(noise) >= n:
        pos = int(rng.integers(0, len(noise) - n + 1))
        return noise[pos:pos + n].copy()
    pos = int(rng.integers(len(noise)))  # a noise file shorter than the recording is looped
    return np.take(noise, pos + np.arange(n), mode="wrap")


def resample(x: np.ndarray, orig_rate: int = ESPEAK_RATE) -> np.ndarray:
    import torch  # lazy: importing torch costs seconds, and only the renderers need it
    import torchaudio.functional as AF
    return AF.resample(torch.from_numpy(x.astype(np.float32)), orig_rate,
                       SAMPLE_RATE).numpy().astype(np.float64)


def speech_bounds(x: np.ndarray, frame: int = 80) -> tuple[int, int]:
    """[start, end) of the part of x within TRIM_DB of its loudest 5 ms frame."""
    n = len(x) // frame
    if n == 0:
        return 0, 0
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    active = np.flatnonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))
    if rms.max() <= 0 or active.size == 0:
        return 0, 0
    return int(active[0] * frame), int(min(len(x), (active[-1] + 1) * frame))


def trimmed_speech(x: np.ndarray, orig_rate: int, what: str) -> np.ndarray:
    """x resampled from orig_rate to SAMPLE_RATE, trimmed to its speech (speech_bounds)."""
    x = resample(x, orig_rate)
    start, end = speech_bounds(x)
    if end <= start:
        raise RuntimeError(f"{what} produced silence")
    return x[start:end]


def loudest_window(x: np.ndarray, n: int = CLIP_SAMPLES) -> int:
    """Start of the n-sample window of x with the highest energy (the first, on a tie): how
    Speech Commands' extract_loudest_section cut each clip from its recording."""
    if len(x) < n:
        raise ValueError(f"a recording of {len(x)} samples has no {n}-sample window")
    energy = np.concatenate(([0.0], np.cumsum(x * x)))
    return int(np.argmax(energy[n:] - energy[:-n]))
