"""What a corpus can be asked for: CorpusOptions (every option of `pld data synth`, with its
default) and RenderOptions (how a spoken word becomes a clip), and the checks that turn a bad
option into a ValueError naming it before any file is written.

The defaults are those of `pld data synth` (`make data` changes only the number of speakers,
the split fractions and the unknown words); the CLI's help states the same numbers
(tests/unit/data/test_synth_options.py checks that they agree).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from distill.corpus.engines import ENGINES
from distill.corpus.layout import CLIP_SAMPLES, SAMPLE_RATE, UNKNOWN_WORDS
from distill.names import KEYWORDS

HeldoutVoices = int | str | Sequence[str]

HELDOUT_VAL_VOICES = 1    # default: voices only validation speakers have
HELDOUT_TEST_VOICES = 2   # default: voices only test speakers have
# Engines of the seen speakers (train, validation, test), by weight; espeak also speaks the unseen
# accents. The unseen-engine parts hold out whole engines or whole families (engines.parse_family).
ENGINE_WEIGHTS: dict[str, float] = {"espeak": 2.0, "festival": 1.0, "pico": 1.0}
HELDOUT_ENGINE_VAL = "festival:czech"   # the validation part's engine family
HELDOUT_ENGINE_TEST = "hibari"          # the test part's: a whole engine, the one neural voice
UNSEEN_ENGINE_SPEAKERS = 36             # speakers of each unseen-engine part (12 clips each: >= 400)
RATE_RANGE = (80, 120)    # words per minute (espeak's default is 175, its minimum 80)
VTL_RANGE = (0.9, 1.1)    # vocal-tract factor: formants and pitch x factor, duration / factor
PLACEMENTS = ("uniform", "center", "loudest")
PLACEMENT = "loudest"
CENTER_JITTER_MS = 100.0
PAUSE_MS = (100.0, 500.0)  # leading and trailing pause of a `loudest` recording, each
SNR_DB = (5.0, 30.0)       # speech over background noise, dB (per clip, drawn from this range)
NOISE_SECONDS = 30.0       # length of each _background_noise_ file

_WORD_RE = re.compile(r"^[a-z]+$")


@dataclass(frozen=True)
class CorpusOptions:
    """Everything that decides a corpus's bytes: the same options give the same files.

    Every seen speaker says every word (KEYWORDS + unknown_words) `repeats` times.

    engines: weight of each engine among the seen speakers (None: ENGINE_WEIGHTS).
    heldout_engine_val / heldout_engine_test: "ENGINE" or "ENGINE:FAMILY" (engines.parse_family),
        spoken only by the `unseen_engine_speakers` speakers of the validation / test
        unseen-engine part, written as prepared 12-class test sets under UNSEEN_ENGINE_DIRS
        (each speaker says the keywords and one other word; _silence_ is cut from the noise);
        unseen_engine_speakers=0: no such parts.

    heldout_val_voices / heldout_test_voices: voices (accents) only validation / test
        speakers have -- a count drawn by seed from HELDOUT_CANDIDATES, or voice names;
        0 = none. Their clips are also listed in *_unseen_voice_list.txt.
    rate_range: (low, high) speaking rate of a speaker, words/min, within [80, 450].
    word_duration: every word's duration x this (0.6: short words), every engine alike.
    vtl_range: (low, high) vocal-tract factor of a speaker; (1, 1) = espeak's own formants.
    placement: "uniform", "center" or "loudest" (distill.corpus.rendering); center_jitter_ms is
        the +- jitter of "center", pause_ms the (low, high) leading and trailing pause of "loudest".
    noise_seconds: length of each background-noise file; snr_db: (low, high) speech-to-noise.
    """
    seed: int = 0
    speakers: int = 40
    repeats: int = 1
    unknown_words: Sequence[str] = UNKNOWN_WORDS
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    heldout_val_voices: HeldoutVoices = HELDOUT_VAL_VOICES
    heldout_test_voices: HeldoutVoices = HELDOUT_TEST_VOICES
    rate_range: Sequence[int] = RATE_RANGE
    vtl_range: Sequence[float] = VTL_RANGE
    placement: str = PLACEMENT
    center_jitter_ms: float = CENTER_JITTER_MS
    pause_ms: Sequence[float] = PAUSE_MS
    noise_seconds: float = NOISE_SECONDS
    snr_db: tuple[float, float] = SNR_DB
    engines: dict[str, float] | None = None
    heldout_engine_val: str = HELDOUT_ENGINE_VAL
    heldout_engine_test: str = HELDOUT_ENGINE_TEST
    unseen_engine_speakers: int = UNSEEN_ENGINE_SPEAKERS
    word_duration: float = 1.0


@dataclass(frozen=True)
class RenderOptions:
    """How a spoken word becomes a clip (CorpusOptions documents each option)."""
    placement: str = PLACEMENT
    center_jitter_ms: float = CENTER_JITTER_MS
    pause_ms: tuple[float, float] = PAUSE_MS
    snr_db: tuple[float, float] = SNR_DB


def check_options(options: CorpusOptions) -> tuple[tuple[str, ...], RenderOptions]:
    """The corpus's words (KEYWORDS + unknown_words) and its RenderOptions, or a ValueError
    naming the bad option. The speakers' options are checked by make_speakers."""
    o = options
    words = check_words(o.unknown_words)
    if o.speakers < 1 or o.repeats < 1:
        raise ValueError(f"speakers and repeats must be >= 1, got {o.speakers}, {o.repeats}")
    if not (0 <= o.val_fraction < 1 and 0 <= o.test_fraction < 1 and o.val_fraction + o.test_fraction < 1):
        raise ValueError(f"bad split fractions: val {o.val_fraction}, test {o.test_fraction}")
    if o.noise_seconds * SAMPLE_RATE < CLIP_SAMPLES:
        raise ValueError(f"noise_seconds must be >= 1, got {o.noise_seconds}")
    return words, render_options(o)


def render_options(options: CorpusOptions) -> RenderOptions:
    o = options
    snr_db = (float(o.snr_db[0]), float(o.snr_db[1]))
    if snr_db[0] > snr_db[1]:
        raise ValueError(f"snr_db must be (low, high), got {snr_db}")
    if o.placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {o.placement!r}")
    if not 0 <= o.center_jitter_ms <= 500:
        raise ValueError(f"center_jitter_ms must be within [0, 500], got {o.center_jitter_ms}")
    return RenderOptions(o.placement, float(o.center_jitter_ms), check_range("pause_ms", o.pause_ms, 0, 5000),
                         snr_db)


def check_words(unknown_words: Sequence[str]) -> tuple[str, ...]:
    unknown = tuple(unknown_words)
    words = KEYWORDS + unknown
    bad = [w for w in unknown if not isinstance(w, str) or not _WORD_RE.match(w)]
    if bad:
        raise ValueError(f"unknown_words must be lowercase a-z words, got {bad}")
    if len(set(words)) != len(words):
        raise ValueError(f"unknown_words repeat a word or overlap KEYWORDS: {unknown}")
    return words


def check_range(name: str, value: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    """(low, high) with lo <= low <= high <= hi, or a ValueError naming the option."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{name} must satisfy {lo:g} <= low <= high <= {hi:g}, got {value!r}")
    return a, b


def check_engines(engines: dict[str, float]) -> dict[str, float]:
    try:
        weights = {str(e): float(w) for e, w in dict(engines).items()}
    except (TypeError, ValueError):
        raise ValueError(f"engines must map engine names to weights, got {engines!r}") from None
    unknown = [e for e in weights if e not in ENGINES]
    if unknown or any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"engines must give weights >= 0 (one > 0) to engines of {list(ENGINES)}, got {engines!r}")
    return weights
