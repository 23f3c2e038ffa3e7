"""Reading one clip: soundfile (libsndfile ships in its wheel) for I/O, torchaudio for
resampling. A file that cannot become a clip is *reported*, never dropped silently:
``load_clip`` returns the reason, and the callers put it in a quarantine table.

A clip is either a window of a long file (``start >= 0``: silence cut from background
noise) or a whole file (``start == WHOLE_FILE``), which is fitted to the clip length by the
dataset's ``ClipPolicy``: resampled, downmixed, padded or cropped — and each of these is
counted, because a corpus where half the files were padded is not the corpus you think.
"""

from __future__ import annotations

import os
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import soundfile as sf
import torch
import torchaudio
from pydantic import BaseModel, ConfigDict, Field

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
WHOLE_FILE = -1
# Sample rates a recording can have; outside them the header is corrupt (and resampling from,
# say, 352 MHz would build a kernel of gigabytes).
PLAUSIBLE_RATES = (1_000, 384_000)


def resampling_rate(rate: int, target: int) -> int:
    """The rate a recording is resampled from. torchaudio's polyphase kernel has
    (target/g) × (rate/g) taps for g = gcd(rate, target): 7999 → 16000 Hz needs about 2 GB. When
    the kernel would be that large, the rate is rounded to 100 Hz (7999 → 8000: 0.0125 % faster,
    far below what a listener or a keyword spotter notices)."""
    g = math.gcd(rate, target)
    if (rate // g) * (target // g) <= 1_000_000:
        return rate
    return max(100, int(round(rate / 100)) * 100)


class AudioError(ValueError):
    pass


class ClipPolicy(BaseModel):
    """What to do with files that are not exactly a mono clip of the configured rate and length."""

    model_config = ConfigDict(extra="forbid")

    resample: bool = Field(True, description="Resample other rates to data.sample_rate (false: quarantine them).")
    downmix: bool = Field(True, description="Average multi-channel files to mono (false: quarantine them).")
    too_short: Literal["pad_end", "pad_center", "skip"] = Field(
        "pad_end", description="Files shorter than clip_ms: zero-pad at the end or both sides, or quarantine.")
    too_long: Literal["crop_start", "crop_center", "crop_random", "skip"] = Field(
        "crop_center", description="Files longer than clip_ms: keep the start, the middle, a seeded random window, "
                                   "or quarantine.")


@dataclass
class LoadedClip:
    """A decoded clip, or the reason there is none. ``applied`` lists the policies used."""

    waveform: np.ndarray | None
    problem: str = ""
    applied: list[str] = field(default_factory=list)
    start: int = 0  # first sample read, at the file's own rate


def _wav_truncation(path: str) -> str:
    """libsndfile quietly shortens a WAV whose data chunk is cut off; compare the declared
    data size with the bytes on disk so that a truncated download is named as such."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return ""
        endian = "<" if head[:4] == b"RIFF" else ">"
        size = os.fstat(f.fileno()).st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return ""
            cid, clen = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if cid == b"data":
                have = size - f.tell()
                if clen != 0xFFFFFFFF and have < clen:
                    return f"truncated: the header declares {clen} data bytes, the file holds {have}"
                return ""
            f.seek(clen + (clen & 1), 1)


def _file_problem(path: str, suffix: str) -> str:
    """Why ``path`` cannot be an audio clip before it is opened ('' when it may be one)."""
    if suffix not in AUDIO_SUFFIXES:
        return f"unsupported format {suffix or '(no extension)'!r}; use WAV, FLAC or OGG"
    if not os.path.isfile(path):
        return "missing: not a regular file (broken link or directory)"
    if os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    return ""


def load_clip(path: str, start: int, clip_samples: int, sample_rate: int, policy: ClipPolicy | None = None,
              key: str = "") -> LoadedClip:
    """``clip_samples`` int16 mono samples at ``sample_rate`` from ``path`` (see module doc).
    ``key`` seeds the ``crop_random`` policy so the same clip always gets the same window."""
    policy = policy or ClipPolicy()
    suffix = os.path.splitext(path)[1].lower()
    if problem := _file_problem(path, suffix):
        return LoadedClip(None, problem)
    try:
        info = sf.info(path)
        if suffix == ".wav" and (reason := _wav_truncation(path)):
            return LoadedClip(None, reason)
        if info.frames <= 0:
            return LoadedClip(None, "no audio: the header declares 0 frames")
        applied: list[str] = []
        rate, channels = info.samplerate, info.channels
        if not PLAUSIBLE_RATES[0] <= rate <= PLAUSIBLE_RATES[1]:
            return LoadedClip(None, f"implausible sample rate {rate} Hz in the header (outside "
                                    f"{PLAUSIBLE_RATES[0]}-{PLAUSIBLE_RATES[1]} Hz): a corrupt header?")
        if rate != sample_rate:
            if not policy.resample:
                return LoadedClip(None, f"sample rate {rate} Hz, expected {sample_rate} (data.policy.resample is off)")
            applied.append("resampled")
        if channels > 1:
            if not policy.downmix:
                return LoadedClip(None, f"{channels} channels, expected mono (data.policy.downmix is off)")
            applied.append("downmixed")
        need = int(np.ceil(clip_samples * rate / sample_rate))  # frames at the file's rate
        if start == WHOLE_FILE:
            if info.frames > need:
                if policy.too_long == "skip":
                    return LoadedClip(None, f"too long: {info.frames / rate * 1000:.0f} ms (data.policy.too_long: skip)")
                spare = info.frames - need
                start = {"crop_start": 0, "crop_center": spare // 2,
                         "crop_random": zlib.crc32(key.encode() or path.encode()) % (spare + 1)}[policy.too_long]
                applied.append("cropped")
            else:
                start = 0
        data, _ = sf.read(path, start=start, frames=need, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, struct.error) as exc:
        detail = re.sub(r"^Error( opening '.*?')?\s*:\s*", "", str(exc)) or type(exc).__name__
        return LoadedClip(None, f"unreadable: {detail}")
    if not np.isfinite(data).all():
        return LoadedClip(None, "not audio: samples are NaN or infinite")
    mono = data.mean(axis=1)
    if rate != sample_rate:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), resampling_rate(rate, sample_rate),
                                              sample_rate).numpy()
    n = min(clip_samples, len(mono))
    out = np.zeros(clip_samples, dtype=np.int16)
    offset = 0
    if n < clip_samples:
        if policy.too_short == "skip":
            return LoadedClip(None, f"too short: {len(mono) / sample_rate * 1000:.0f} ms (data.policy.too_short: skip)")
        offset = (clip_samples - n) // 2 if policy.too_short == "pad_center" else 0
        applied.append("padded")
    out[offset:offset + n] = np.clip(np.round(mono[:n] * 32768.0), -32768, 32767).astype(np.int16)
    return LoadedClip(out, "", applied, start)


def decode_clip(path: str, start: int, clip_samples: int, sample_rate: int, policy: ClipPolicy | None = None) -> np.ndarray:
    """Like ``load_clip``, but a file that cannot become a clip raises ``AudioError`` naming it."""
    clip = load_clip(path, start, clip_samples, sample_rate, policy)
    if clip.waveform is None:
        raise AudioError(f"{path}: {clip.problem}")
    return clip.waveform


def audio_frames(path: str) -> tuple[int, int]:
    """(frames, sample_rate) of an audio file."""
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: cannot read audio header ({exc})") from None
    return info.frames, info.samplerate


def load_recordings(paths: list[str], sample_rate: int) -> tuple[list[np.ndarray], dict[str, str]]:
    """Whole recordings (background noise for augmentation) as int16 mono at ``sample_rate``, and
    the files that could not be read with the reason (the caller counts and logs them)."""
    recordings, skipped = [], {}
    for path in paths:
        try:
            frames, rate = audio_frames(path)
        except AudioError as exc:
            skipped[path] = str(exc)
            continue
        clip = load_clip(path, 0, int(frames * sample_rate // rate), sample_rate, ClipPolicy())
        if clip.waveform is None:
            skipped[path] = clip.problem
        else:
            recordings.append(clip.waveform)
    return recordings, skipped
