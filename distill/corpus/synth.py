"""Synthetic keyword-spotting corpus in the exact layout of Google Speech Commands.

Why this exists: the whole PLD pipeline (loading, teacher training, distillation,
evaluation) must run end to end on a laptop or CI box without downloading the 2.3 GB
Speech Commands archive. Words are spoken by espeak-ng -- the shared library and voice
data shipped inside the `espeakng_loader` wheel, driven through ctypes (distill.corpus.espeak)
-- so neither system packages nor network access are needed.

Layout written under `out` (the same as speech_commands_v0.02, plus four extra files):

    <out>/<word>/<speaker>_nohash_<k>.wav   16 kHz mono PCM_16, exactly 16000 samples
    <out>/_background_noise_/*.wav          long noise recordings (generated with numpy)
    <out>/validation_list.txt               "word/file.wav" per line, sorted
    <out>/testing_list.txt                  (files in neither list are training data)
    <out>/validation_unseen_voice_list.txt  the clips of these two lists whose voice (accent)
    <out>/testing_unseen_voice_list.txt     no training speaker has: subsets of the above
    <out>/synth_manifest.csv                one row per clip: who says it, where the word is, ...
    <out>/synth.json                        parameters, counts and timing statistics; written
                                            LAST, so its presence means the corpus is complete

Speakers and splits
- A "speaker" is an espeak voice (accent) x variant (timbre) x pitch x speaking rate x
  vocal-tract factor. Its id is 8 hex digits hashed from (seed, speaker index), like the real
  dataset's ids.
- Splits are speaker-disjoint (as in Speech Commands), and in part voice-disjoint: the
  `heldout_val_voices` / `heldout_test_voices` voices are spoken only by validation / test
  speakers. Half (rounded up) of the validation and test speakers have a held-out voice, the
  others are new speakers of training voices, so a test reports both a new speaker of a seen
  accent (testing_list.txt) and an unseen accent (testing_unseen_voice_list.txt). A count picks
  voices by seed among the regional accents (HELDOUT_CANDIDATES); en and en-us always stay in
  training, so that the training set keeps the two standard accents.

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
- Pauses: espeak's inter-word gap (espeakWORDGAP) only acts between words, so for one word
  the pause model is the silence around it: a leading and a trailing pause, each drawn from
  `pause_ms`. Only `loudest` placement records them.
- Placement of the word in the 1 s clip (`placement`):
    uniform  anywhere it fits;
    center   centred, +- a uniform jitter of `center_jitter_ms` (clamped so that it fits);
    loudest  a recording of leading pause + word + trailing pause over noise (at least 1 s),
             cut to its 1 s window of highest energy, as Speech Commands' extraction did.
             Among the windows that hold the whole word the noise decides, so the word lands
             anywhere it fits, and an edge may cut a faint onset or tail (~8 % of clips,
             median 6 ms): speech_cut_ms.
  speech_start_ms / speech_end_ms in the manifest are the word's position inside the clip
  (clamped to [0, 1000]); speech_cut_ms is how much of the word the clip edges cut off.

Determinism: a clip depends only on (seed, speaker index, word, k), never on which worker
process renders it or in what order; every random draw comes from a stream named by those
(see _rng), and espeak gets a fresh library instance and a seeded breath-noise generator per
utterance (see distill.corpus.espeak).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import soundfile as sf

from distill.names import KEYWORDS, NOISE_DIR
from distill.corpus.engines import ENGINES, check_engine, engine_voices, parse_family, speak_batch
from distill.corpus.espeak import (ESPEAK_RATE, MAX_RATE, MIN_RATE, check_fresh_state, check_voices,
                                 espeak_paths, espeak_synthesize, make_voice_dir)

# ----------------------------------------------------------------------------------------
# Vocabulary, layout and synthesis constants

# Speech Commands' auxiliary words: the "unknown" class in the 12-class task.
UNKNOWN_WORDS: tuple[str, ...] = (
    "bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
    "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero",
)

SAMPLE_RATE = 16_000
CLIP_SAMPLES = 16_000  # exactly 1 s, like every Speech Commands clip
VALIDATION_LIST = "validation_list.txt"
TESTING_LIST = "testing_list.txt"
VALIDATION_UNSEEN_LIST = "validation_unseen_voice_list.txt"
TESTING_UNSEEN_LIST = "testing_unseen_voice_list.txt"
MANIFEST = "synth_manifest.csv"
SYNTH_JSON = "synth.json"
IN_PROGRESS = ".synth_in_progress"  # marks a half-written corpus that we may clean up
MANIFEST_COLUMNS = ("path", "word", "speaker", "engine", "voice", "variant", "pitch", "rate", "tempo",
                    "vtl_factor", "split", "part", "unseen_voice", "speech_start_ms", "speech_end_ms",
                    "speech_cut_ms", "gain_db", "snr_db", "noise_file")
PARTS = ("seen", "unseen_accent", "unseen_engine")  # manifest `part`: what of the speaker training knows
# The unseen-engine parts: prepared 12-class test sets (the layout of name: speech_commands_test), in
# folders the Speech Commands loader never reads as words (a leading underscore), so never trained on.
UNSEEN_ENGINE_DIRS = {"validation": "_unseen_engine_validation_", "testing": "_unseen_engine_test_"}
UNKNOWN_LABEL, SILENCE_LABEL = "_unknown_", "_silence_"  # a prepared test set's other two folders
SPLITS = ("train", "validation", "testing")

# Every English voice of the bundled espeak-ng data (en-Shaw is a spelling variant, not an accent).
VOICES: tuple[str, ...] = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
                           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# The regional accents a held-out voice count draws from: en and en-us stay in training.
HELDOUT_CANDIDATES: tuple[str, ...] = ("en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
                                       "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
HELDOUT_VAL_VOICES = 1    # default: voices only validation speakers have
HELDOUT_TEST_VOICES = 2   # default: voices only test speakers have
UNSEEN_SHARE = 0.5        # of the validation / test speakers, this share (rounded up) has one
# Engines of the seen speakers (train, validation, test), by weight; espeak also speaks the unseen
# accents. The unseen-engine parts hold out whole engines or whole families (engines.parse_family).
ENGINE_WEIGHTS: dict[str, float] = {"espeak": 2.0, "festival": 1.0, "pico": 1.0}
HELDOUT_ENGINE_VAL = "festival:czech"   # the validation part's engine family
HELDOUT_ENGINE_TEST = "hibari"          # the test part's: a whole engine, the one neural voice
UNSEEN_ENGINE_SPEAKERS = 36             # speakers of each unseen-engine part (12 clips each: >= 400)
# Voices no speaker gets: unintelligible to a recogniser of human speech (benchmarks/intelligibility.py)
# or unable to slow down to read-command pace (upc_ca_ona_hts), or crashing Festival (czech_machac:
# "malloc(): corrupted top size" on some words, even alone in a process).
# mbrola's us3, de1 and sw2 lack diphones that corpus words need ("on" and "off", "five", "happy").
EXCLUDED_VOICES = {("festival", "upc_ca_ona_hts"), ("festival", "czech_machac"), ("mbrola", "us3"),
                   ("mbrola", "de1"), ("mbrola", "sw2")}
TEMPO_RANGE = {"festival": (1.4, 2.1), "pico": (1.1, 1.6), "hibari": (1.1, 1.6),  # duration factor
               "mbrola": (1.8, 2.8)}    # of espeak-ng's 175 words/min: median word ~560 ms
PICO_PITCH_RANGE = (0.8, 1.25)          # pico's and mbrola's pitch factor per speaker
PITCHED_ENGINES = ("pico", "mbrola")    # engines with a per-speaker pitch factor
# Timbre variants (files in espeak-ng-data/voices/!v). Left out on purpose: the robotic or
# effect voices, and those whose output clips at full scale or runs much slower than the rest.
VARIANTS: tuple[str, ...] = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "Alex", "Andy", "Annie", "Denis", "Lee", "Michael", "Mike", "adam", "aunty", "belinda",
    "benjamin", "boris", "caleb", "david", "edward2", "grandma", "grandpa", "ian", "iven3",
    "iven4", "klatt", "klatt2", "klatt3", "linda", "max", "norbert", "quincy", "rob",
    "robert", "shelby", "steph", "travis", "victor", "whisper", "zac",
)
PITCH_RANGE = (25, 75)    # espeakPITCH, 0..100, 50 = the voice's own base pitch
RATE_RANGE = (80, 120)    # words per minute (espeak's default is 175, its minimum 80)
VTL_RANGE = (0.9, 1.1)    # vocal-tract factor: formants and pitch x factor, duration / factor
VTL_GRID_HZ = 50          # the factor is rounded so that 22050 x factor is a multiple of 50 Hz:
                          # resampling cost stays that of 22050 -> 16000 (gcd 50)
RATE_JITTER = 0.06        # per clip: +-6 % rate, so repeats of a word differ slightly
PITCH_JITTER = 4          # per clip: +-4 pitch units
PLACEMENTS = ("uniform", "center", "loudest")
PLACEMENT = "loudest"
CENTER_JITTER_MS = 100.0
PAUSE_MS = (100.0, 500.0)  # leading and trailing pause of a `loudest` recording, each
GAIN_DB = (-12.0, 0.0)    # peak level of the word in the clip, dBFS
PEAK_LIMIT = 0.98         # the mixed clip is scaled down if it would exceed this: no clipping
MAX_SPEECH_S = 0.95       # longer words are re-spoken faster (then cut as a last resort)
TRIM_DB = 40.0            # speech = 5 ms frames within 40 dB of the loudest frame
NOISE_KINDS: tuple[str, ...] = ("white_noise", "pink_noise", "brown_noise", "running_tap", "hum")

_WORD_RE = re.compile(r"^[a-z]+$")


def _rng(seed: int, *parts: int | str) -> np.random.Generator:
    """Independent random stream named by (seed, *parts): strings are hashed, so the stream
    never depends on process order or on how many other streams were drawn before."""
    key = [seed % 2**64] + [p if isinstance(p, int) else _str_key(p) for p in parts]
    return np.random.default_rng(np.random.SeedSequence(key))


def _str_key(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")


def _range(name: str, value: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    """(low, high) with lo <= low <= high <= hi, or a ValueError naming the option."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from None
    if not (lo <= a <= b <= hi):
        raise ValueError(f"{name} must satisfy {lo:g} <= low <= high <= {hi:g}, got {value!r}")
    return a, b


# ----------------------------------------------------------------------------------------
# Speakers and splits

@dataclass(frozen=True)
class Speaker:
    index: int
    id: str             # 8 hex digits, as in Speech Commands file names
    voice: str          # espeak voice (accent)
    variant: str        # espeak variant (timbre)
    pitch: int          # base espeakPITCH
    rate: int           # base words per minute
    vtl: float          # vocal-tract factor (see VTL_RANGE)
    split: str          # train / validation / testing
    unseen_voice: bool  # the voice (an espeak accent) is held out: no training speaker has it
    engine: str = "espeak"
    tempo: float = 1.0  # festival / pico / hibari: duration factor (espeak: `rate` instead)
    unseen_engine: bool = False  # the engine or family is held out: an unseen-engine part

    @property
    def part(self) -> str:
        return "unseen_engine" if self.unseen_engine else "unseen_accent" if self.unseen_voice else "seen"


HeldoutVoices = int | str | Sequence[str]


def _parse_heldout(name: str, value: HeldoutVoices) -> int | tuple[str, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be a count >= 0 or a list of voices, got {value}")
        return int(value)
    if isinstance(value, str):  # "en-029,en-us-nyc", as the command line passes it
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        names = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a count or a list of voices, got {value!r}") from None
    unknown = [v for v in names if v not in VOICES]
    if unknown:
        raise ValueError(f"{name}: unknown voice(s) {unknown}; choose from {list(VOICES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name} names a voice twice: {list(names)}")
    return names


def heldout_voices(seed: int, val: HeldoutVoices = HELDOUT_VAL_VOICES,
                   test: HeldoutVoices = HELDOUT_TEST_VOICES
                   ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(validation-only voices, test-only voices). Each of `val` / `test` is a list of voice
    names (or a comma-separated string), or a count: that many voices drawn by seed from the
    HELDOUT_CANDIDATES not named explicitly (validation draws first)."""
    picks = [_parse_heldout("heldout_val_voices", val), _parse_heldout("heldout_test_voices", test)]
    named = [v for p in picks if isinstance(p, tuple) for v in p]
    if len(set(named)) != len(named):
        raise ValueError(f"heldout_val_voices and heldout_test_voices share voice(s) "
                         f"{sorted({v for v in named if named.count(v) > 1})}: a voice is held out "
                         "for one split only")
    pool = [v for v in HELDOUT_CANDIDATES if v in VOICES and v not in named]
    pool = [pool[i] for i in _rng(seed, "heldout voices").permutation(len(pool))]
    wanted = sum(p for p in picks if isinstance(p, int))
    if wanted > len(pool):
        raise ValueError(f"heldout_val_voices + heldout_test_voices ask for {wanted} voice(s) drawn "
                         f"at random, but only {len(pool)} candidate accent(s) are left "
                         f"({sorted(pool)}); ask for fewer or name the voices")
    chosen = []
    for p in picks:
        if isinstance(p, int):
            chosen.append(tuple(pool[:p]))
            pool = pool[p:]
        else:
            chosen.append(p)
    val_voices, test_voices = chosen
    if not [v for v in VOICES if v not in val_voices + test_voices]:
        raise ValueError(f"heldout_val_voices {list(val_voices)} and heldout_test_voices "
                         f"{list(test_voices)} leave no voice for training")
    return val_voices, test_voices


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Speakers of validation and test. A split with a non-zero fraction always gets at least
    one speaker, so tiny corpora still have a validation and a test set."""
    n_val = max(1, round(val_fraction * n)) if val_fraction > 0 else 0
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"{n} speakers cannot fill train + {n_val} validation + {n_test} test "
                         f"speakers; use at least {n_val + n_test + 1} speakers")
    return n_val, n_test


def _speaker_ids(seed: int, n: int) -> list[str]:
    ids: list[str] = []
    taken: set[str] = set()
    for i in range(n):
        salt = 0
        while (sid := hashlib.sha256(f"{seed}:{i}:{salt}".encode()).hexdigest()[:8]) in taken:
            salt += 1  # practically never; keeps ids unique without depending on later speakers
        taken.add(sid)
        ids.append(sid)
    return ids


def _vtl_on_grid(factor: float) -> float:
    return round(round(ESPEAK_RATE * factor / VTL_GRID_HZ) * VTL_GRID_HZ / ESPEAK_RATE, 6)


def _deal_engines(members: Sequence[int], weights: dict[str, float]) -> dict[int, str]:
    """Engines dealt to `members` in order, by smooth weighted round robin: every prefix of the
    members holds each engine in proportion to its weight, to within one speaker."""
    engines = [e for e, w in weights.items() if w > 0]
    total = sum(weights[e] for e in engines)
    credit = {e: 0.0 for e in engines}
    dealt = {}
    for i in members:
        for e in engines:
            credit[e] += weights[e]
        pick = max(engines, key=lambda e: credit[e])  # the first, on a tie
        credit[pick] -= total
        dealt[i] = pick
    return dealt


def _check_engines(engines: dict[str, float]) -> dict[str, float]:
    try:
        weights = {str(e): float(w) for e, w in dict(engines).items()}
    except (TypeError, ValueError):
        raise ValueError(f"engines must map engine names to weights, got {engines!r}") from None
    unknown = [e for e in weights if e not in ENGINES]
    if unknown or any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"engines must give weights >= 0 (one > 0) to engines of {list(ENGINES)}, got {engines!r}")
    return weights


def seen_voices(engine: str, held_out: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    """The voices of `engine` that seen speakers may have: all but the held-out families' and
    EXCLUDED_VOICES (espeak's: VOICES; its held-out accents are dealt separately)."""
    taken = {v for e, voices in held_out if e == engine for v in voices}
    return [v for v in engine_voices(engine, VOICES) if v not in taken and (engine, v) not in EXCLUDED_VOICES]


def make_speakers(seed: int, n: int, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
                  heldout_val_voices: HeldoutVoices = HELDOUT_VAL_VOICES,
                  heldout_test_voices: HeldoutVoices = HELDOUT_TEST_VOICES,
                  rate_range: Sequence[int] = RATE_RANGE,
                  vtl_range: Sequence[float] = VTL_RANGE,
                  engines: dict[str, float] | None = None,
                  heldout_engine_val: str = HELDOUT_ENGINE_VAL, heldout_engine_test: str = HELDOUT_ENGINE_TEST,
                  unseen_engine_speakers: int = 0, word_duration: float = 1.0) -> list[Speaker]:
    """n seen speakers with their splits, then `unseen_engine_speakers` validation and as many
    test speakers of the held-out engines. Whole speakers go to one split; ordering by the
    (hash-like) id makes the choice random but reproducible. Of the validation (test)
    speakers, the first UNSEEN_SHARE by id speak the held-out validation (test) espeak accents;
    the other seen speakers get engines by `engines`' weights (default ENGINE_WEIGHTS; training
    speakers first, so each split holds every engine in proportion) and share the voices
    that no unseen part holds. Within each group voices are dealt round-robin, and each espeak
    voice's variants from a seeded permutation, so a voice's first len(VARIANTS) speakers all
    differ in timbre. The id, pitch, rate, tempo and vocal-tract factor of speaker i depend
    only on (seed, i); the voice also on the group it falls in. With engines {"espeak": 1} and
    no unseen-engine speakers, the speakers are those of an espeak-only corpus. word_duration
    scales every speaker's word duration: espeak's rate is divided by it (at most MAX_RATE),
    the other engines' tempo multiplied."""
    if not 0.25 <= word_duration <= 2.0:
        raise ValueError(f"word_duration must be within [0.25, 2], got {word_duration}")
    rate_lo, rate_hi = _range("rate_range", rate_range, MIN_RATE, MAX_RATE)
    if not (rate_lo.is_integer() and rate_hi.is_integer()):
        raise ValueError(f"rate_range must be whole words per minute, got {rate_range!r}")
    vtl_lo, vtl_hi = _range("vtl_range", vtl_range, 0.5, 2.0)
    weights = _check_engines(ENGINE_WEIGHTS if engines is None else engines)
    if unseen_engine_speakers < 0:
        raise ValueError(f"unseen_engine_speakers must be >= 0, got {unseen_engine_speakers}")
    held_engines = {split: (engine, tuple(v for v in voices if (engine, v) not in EXCLUDED_VOICES))
                    for split, (engine, voices) in (("validation", parse_family(heldout_engine_val, VOICES)),
                                                    ("testing", parse_family(heldout_engine_test, VOICES)))}
    if set(held_engines["validation"][1]) & set(held_engines["testing"][1]) \
            and held_engines["validation"][0] == held_engines["testing"][0]:
        raise ValueError(f"heldout_engine_val {heldout_engine_val!r} and heldout_engine_test "
                         f"{heldout_engine_test!r} share voices: the two unseen-engine parts must differ")
    held_out = list(held_engines.values()) if unseen_engine_speakers else []
    pools = {e: seen_voices(e, held_out) for e in weights if weights[e] > 0}
    empty = [e for e, voices in pools.items() if not voices]
    if empty:
        raise ValueError(f"engine(s) {empty} have no voice left for seen speakers once the unseen-engine parts "
                         f"({heldout_engine_val!r}, {heldout_engine_test!r}) are held out; give them weight 0")
    n_val, n_test = _split_counts(n, val_fraction, test_fraction)
    val_voices, test_voices = heldout_voices(seed, heldout_val_voices, heldout_test_voices)
    for voices, count, option, fraction in (
            (val_voices, n_val, "heldout_val_voices", "val_fraction"),
            (test_voices, n_test, "heldout_test_voices", "test_fraction")):
        if voices and count == 0:
            raise ValueError(f"{option} {list(voices)} need speakers of their split, but {fraction} "
                             f"is 0; set {option}=0 too")

    m = unseen_engine_speakers
    ids = _speaker_ids(seed, n + 2 * m)
    by_id = sorted(range(n), key=lambda i: ids[i])
    val_idx, test_idx = by_id[:n_val], by_id[n_val:n_val + n_test]
    split = {i: "train" for i in range(n)}
    split.update({i: "validation" for i in val_idx})
    split.update({i: "testing" for i in test_idx})
    group = {i: "seen" for i in range(n)}  # "seen": speakers of training voices, in any split
    if val_voices:
        group.update({i: "validation" for i in val_idx[:math.ceil(n_val * UNSEEN_SHARE)]})
    if test_voices:
        group.update({i: "testing" for i in test_idx[:math.ceil(n_test * UNSEEN_SHARE)]})
    # training speakers first, so that a seen validation / test voice is one training has
    ordered = sorted(range(n), key=lambda i: (split[i] != "train", i))
    engine_of = {i: "espeak" for i in range(n)}
    engine_of.update(_deal_engines([i for i in ordered if group[i] == "seen"], weights))
    group_voices = {"seen": tuple(v for v in VOICES if v not in val_voices + test_voices),
                    "validation": val_voices, "testing": test_voices}

    voice_of: dict[int, tuple[str, str]] = {}
    for name, voices in group_voices.items():
        members = [i for i in ordered if group[i] == name and engine_of[i] == "espeak"]
        if not members:
            continue
        voice_of.update(_deal_espeak(seed, name, voices, members, [split[i] == "train" for i in members]))
    for engine in pools:
        if engine != "espeak":
            members = [i for i in ordered if group[i] == "seen" and engine_of[i] == engine]
            voice_of.update(_deal_voices(seed, f"{engine} seen", pools[engine], members))
    for k, part_split in enumerate(("validation", "testing")):
        members = list(range(n + k * m, n + (k + 1) * m))
        engine, voices = held_engines[part_split]
        split.update({i: part_split for i in members})
        engine_of.update({i: engine for i in members})
        if engine == "espeak":
            voice_of.update(_deal_espeak(seed, f"unseen engine {part_split}", voices, members, [False] * m))
        else:
            voice_of.update(_deal_voices(seed, f"{engine} {part_split}", list(voices), members))

    speakers = []
    for i in range(n + 2 * m):
        rng = _rng(seed, "speaker", i)
        pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
        rate = int(rng.integers(int(rate_lo), int(rate_hi) + 1))
        vtl = _vtl_on_grid(rng.uniform(vtl_lo, vtl_hi))
        engine, tempo = engine_of[i], 1.0
        if engine != "espeak":  # drawn after the espeak draws: an espeak speaker's stream is unchanged
            tempo = round(float(rng.uniform(*TEMPO_RANGE[engine])), 4)
            pitch = int(round(100 * rng.uniform(*PICO_PITCH_RANGE))) if engine in PITCHED_ENGINES else 0
            rate = 0
        if word_duration != 1.0:  # after every draw: the seeded streams are those of the default corpus
            rate, tempo = ((min(MAX_RATE, round(rate / word_duration)), tempo) if engine == "espeak"
                           else (rate, round(tempo * word_duration, 4)))
        speakers.append(Speaker(i, ids[i], *voice_of[i], pitch, rate, vtl, split[i],
                                group.get(i, "seen") != "seen", engine, tempo, i >= n))
    return speakers


def _deal_espeak(seed: int, name: str, voices: Sequence[str], members: Sequence[int],
                 in_train: Sequence[bool]) -> dict[int, tuple[str, str]]:
    """espeak voices and variants for `members` of one group: voices round-robin; a member not
    in training only gets voices some training member of the group has (all, if none trains)."""
    voices = [voices[j] for j in _rng(seed, "voices", name).permutation(len(voices))]
    heard = voices[:sum(in_train)] or voices
    variant_order = {v: _rng(seed, "variants", v).permutation(len(VARIANTS)) for v in voices}
    dealt = {v: 0 for v in voices}
    out = {}
    for j, (i, trains) in enumerate(zip(members, in_train)):
        voice = voices[j % len(voices)] if trains else heard[j % len(heard)]
        out[i] = (voice, VARIANTS[variant_order[voice][dealt[voice] % len(VARIANTS)]])
        dealt[voice] += 1
    return out


def _deal_voices(seed: int, name: str, voices: Sequence[str], members: Sequence[int]) -> dict[int, tuple[str, str]]:
    """Voices of an engine without variants, round-robin over a seeded permutation."""
    order = [voices[j] for j in _rng(seed, "voices", name).permutation(len(voices))]
    return {i: (order[j % len(order)], "") for j, i in enumerate(members)}


# ----------------------------------------------------------------------------------------
# Background noise (the _background_noise_ folder; also mixed into every clip)

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


def _write_pcm16(path: Path, x: np.ndarray) -> None:
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def write_background_noise(out: Path, seed: int, seconds: float) -> list[str]:
    folder = out / NOISE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * SAMPLE_RATE))
    names = []
    for kind in NOISE_KINDS:
        _write_pcm16(folder / f"{kind}.wav", make_noise(kind, n, _rng(seed, "noise", kind)))
        names.append(f"{kind}.wav")
    return names


# ----------------------------------------------------------------------------------------
# One clip

def _resample(x: np.ndarray, orig_rate: int = ESPEAK_RATE) -> np.ndarray:
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


def _trimmed(x: np.ndarray, orig_rate: int, what: str) -> np.ndarray:
    """x resampled from orig_rate to SAMPLE_RATE, trimmed to its speech (speech_bounds)."""
    x = _resample(x, orig_rate)
    start, end = speech_bounds(x)
    if end <= start:
        raise RuntimeError(f"{what} produced silence")
    return x[start:end]


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
        speech = _trimmed(espeak_synthesize(word, voice, variant, rate, pitch, data_path, noise_seed) / 32768.0,
                          orig_rate, f"espeak-ng for {word!r} ({voice}+{variant})")
        if len(speech) <= max_len or rate >= MAX_RATE:
            break
        rate = min(MAX_RATE, math.ceil(rate * len(speech) / max_len * 1.05))  # speak faster
    return _cut(speech), rate


def take_params(seed: int, spk: Speaker, word: str, k: int) -> tuple[np.random.Generator, dict[str, Any]]:
    """The random stream of take k of `word` by `spk`, and the engine settings drawn from it
    first: espeak's rate and pitch (+- jitter) and breath-noise seed, the other engines' tempo
    (+- jitter) and seed."""
    rng = _rng(seed, "clip", spk.index, word, k)
    if spk.engine == "espeak":
        rate = int(round(spk.rate * rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)))
        pitch = int(np.clip(spk.pitch + rng.integers(-PITCH_JITTER, PITCH_JITTER + 1), 0, 100))
        return rng, dict(rate=rate, pitch=pitch, noise_seed=int(rng.integers(2**31)))
    tempo = round(spk.tempo * float(rng.uniform(1 - RATE_JITTER, 1 + RATE_JITTER)), 4)
    return rng, dict(tempo=tempo, pitch=spk.pitch, noise_seed=int(rng.integers(2**31)))


Spoken = dict[tuple[str, int], tuple[np.ndarray, float]]  # (word, take) -> (trimmed speech, tempo used)


def speak_takes(seed: int, spk: Speaker, takes: Sequence[tuple[str, int]]) -> Spoken:
    """A festival / pico / hibari speaker's takes, spoken in one batch per round: a word longer
    than MAX_SPEECH_S is spoken again faster (up to 3 times), then cut."""
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
            speech = _trimmed(x, _vtl_rate(rate, spk.vtl), f"{spk.engine} voice {spk.voice} for {t[0]!r}")
            if len(speech) > max_len and attempt < 3:
                tempo[t] = round(tempo[t] * max_len / len(speech) * 0.95, 4)
                again.append(t)
            else:
                spoken[t] = (_cut(speech), tempo[t])
        pending = again
        if not pending:
            break
    return spoken


@dataclass(frozen=True)
class RenderOptions:
    """How a spoken word becomes a clip (synthesize_corpus documents each option)."""
    placement: str = PLACEMENT
    center_jitter_ms: float = CENTER_JITTER_MS
    pause_ms: tuple[float, float] = PAUSE_MS
    snr_db: tuple[float, float] = (5.0, 30.0)


def loudest_window(x: np.ndarray, n: int = CLIP_SAMPLES) -> int:
    """Start of the n-sample window of x with the highest energy (the first, on a tie): how
    Speech Commands' extract_loudest_section cut each clip from its recording."""
    if len(x) < n:
        raise ValueError(f"a recording of {len(x)} samples has no {n}-sample window")
    energy = np.concatenate(([0.0], np.cumsum(x * x)))
    return int(np.argmax(energy[n:] - energy[:-n]))


def _noise_segment(noise: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(noise) >= n:
        pos = int(rng.integers(0, len(noise) - n + 1))
        return noise[pos:pos + n].copy()
    pos = int(rng.integers(len(noise)))  # a noise file shorter than the recording is looped
    return np.take(noise, pos + np.arange(n), mode="wrap")


def render_recording(seed: int, spk: Speaker, word: str, k: int,
                     noises: Sequence[tuple[str, np.ndarray]], opts: RenderOptions,
                     data_path: str | None = None, spoken: Spoken | None = None
                     ) -> tuple[np.ndarray, int, int, dict[str, Any]]:
    """`word` said by `spk` (take k) over background noise, as float64: the recording (the
    clip itself for uniform / center, longer for loudest), the word's [start, end) sample in
    it, and the manifest facts known so far. A festival / pico / hibari speaker's speech comes
    from `spoken` (speak_takes)."""
    rng, take = take_params(seed, spk, word, k)
    if spk.engine == "espeak":
        speech, rate = speak_word(word, spk.voice, spk.variant, take["rate"], take["pitch"], spk.vtl, data_path,
                                  noise_seed=take["noise_seed"])
        engine_info = dict(rate=rate, pitch=take["pitch"], tempo="")
    else:
        if spoken is None or (word, k) not in spoken:
            raise ValueError(f"render_recording: {spk.engine} speech of {word!r} take {k} must come from speak_takes")
        speech, tempo = spoken[(word, k)]
        engine_info = dict(rate="", pitch=spk.pitch if spk.engine in PITCHED_ENGINES else "", tempo=tempo)
    n = len(speech)
    gain_db = float(rng.uniform(*GAIN_DB))
    speech = speech * (10 ** (gain_db / 20) / np.abs(speech).max())

    if opts.placement == "loudest":  # pause, word, pause: the person speaking after "record"
        lead, trail = (int(round(float(rng.uniform(*opts.pause_ms)) * SAMPLE_RATE / 1000))
                       for _ in range(2))
        length, at = max(CLIP_SAMPLES, lead + n + trail), lead
    elif opts.placement == "center":
        jitter_ms = float(rng.uniform(-opts.center_jitter_ms, opts.center_jitter_ms))
        jitter = jitter_ms * SAMPLE_RATE / 1000
        length, at = CLIP_SAMPLES, int(np.clip(round((CLIP_SAMPLES - n) / 2 + jitter), 0,
                                               CLIP_SAMPLES - n))
    else:  # uniform: anywhere the word fits
        length, at = CLIP_SAMPLES, int(rng.integers(0, CLIP_SAMPLES - n + 1))

    noise_name, noise = noises[int(rng.integers(len(noises)))]
    bg = _noise_segment(noise, length, rng)
    snr = float(rng.uniform(*opts.snr_db))
    # SNR = power of the speech while it is spoken vs. power of the noise over the recording
    p_speech, p_noise = np.mean(speech ** 2), np.mean(bg ** 2)
    recording = bg * math.sqrt(p_speech / (max(p_noise, 1e-20) * 10 ** (snr / 10)))
    recording[at:at + n] += speech
    info = dict(engine=spk.engine, voice=spk.voice, variant=spk.variant, **engine_info, vtl_factor=spk.vtl,
                gain_db=gain_db, snr_db=round(snr, 2), noise_file=noise_name)
    return recording, at, at + n, info


def render_clip(seed: int, spk: Speaker, word: str, k: int, noises: Sequence[tuple[str, np.ndarray]],
                opts: RenderOptions, data_path: str | None = None, spoken: Spoken | None = None
                ) -> tuple[np.ndarray, dict[str, Any]]:
    """1 s of `word` said by `spk` (take k) over background noise, as float64 in [-1, 1], and
    its manifest facts (the word's position inside the clip, what the clip edges cut off)."""
    recording, a, b, info = render_recording(seed, spk, word, k, noises, opts, data_path, spoken)
    start = loudest_window(recording) if opts.placement == "loudest" else 0
    clip = recording[start:start + CLIP_SAMPLES].copy()
    peak = np.abs(clip).max()
    if peak > PEAK_LIMIT:  # scale speech and noise together: SNR kept, no clipping
        clip *= PEAK_LIMIT / peak
        info["gain_db"] += 20 * math.log10(PEAK_LIMIT / peak)
    a_in, b_in = (int(np.clip(x - start, 0, CLIP_SAMPLES)) for x in (a, b))

    def ms(samples: int) -> float:
        return round(samples * 1000 / SAMPLE_RATE, 4)

    info.update(gain_db=round(info["gain_db"], 2), speech_start_ms=ms(a_in), speech_end_ms=ms(b_in),
                speech_cut_ms=ms((b - a) - (b_in - a_in)))
    return clip, info


# ----------------------------------------------------------------------------------------
# Worker processes: one task = one speaker (all of their words and takes)

_worker: dict[str, Any] = {}


def _worker_init(out: str, seed: int, words: tuple[str, ...], repeats: int, opts: RenderOptions,
                 noise_names: tuple[str, ...], data_path: str) -> None:
    # An exception escaping a Pool initializer makes multiprocessing respawn the worker
    # forever (a hang), so keep it and re-raise it from the first task instead.
    try:
        import torch
        torch.set_num_threads(1)  # one process per core; also keeps resampling bit-reproducible
        noises = []
        for name in noise_names:  # read back the written files: mixing uses exactly their samples
            x, _ = sf.read(str(Path(out) / NOISE_DIR / name), dtype="float64")
            noises.append((name, x))
        _worker.update(out=Path(out), seed=seed, words=words, repeats=repeats, opts=opts,
                       noises=noises, data_path=data_path)
        check_fresh_state(data_path)
    except Exception as e:
        _worker["error"] = e


def speaker_words(spk: Speaker, words: Sequence[str]) -> list[str]:
    """What a speaker says: every word; an unseen-engine speaker the keywords and one other word
    (in turn), the share of _unknown_ clips in a 12-class test set."""
    if not spk.unseen_engine:
        return list(words)
    others = [w for w in words if w not in KEYWORDS]
    return [w for w in words if w in KEYWORDS] + ([others[spk.index % len(others)]] if others else [])


def clip_path(spk: Speaker, word: str, k: int) -> str:
    if spk.unseen_engine:  # a prepared test set: one folder per label
        label = word if word in KEYWORDS else UNKNOWN_LABEL
        return f"{UNSEEN_ENGINE_DIRS[spk.split]}/{label}/{spk.id}_nohash_{k}.wav"
    return f"{word}/{spk.id}_nohash_{k}.wav"


def _speaker_task(spk: Speaker) -> list[dict[str, Any]]:
    w = _worker
    if "error" in w:
        raise w["error"]
    takes = [(word, k) for word in speaker_words(spk, w["words"]) for k in range(w["repeats"])]
    spoken = speak_takes(w["seed"], spk, takes) if spk.engine != "espeak" else None
    rows = []
    for word, k in takes:
        clip, info = render_clip(w["seed"], spk, word, k, w["noises"], w["opts"], w["data_path"], spoken)
        rel = clip_path(spk, word, k)
        _write_pcm16(w["out"] / rel, clip)
        rows.append(dict(path=rel, word=word, speaker=spk.id, split=spk.split, part=spk.part,
                         unseen_voice=int(spk.unseen_voice), **info))
    return rows


# ----------------------------------------------------------------------------------------
# Driver

def _check_words(unknown_words: Sequence[str]) -> tuple[str, ...]:
    unknown = tuple(unknown_words)
    words = KEYWORDS + unknown
    bad = [w for w in unknown if not isinstance(w, str) or not _WORD_RE.match(w)]
    if bad:
        raise ValueError(f"unknown_words must be lowercase a-z words, got {bad}")
    if len(set(words)) != len(words):
        raise ValueError(f"unknown_words repeat a word or overlap KEYWORDS: {unknown}")
    return words


def _remove_generated(out: Path, words: Sequence[str]) -> None:
    for name in (*words, NOISE_DIR, *UNSEEN_ENGINE_DIRS.values()):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (SYNTH_JSON, MANIFEST, VALIDATION_LIST, TESTING_LIST, VALIDATION_UNSEEN_LIST,
                 TESTING_UNSEEN_LIST, IN_PROGRESS):
        (out / name).unlink(missing_ok=True)


def _prepare_out(out: Path, words: tuple[str, ...], overwrite: bool) -> None:
    """Only ever deletes what this module wrote: a complete corpus (synth.json) when
    overwrite=True, or a half-written one (IN_PROGRESS marker). Any other non-empty
    directory (say, the real Speech Commands) is refused."""
    meta, marker = out / SYNTH_JSON, out / IN_PROGRESS
    if meta.exists():
        if not overwrite:
            raise FileExistsError(f"{meta} exists: {out} already holds a synthetic corpus; pass "
                                  "overwrite=True to regenerate it, or choose another directory")
        try:
            old_words = json.loads(meta.read_text())["words"]
        except (ValueError, KeyError, TypeError):
            old_words = []
        _remove_generated(out, [*old_words, *words])
    elif marker.exists():  # an earlier run died half-way: its files are ours to replace
        try:
            old_words = json.loads(marker.read_text())["words"]
        except (ValueError, KeyError, TypeError):
            old_words = []
        _remove_generated(out, [*old_words, *words])
    elif out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise FileExistsError(f"{out} is not empty and has no {SYNTH_JSON}: refusing to write a "
                              "synthetic corpus into it; choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"words": list(words)}))


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _render_speakers(spk_list: Sequence[Speaker], workers: int, init_args: tuple,
                     collect: Callable[[int, list[dict[str, Any]]], None]) -> None:
    if workers == 1:  # in-process: easier to debug; torch threads restored afterwards
        import torch
        threads = torch.get_num_threads()
        try:
            _worker_init(*init_args)
            for i, spk in enumerate(spk_list, 1):
                collect(i, _speaker_task(spk))
        finally:
            torch.set_num_threads(threads)
            _worker.clear()
    else:  # spawn: fresh interpreters, no inherited threads or espeak state
        with mp.get_context("spawn").Pool(workers, _worker_init, init_args) as pool:
            for i, speaker_rows in enumerate(pool.imap_unordered(_speaker_task, spk_list), 1):
                collect(i, speaker_rows)


def timing_stats(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Where and how long the words are, over manifest rows (numbers, or the CSV's strings).
    word_ms is the word inside the clip (speech_end_ms - speech_start_ms); spoken_word_ms adds
    back what the clip edges cut off."""
    def col(key: str) -> np.ndarray:
        return np.array([float(r[key]) for r in rows])

    def quantiles(x: np.ndarray) -> dict[str, float]:
        return {f"p{p}" if p != 50 else "median": round(float(np.percentile(x, p)), 1)
                for p in (10, 50, 90)}

    start, end, cut = col("speech_start_ms"), col("speech_end_ms"), col("speech_cut_ms")
    word = end - start
    return {
        "word_ms": {**quantiles(word), "mean": round(float(word.mean()), 1),
                    "share_over_500ms": round(float(np.mean(word > 500)), 4)},
        "spoken_word_ms": quantiles(word + cut),
        "speech_start_ms": quantiles(start),
        "speech_end_ms": quantiles(end),
        # what a centred 500 ms crop sees: the whole word, or not
        "share_whole_word_in_center_500ms": round(float(np.mean((start >= 250) & (end <= 750)
                                                                 & (cut == 0))), 4),
        "share_cut_by_clip_edge": round(float(np.mean(cut > 0)), 4),
    }


def synthesize_corpus(out: str | Path, *, seed: int = 0, speakers: int = 40, repeats: int = 1,
                      unknown_words: Sequence[str] = UNKNOWN_WORDS, val_fraction: float = 0.1,
                      test_fraction: float = 0.1,
                      heldout_val_voices: HeldoutVoices = HELDOUT_VAL_VOICES,
                      heldout_test_voices: HeldoutVoices = HELDOUT_TEST_VOICES,
                      rate_range: Sequence[int] = RATE_RANGE,
                      vtl_range: Sequence[float] = VTL_RANGE, placement: str = PLACEMENT,
                      center_jitter_ms: float = CENTER_JITTER_MS,
                      pause_ms: Sequence[float] = PAUSE_MS, noise_seconds: float = 30.0,
                      snr_db: tuple[float, float] = (5.0, 30.0),
                      engines: dict[str, float] | None = None,
                      heldout_engine_val: str = HELDOUT_ENGINE_VAL, heldout_engine_test: str = HELDOUT_ENGINE_TEST,
                      unseen_engine_speakers: int = UNSEEN_ENGINE_SPEAKERS, word_duration: float = 1.0,
                      workers: int | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Write a Speech-Commands-layout corpus to `out` and return the content of synth.json.

    Every seen speaker says every word (KEYWORDS + unknown_words) `repeats` times. The output
    is byte-identical for the same arguments whatever `workers` is (None = os.cpu_count()).

    engines: weight of each engine among the seen speakers (default ENGINE_WEIGHTS).
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
    placement: "uniform", "center" or "loudest" (module docstring); center_jitter_ms is the
        +- jitter of "center", pause_ms the (low, high) leading and trailing pause of "loudest".

    Raises ValueError for a bad option (naming it), FileExistsError if `out` already holds a
    corpus (unless overwrite=True) or is a non-empty directory that is not one of ours,
    RuntimeError if espeak-ng is unusable.
    """
    t0 = time.perf_counter()
    out = Path(out)
    words = _check_words(unknown_words)
    if speakers < 1 or repeats < 1:
        raise ValueError(f"speakers and repeats must be >= 1, got {speakers}, {repeats}")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"bad split fractions: val {val_fraction}, test {test_fraction}")
    if noise_seconds * SAMPLE_RATE < CLIP_SAMPLES:
        raise ValueError(f"noise_seconds must be >= 1, got {noise_seconds}")
    snr_db = (float(snr_db[0]), float(snr_db[1]))
    if snr_db[0] > snr_db[1]:
        raise ValueError(f"snr_db must be (low, high), got {snr_db}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if not 0 <= center_jitter_ms <= 500:
        raise ValueError(f"center_jitter_ms must be within [0, 500], got {center_jitter_ms}")
    opts = RenderOptions(placement, float(center_jitter_ms), _range("pause_ms", pause_ms, 0, 5000),
                         snr_db)

    spk_list = make_speakers(seed, speakers, val_fraction=val_fraction, test_fraction=test_fraction,
                             heldout_val_voices=heldout_val_voices,
                             heldout_test_voices=heldout_test_voices, rate_range=rate_range,
                             vtl_range=vtl_range, engines=engines, heldout_engine_val=heldout_engine_val,
                             heldout_engine_test=heldout_engine_test,
                             unseen_engine_speakers=unseen_engine_speakers,
                             word_duration=word_duration)  # ValueError: a bad option
    val_voices, test_voices = heldout_voices(seed, heldout_val_voices, heldout_test_voices)
    workers = max(1, min(workers or os.cpu_count() or 1, len(spk_list)))
    rows: list[dict[str, Any]] = []
    step = max(1, len(spk_list) // 10)

    def collect(done: int, speaker_rows: list[dict[str, Any]]) -> None:
        rows.extend(speaker_rows)
        if progress and (done % step == 0 or done == len(spk_list)):
            print(f"[synth] {done}/{len(spk_list)} speakers, {len(rows)} clips, "
                  f"{time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

    voice_root = Path(tempfile.mkdtemp(prefix="synth-espeak-"))
    try:
        data_path = make_voice_dir(voice_root, VOICES)
        espeakers = [s for s in spk_list if s.engine == "espeak"]
        check_voices(data_path, [s.voice for s in espeakers], [s.variant for s in espeakers])
        for engine in sorted({s.engine for s in spk_list} - {"espeak"}):
            check_engine(engine, sorted({s.voice for s in spk_list if s.engine == engine}))
        _prepare_out(out, words, overwrite)  # only now touch `out`: all checks have passed
        noise_names = tuple(write_background_noise(out, seed, noise_seconds))
        for folder in {str(Path(clip_path(spk, w, 0)).parent) for spk in spk_list for w in speaker_words(spk, words)}:
            (out / folder).mkdir(parents=True, exist_ok=True)
        init_args = (str(out), seed, words, repeats, opts, noise_names, data_path)
        _render_speakers(spk_list, workers, init_args, collect)
    finally:
        shutil.rmtree(voice_root, ignore_errors=True)

    rows.sort(key=lambda r: r["path"])
    for name, split, unseen_only in ((VALIDATION_LIST, "validation", False),
                                     (TESTING_LIST, "testing", False),
                                     (VALIDATION_UNSEEN_LIST, "validation", True),
                                     (TESTING_UNSEEN_LIST, "testing", True)):
        _write_lines(out / name, [r["path"] for r in rows if r["split"] == split and r["part"] != "unseen_engine"
                                  and (r["unseen_voice"] or not unseen_only)])
    silence = write_unseen_engine_silence(out, seed, spk_list, repeats, noise_names)
    with open(out / MANIFEST, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    listed = [r for r in rows if r["part"] != "unseen_engine"]  # the clips of the split lists
    per_word = {w: {s: 0 for s in SPLITS} for w in words}
    for r in listed:
        per_word[r["word"]][r["split"]] += 1
    splits = {}
    for s in SPLITS:
        members = [spk for spk in spk_list if spk.split == s and not spk.unseen_engine]
        splits[s] = {"speakers": len(members),
                     "unseen_voice_speakers": sum(spk.unseen_voice for spk in members),
                     "clips": sum(c[s] for c in per_word.values()),
                     "engines": {e: n for e in ENGINES if (n := sum(spk.engine == e for spk in members))},
                     "voices": _count(f"{spk.engine}:{spk.voice}" for spk in members)}
    stats = timing_stats(listed)
    elapsed = time.perf_counter() - t0
    meta = {
        "format": "speech_commands_synth/3",
        "seed": seed,
        "params": dict(speakers=speakers, repeats=repeats, val_fraction=val_fraction,
                       test_fraction=test_fraction,
                       heldout_val_voices=_param(heldout_val_voices),
                       heldout_test_voices=_param(heldout_test_voices), unseen_share=UNSEEN_SHARE,
                       noise_seconds=noise_seconds, snr_db=list(snr_db), gain_db=list(GAIN_DB),
                       pitch_range=list(PITCH_RANGE), rate_range=[int(r) for r in rate_range],
                       vtl_range=[float(v) for v in vtl_range], placement=placement,
                       center_jitter_ms=opts.center_jitter_ms, pause_ms=list(opts.pause_ms),
                       max_speech_s=MAX_SPEECH_S, engines=_check_engines(engines or ENGINE_WEIGHTS),
                       heldout_engine_val=heldout_engine_val, heldout_engine_test=heldout_engine_test,
                       unseen_engine_speakers=unseen_engine_speakers, word_duration=word_duration,
                       tempo_range={e: list(r) for e, r in TEMPO_RANGE.items()},
                       pico_pitch_range=list(PICO_PITCH_RANGE),
                       excluded_voices=sorted(f"{e}:{v}" for e, v in EXCLUDED_VOICES)),
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "keywords": list(KEYWORDS),
        "unknown_words": list(words[len(KEYWORDS):]),
        "words": list(words),
        "noise_files": [f"{NOISE_DIR}/{n}" for n in noise_names],
        "clips": len(rows),
        "clips_per_split": {s: splits[s]["clips"] for s in SPLITS},
        "clips_per_word": per_word,
        "speakers_per_split": {s: splits[s]["speakers"] for s in SPLITS},
        "heldout_voices": {"validation": list(val_voices), "testing": list(test_voices)},
        "splits": splits,
        "unseen_engine": unseen_engine_summary(spk_list, rows, silence),
        "stats": stats,
        "stats_per_engine": {f"{e}/{part}": timing_stats(group) for (e, part), group in _groups(rows).items()},
        "speakers": [asdict(s) for s in spk_list],
        "workers": workers,
        "elapsed_s": round(elapsed, 2),
    }
    tmp = out / f"{SYNTH_JSON}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / SYNTH_JSON)  # atomic: synth.json exists only for a complete corpus
    (out / IN_PROGRESS).unlink(missing_ok=True)
    if progress:
        print(_summary(meta, elapsed, out), file=sys.stderr, flush=True)
    return meta


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items()))


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["engine"], r["part"]), []).append(r)
    return dict(sorted(groups.items()))


def write_unseen_engine_silence(out: Path, seed: int, spk_list: Sequence[Speaker], repeats: int,
                                noise_names: Sequence[str]) -> dict[str, int]:
    """The _silence_ folder of each unseen-engine part: one 1 s stretch of a background-noise file
    per speaker and take (the share of the 12-class test set), at a level drawn from -45..-20 dBFS."""
    counts = {}
    for split, folder in UNSEEN_ENGINE_DIRS.items():
        n = sum(spk.unseen_engine and spk.split == split for spk in spk_list) * repeats
        if not n:
            continue
        (out / folder / SILENCE_LABEL).mkdir(parents=True, exist_ok=True)
        rng = _rng(seed, "unseen engine silence", split)
        noises = [sf.read(str(out / NOISE_DIR / name), dtype="float64")[0] for name in noise_names]
        for i in range(n):
            x = _noise_segment(noises[int(rng.integers(len(noises)))], CLIP_SAMPLES, rng)
            level = 10 ** (float(rng.uniform(-45.0, -20.0)) / 20)
            _write_pcm16(out / folder / SILENCE_LABEL / f"silence_{i:04d}.wav",
                         x * level / (np.sqrt(np.mean(x ** 2)) + 1e-12))
        counts[split] = n
    return counts


def unseen_engine_summary(spk_list: Sequence[Speaker], rows: Sequence[dict[str, Any]],
                          silence: dict[str, int]) -> dict[str, Any]:
    """Per unseen-engine part: its folder (evaluate it as name: speech_commands_test), engine,
    voices, speakers and clips per label kind."""
    out = {}
    for split, folder in UNSEEN_ENGINE_DIRS.items():
        members = [spk for spk in spk_list if spk.unseen_engine and spk.split == split]
        if not members:
            continue
        part_rows = [r for r in rows if r["part"] == "unseen_engine" and r["split"] == split]
        keyword = sum(r["word"] in KEYWORDS for r in part_rows)
        out[split] = {"path": folder, "engine": members[0].engine,
                      "voices": _count(spk.voice for spk in members), "speakers": len(members),
                      "clips": {"keywords": keyword, "unknown": len(part_rows) - keyword,
                                "silence": silence.get(split, 0)},
                      "clips_total": len(part_rows) + silence.get(split, 0)}
    return out


def _param(heldout: HeldoutVoices) -> int | list[str]:
    parsed = _parse_heldout("heldout voices", heldout)
    return parsed if isinstance(parsed, int) else list(parsed)


def _summary(meta: dict, elapsed: float, out: Path) -> str:
    st, sp, p = meta["stats"], meta["splits"], meta["params"]
    w = st["word_ms"]
    held = meta["heldout_voices"]
    return (f"[synth] done: {meta['clips']} clips ({len(meta['words'])} words x {p['speakers']} "
            f"speakers x {p['repeats']}) in {elapsed:.1f}s ({meta['clips'] / elapsed:.0f} clips/s) "
            f"-> {out}; word {w['median']:.0f} ms median (p10 {w['p10']:.0f}, p90 {w['p90']:.0f}, "
            f"{100 * w['share_over_500ms']:.0f}% > 500 ms), {p['placement']}: whole word in the "
            f"centred 500 ms {100 * st['share_whole_word_in_center_500ms']:.0f}%, cut by the clip "
            f"edge {100 * st['share_cut_by_clip_edge']:.0f}%; speakers train/val/test "
            f"{sp['train']['speakers']}/{sp['validation']['speakers']}/{sp['testing']['speakers']}, "
            f"unseen voices val {held['validation']} ({sp['validation']['unseen_voice_speakers']} "
            f"speakers), test {held['testing']} ({sp['testing']['unseen_voice_speakers']})"
            + "".join(f"; unseen engine {split} {u['engine']} {sorted(u['voices'])}: {u['clips_total']} clips in "
                      f"{u['path']}/" for split, u in meta["unseen_engine"].items()))
