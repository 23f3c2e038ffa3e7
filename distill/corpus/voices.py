"""The voices a speaker may get, and how engines, voices and timbres are dealt to speakers.

espeak-ng gives a speaker an accent (a voice) and a timbre (a variant); the other engines a voice
each (distill.corpus.engines). Some voices are never dealt (EXCLUDED_VOICES), and some accents
are held out: spoken only by validation or test speakers (heldout_voices), so that a test can
report an accent no training speaker has. Dealing is round-robin over seeded permutations, so
that every prefix of the speakers spreads evenly over engines, voices and timbres.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from distill.corpus.engines import engine_voices
from distill.corpus.options import HELDOUT_TEST_VOICES, HELDOUT_VAL_VOICES, HeldoutVoices
from distill.corpus.streams import rng_for

# Every English voice of the bundled espeak-ng data (en-Shaw is a spelling variant, not an accent).
VOICES: tuple[str, ...] = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
                           "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# The regional accents a held-out voice count draws from: en and en-us stay in training.
HELDOUT_CANDIDATES: tuple[str, ...] = ("en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
                                       "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Voices no speaker gets: unintelligible to a recogniser of human speech (benchmarks/intelligibility.py)
# or unable to slow down to read-command pace (upc_ca_ona_hts), or crashing Festival (czech_machac:
# "malloc(): corrupted top size" on some words, even alone in a process).
# mbrola's us3, de1 and sw2 lack diphones that corpus words need ("on" and "off", "five", "happy").
EXCLUDED_VOICES = {("festival", "upc_ca_ona_hts"), ("festival", "czech_machac"), ("mbrola", "us3"),
                   ("mbrola", "de1"), ("mbrola", "sw2")}
TEMPO_RANGE = {"festival": (1.4, 2.1), "pico": (1.1, 1.6), "hibari": (1.1, 1.6),  # duration factor
               "mbrola": (1.8, 2.8),    # of espeak-ng's 175 words/min: median word ~560 ms
               "openjtalk": (1.3, 2.0), "rhvoice": (1.0, 1.4)}  # (their own median words: 340, 475-590 ms)
PICO_PITCH_RANGE = (0.8, 1.25)          # the pitch factor per speaker of the PITCHED_ENGINES
PITCHED_ENGINES = ("pico", "mbrola", "openjtalk", "rhvoice")  # engines with a per-speaker pitch factor
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


def parse_heldout(name: str, value: HeldoutVoices) -> int | tuple[str, ...]:
    """A held-out voice option: a count, or the voice names (a list or "en-029,en-us-nyc")."""
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
    picks = [parse_heldout("heldout_val_voices", val), parse_heldout("heldout_test_voices", test)]
    named = [v for p in picks if isinstance(p, tuple) for v in p]
    if len(set(named)) != len(named):
        raise ValueError(f"heldout_val_voices and heldout_test_voices share voice(s) "
                         f"{sorted({v for v in named if named.count(v) > 1})}: a voice is held out "
                         "for one split only")
    pool = [v for v in HELDOUT_CANDIDATES if v in VOICES and v not in named]
    pool = [pool[i] for i in rng_for(seed, "heldout voices").permutation(len(pool))]
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


def seen_voices(engine: str, held_out: Sequence[tuple[str, tuple[str, ...]]]) -> list[str]:
    """The voices of `engine` that seen speakers may have: all but the held-out families' and
    EXCLUDED_VOICES (espeak's: VOICES; its held-out accents are dealt separately)."""
    taken = {v for e, voices in held_out if e == engine for v in voices}
    return [v for v in engine_voices(engine, VOICES) if v not in taken and (engine, v) not in EXCLUDED_VOICES]


def deal_engines(members: Sequence[int], weights: dict[str, float]) -> dict[int, str]:
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


def deal_espeak(seed: int, name: str, voices: Sequence[str], members: Sequence[int],
                in_train: Sequence[bool]) -> dict[int, tuple[str, str]]:
    """espeak voices and variants for `members` of one group: voices round-robin; a member not
    in training only gets voices some training member of the group has (all, if none trains)."""
    voices = [voices[j] for j in rng_for(seed, "voices", name).permutation(len(voices))]
    heard = voices[:sum(in_train)] or voices
    variant_order = {v: rng_for(seed, "variants", v).permutation(len(VARIANTS)) for v in voices}
    dealt = {v: 0 for v in voices}
    out = {}
    for j, (i, trains) in enumerate(zip(members, in_train)):
        voice = voices[j % len(voices)] if trains else heard[j % len(heard)]
        out[i] = (voice, VARIANTS[variant_order[voice][dealt[voice] % len(VARIANTS)]])
        dealt[voice] += 1
    return out


def deal_voices(seed: int, name: str, voices: Sequence[str], members: Sequence[int]) -> dict[int, tuple[str, str]]:
    """Voices of an engine without variants, round-robin over a seeded permutation."""
    order = [voices[j] for j in rng_for(seed, "voices", name).permutation(len(voices))]
    return {i: (order[j % len(order)], "") for j, i in enumerate(members)}
