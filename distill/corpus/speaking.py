"""A speaker's words as speech: each take's engine settings, the engines' calls, and the word
trimmed, resampled to 16 kHz and kept short enough for a 1 s clip.

Timing, modelled on Speech Commands: people read the word aloud after pressing "record", and
the loudest 1 s of each recording became the clip. espeak's words are short and crisp by
default (median 360 ms at 130-200 words/min), real ones typically last 500-800 ms.
- Speaking rate: per speaker from `rate_range` words/min (espeak's slowest is 80), +-6 % per
  clip. The default 80-120 gives a median word of ~595 ms (p10 440, p90 825 at 150 speakers).
  Words longer than MAX_SPEECH_S are re-synthesised faster (the rate written to the manifest
  is the one actually used); only if that still fails is the word cut, with a fade.
- Vocal tract: the speech is resampled as if espeak's 22.05 kHz output were recorded at
  22.05 kHz x vtl_factor (per speaker, from `vtl_range`): formants and pitch scale by the
  factor, the duration by its inverse -- timbre differences espeak's variants do not have.
The other engines (festival, pico, hibari, mbrola) speak a speaker's whole vocabulary in one
batch (speak_takes) at a per-speaker tempo instead of a rate, +-6 % per clip as well.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from distill.corpus.engines import check_engine, speak_batch
from distill.corpus.espeak import (ESPEAK_RATE, MAX_RATE, MIN_RATE, check_voices, espeak_synthesize,
                                   make_voice_dir)
from distill.corpus.layout import SAMPLE_RATE
from distill.corpus.sound import trimmed_speech
from distill.corpus.speakers import VTL_GRID_HZ, Speaker
from distill.corpus.streams import rng_for
from distill.corpus.voices import VOICES

RATE_JITTER = 0.06        # per clip: +-6 % rate, so repeats of a word differ slightly
PITCH_JITTER = 4          # per clip: +-4 pitch units
MAX_SPEECH_S = 0.95       # longer words are re-spoken faster (then cut as a last resort)

Spoken = dict[tuple[str, int], tuple[np.ndarray, float]]  # (word, take) -> (trimmed speech, tempo used)


def prepare_voices(root: Path, speakers: Sequence[Speaker]) -> str:
    """espeak's voice directory under `root` (make_voice_dir, every one of VOICES), once every
    engine and voice of `speakers` is known to speak: a RuntimeError saying what to install
    otherwise."""
    data_path = make_voice_dir(root, VOICES)
    espeakers = [s for s in speakers if s.engine == "espeak"]
    check_voices(data_path, [s.voice for s in espeakers], [s.variant for s in espeakers])
    for engine in sorted({s.engine for s in speakers} - {"espeak"}):
        check_engine(engine, sorted({s.voice for s in speakers if s.engine == engine}))
    return data_path


def _cut(speech: np.ndarray) -> np.ndarray:
    """The last resort for a word longer than MAX_SPEECH_S: cut, fading out over 10 ms."""
    max_len = int(MAX_SPEECH_S * SAMPLE_RATE)
    if len(speech) <= max_len:
        return speech
    speech = speech[:max_len].copy()
    speech[-160:] *= np.linspace(1.0, 0.0, 160)
    return speech


def _vtl_rate(rate: int, vtl: float) -> int:
    """The rate a recording at `rate` is read as, to scale formants and pitch by `vtl`."""
    return int(round(rate * vtl / VTL_GRID_HZ)) * VTL_GRID_HZ


def speak_word(word: str, voice: str, variant: str, rate: int, pitch: int, vtl: float = 1.0,
               data_path: str | None = None, noise_seed: int = 0) -> tuple[np.ndarray, int]:
    """The trimmed spoken word at SAMPLE_RATE (float64), and the speaking rate used. espeak's
    output is resampled as if it had been recorded at ESPEAK_RATE x vtl (rounded to
    VTL_GRID_HZ): formants and pitch x vtl, duration / vtl. `noise_seed`: breath noise."""
    orig_rate = _vtl_rate(ESPEAK_RATE, vtl)
    rate = int(np.clip(rate, MIN_RATE, MAX_RATE))  # espeak would clamp it silently
    max_len = int(MAX_SPEECH_S * SAMPLE_RATE)
    for _ in range(4):
        speech = trimmed_speech(espeak_synthesize(word, voice, variant, rate, pitch, data_path, noise_seed) / 32768.0,
                                orig_rate, f"espeak-ng for {word!r} ({voice}+{variant})")
        if len(speech) <= max_len or rate >= MAX_RATE:
            break
        rate = min(MAX_RATE, math.ceil(rate * len(speech) / max_len * 1.05))  # speak faster
    return _cut(speech), rate


def take_params(seed: int, spk: Speaker, word: str, k: int) -> tuple[np.random.Generator, dict[str, Any]]:
    """The random stream of take k of `word` by `spk`, and the engine settings drawn from it
    first: espeak's rate and pitch (+- jitter) and breath-noise seed, the other engines' tempo
    (+- jitter) and seed."""
    rng = rng_for(seed, "clip", spk.index, word, k)
    if spk.engine == "espeak":
        rate = int(round(spk.rate * rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)))
        pitch = int(np.clip(spk.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 100))
        return rng, dict(rate=rate, pitch=pitch, noise_seed=int(rng.integers(2**31)))
    tempo = round(spk.tempo * float(rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)), 4)
    return rng, dict(tempo=tempo, pitch=spk.pitch, noise_seed=int(rng.integers(2**31)))


def speak_takes(seed: int, spk: Speaker, takes: Sequence[tuple[str, int]]) -> Spoken:
    """A festival / pico / hibari / mbrola speaker's takes, spoken in one batch per round: a word
    longer than MAX_SPEECH_S is spoken again faster (up to 3 times), then cut."""
    params = {t: take_params(seed, spk, *t)[1] for t in takes}
    tempo = {t: params[t]["tempo"] for t in takes}
    max_len = int(MAX_SPEECH_S * SAMPLE_RATE)
    spoken: Spoken = {}
    pending = list(takes)
    for attempt in range(4):
        raw = speak_batch(spk.engine, spk.voice, [w for w, _ in pending], [tempo[t] for t in pending],
                          pitches=[spk.pitch / 100 for _ in pending], seeds=[params[t]["noise_seed"] for t in pending])
        again = []
        for t, (x, rate) in zip(pending, raw):
            speech = trimmed_speech(x, _vtl_rate(rate, spk.vtl), f"{spk.engine} voice {spk.voice} for {t[0]!r}")
            if len(speech) > max_len and attempt < 3:
                tempo[t] = round(tempo[t] * max_len / len(speech) * 0.95, 4)
                again.append(t)
            else:
                spoken[t] = (_cut(speech), tempo[t])
        pending = again
        if not pending:
            break
    return spoken
