"""Who speaks in a corpus: its speakers, their splits, and what each of them says.

Speakers and splits
- A "speaker" is an espeak voice (accent) x variant (timbre) x pitch x speaking rate x
  vocal-tract factor (or, for another engine, a voice x tempo x pitch factor). Its id is 8 hex
  digits hashed from (seed, speaker index), like the real dataset's ids.
- Splits are speaker-disjoint (as in Speech Commands), and in part voice-disjoint: the
  `heldout_val_voices` / `heldout_test_voices` voices are spoken only by validation / test
  speakers. Half (rounded up) of the validation and test speakers have a held-out voice, the
  others are new speakers of training voices, so a test reports both a new speaker of a seen
  accent (testing_list.txt) and an unseen accent (testing_unseen_voice_list.txt). A count picks
  voices by seed among the regional accents (HELDOUT_CANDIDATES); en and en-us always stay in
  training, so that the training set keeps the two standard accents.
- The unseen-engine parts: `unseen_engine_speakers` more validation and as many test speakers,
  of an engine or engine family no seen speaker has (heldout_engine_val / heldout_engine_test).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Sequence

from distill.corpus.engines import parse_family
from distill.corpus.espeak import ESPEAK_RATE, MAX_RATE, MIN_RATE
from distill.corpus.layout import UNKNOWN_LABEL, UNSEEN_ENGINE_DIRS
from distill.corpus.options import ENGINE_WEIGHTS, CorpusOptions, check_engines, check_range
from distill.corpus.streams import rng_for
from distill.corpus.voices import (EXCLUDED_VOICES, PICO_PITCH_RANGE, PITCH_RANGE, PITCHED_ENGINES, TEMPO_RANGE,
                                   VOICES, deal_engines, deal_espeak, deal_voices, heldout_voices, seen_voices)
from distill.names import KEYWORDS

UNSEEN_SHARE = 0.5        # of the validation / test speakers, this share (rounded up) has one
VTL_GRID_HZ = 50          # the factor is rounded so that 22050 x factor is a multiple of 50 Hz:
                          # resampling cost stays that of 22050 -> 16000 (gcd 50)


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


def make_speakers(options: CorpusOptions) -> list[Speaker]:
    """options.speakers seen speakers with their splits, then `unseen_engine_speakers` validation
    and as many test speakers of the held-out engines. Whole speakers go to one split; ordering
    by the (hash-like) id makes the choice random but reproducible. Of the validation (test)
    speakers, the first UNSEEN_SHARE by id speak the held-out validation (test) espeak accents;
    the other seen speakers get engines by `engines`' weights (default ENGINE_WEIGHTS; training
    speakers first, so each split holds every engine in proportion) and share the voices
    that no unseen part holds. Within each group voices are dealt round-robin, and each espeak
    voice's variants from a seeded permutation, so a voice's first len(VARIANTS) speakers all
    differ in timbre. The id, pitch, rate, tempo and vocal-tract factor of speaker i depend
    only on (seed, i); the voice also on the group it falls in. With engines {"espeak": 1} and
    no unseen-engine speakers, the speakers are those of an espeak-only corpus. word_duration
    scales every speaker's word duration: espeak's rate is divided by it (at most MAX_RATE),
    the other engines' tempo multiplied. Raises ValueError for a bad option, naming it."""
    plan = _plan(options)
    ids = _speaker_ids(plan.seed, plan.n + 2 * plan.m)
    roster = _assign_splits(plan, ids)
    _deal_seen(plan, roster)
    _deal_unseen_engines(plan, roster)
    return [_draw_speaker(plan, roster, ids[i], i) for i in range(plan.n + 2 * plan.m)]


@dataclass(frozen=True)
class _Plan:
    """make_speakers' options, checked, and what follows from them."""
    seed: int
    n: int                       # seen speakers (train, validation and test)
    m: int                       # speakers of each unseen-engine part
    rate: tuple[int, int]        # espeak's words per minute
    vtl: tuple[float, float]
    word_duration: float
    weights: dict[str, float]    # engine -> weight among the seen speakers
    held_engines: dict[str, tuple[str, tuple[str, ...]]]  # split -> its unseen-engine part's (engine, voices)
    pools: dict[str, list[str]]  # engine -> the voices seen speakers may have
    n_val: int
    n_test: int
    heldout: tuple[tuple[str, ...], tuple[str, ...]]  # (validation-only, test-only) espeak accents


@dataclass
class _Roster:
    """Per speaker index, as dealing proceeds: split, group ("seen", or the split whose held-out
    accents it speaks), engine, and (voice, variant)."""
    split: dict[int, str]
    group: dict[int, str]
    engine: dict[int, str] = field(default_factory=dict)
    voice: dict[int, tuple[str, str]] = field(default_factory=dict)


def _plan(o: CorpusOptions) -> _Plan:
    if not 0.25 <= o.word_duration <= 2.0:
        raise ValueError(f"word_duration must be within [0.25, 2], got {o.word_duration}")
    rate_lo, rate_hi = check_range("rate_range", o.rate_range, MIN_RATE, MAX_RATE)
    if not (rate_lo.is_integer() and rate_hi.is_integer()):
        raise ValueError(f"rate_range must be whole words per minute, got {o.rate_range!r}")
    vtl = check_range("vtl_range", o.vtl_range, 0.5, 2.0)
    weights = check_engines(ENGINE_WEIGHTS if o.engines is None else o.engines)
    if o.unseen_engine_speakers < 0:
        raise ValueError(f"unseen_engine_speakers must be >= 0, got {o.unseen_engine_speakers}")
    held_engines = _held_out_engines(o.heldout_engine_val, o.heldout_engine_test)
    held_out = list(held_engines.values()) if o.unseen_engine_speakers else []
    pools = {e: seen_voices(e, held_out) for e in weights if weights[e] > 0}
    empty = [e for e, voices in pools.items() if not voices]
    if empty:
        raise ValueError(f"engine(s) {empty} have no voice left for seen speakers once the unseen-engine parts "
                         f"({o.heldout_engine_val!r}, {o.heldout_engine_test!r}) are held out; give them weight 0")
    n_val, n_test = _split_counts(o.speakers, o.val_fraction, o.test_fraction)
    heldout = heldout_voices(o.seed, o.heldout_val_voices, o.heldout_test_voices)
    for voices, count, option, fraction in (
            (heldout[0], n_val, "heldout_val_voices", "val_fraction"),
            (heldout[1], n_test, "heldout_test_voices", "test_fraction")):
        if voices and count == 0:
            raise ValueError(f"{option} {list(voices)} need speakers of their split, but {fraction} "
                             f"is 0; set {option}=0 too")
    return _Plan(o.seed, o.speakers, o.unseen_engine_speakers, (int(rate_lo), int(rate_hi)), vtl,
                 o.word_duration, weights, held_engines, pools, n_val, n_test, heldout)


def _held_out_engines(val_spec: str, test_spec: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """split -> (engine, voices) of its unseen-engine part, less EXCLUDED_VOICES."""
    held_engines = {split: (engine, tuple(v for v in voices if (engine, v) not in EXCLUDED_VOICES))
                    for split, (engine, voices) in (("validation", parse_family(val_spec, VOICES)),
                                                    ("testing", parse_family(test_spec, VOICES)))}
    if set(held_engines["validation"][1]) & set(held_engines["testing"][1]) \
            and held_engines["validation"][0] == held_engines["testing"][0]:
        raise ValueError(f"heldout_engine_val {val_spec!r} and heldout_engine_test "
                         f"{test_spec!r} share voices: the two unseen-engine parts must differ")
    return held_engines


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


def _assign_splits(plan: _Plan, ids: Sequence[str]) -> _Roster:
    """The seen speakers' splits, by id order, and which of them speak held-out accents."""
    n, n_val, n_test = plan.n, plan.n_val, plan.n_test
    by_id = sorted(range(n), key=lambda i: ids[i])
    val_idx, test_idx = by_id[:n_val], by_id[n_val:n_val + n_test]
    split = {i: "train" for i in range(n)}
    split.update({i: "validation" for i in val_idx})
    split.update({i: "testing" for i in test_idx})
    group = {i: "seen" for i in range(n)}  # "seen": speakers of training voices, in any split
    val_voices, test_voices = plan.heldout
    if val_voices:
        group.update({i: "validation" for i in val_idx[:math.ceil(n_val * UNSEEN_SHARE)]})
    if test_voices:
        group.update({i: "testing" for i in test_idx[:math.ceil(n_test * UNSEEN_SHARE)]})
    return _Roster(split, group)


def _deal_seen(plan: _Plan, roster: _Roster) -> None:
    """Engines, voices and variants of the seen speakers (held-out accents included)."""
    n, seed, split, group = plan.n, plan.seed, roster.split, roster.group
    # training speakers first, so that a seen validation / test voice is one training has
    ordered = sorted(range(n), key=lambda i: (split[i] != "train", i))
    roster.engine.update({i: "espeak" for i in range(n)})
    roster.engine.update(deal_engines([i for i in ordered if group[i] == "seen"], plan.weights))
    val_voices, test_voices = plan.heldout
    group_voices = {"seen": tuple(v for v in VOICES if v not in val_voices + test_voices),
                    "validation": val_voices, "testing": test_voices}
    for name, voices in group_voices.items():
        members = [i for i in ordered if group[i] == name and roster.engine[i] == "espeak"]
        if not members:
            continue
        roster.voice.update(deal_espeak(seed, name, voices, members, [split[i] == "train" for i in members]))
    for engine in plan.pools:
        if engine != "espeak":
            members = [i for i in ordered if group[i] == "seen" and roster.engine[i] == engine]
            roster.voice.update(deal_voices(seed, f"{engine} seen", plan.pools[engine], members))


def _deal_unseen_engines(plan: _Plan, roster: _Roster) -> None:
    """The unseen-engine parts' speakers: indices n.. (validation), then n + m.. (test)."""
    n, m = plan.n, plan.m
    for k, part_split in enumerate(("validation", "testing")):
        members = list(range(n + k * m, n + (k + 1) * m))
        engine, voices = plan.held_engines[part_split]
        roster.split.update({i: part_split for i in members})
        roster.engine.update({i: engine for i in members})
        if engine == "espeak":
            roster.voice.update(deal_espeak(plan.seed, f"unseen engine {part_split}", voices, members, [False] * m))
        else:
            roster.voice.update(deal_voices(plan.seed, f"{engine} {part_split}", list(voices), members))


def _vtl_on_grid(factor: float) -> float:
    return round(round(ESPEAK_RATE * factor / VTL_GRID_HZ) * VTL_GRID_HZ / ESPEAK_RATE, 6)


def _draw_speaker(plan: _Plan, roster: _Roster, speaker_id: str, i: int) -> Speaker:
    """Speaker i: its pitch, rate, vocal-tract factor and tempo come from its own stream."""
    rng = rng_for(plan.seed, "speaker", i)
    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    rate = int(rng.integers(plan.rate[0], plan.rate[1] + 1))
    vtl = _vtl_on_grid(rng.uniform(*plan.vtl))
    engine, tempo = roster.engine[i], 1.0
    if engine != "espeak":  # drawn after the espeak draws: an espeak speaker's stream is unchanged
        tempo = round(float(rng.uniform(*TEMPO_RANGE[engine])), 4)
        pitch = int(round(100 * rng.uniform(*PICO_PITCH_RANGE))) if engine in PITCHED_ENGINES else 0
        rate = 0
    if plan.word_duration != 1.0:  # after every draw: the seeded streams are those of the default corpus
        rate, tempo = ((min(MAX_RATE, round(rate / plan.word_duration)), tempo) if engine == "espeak"
                       else (rate, round(tempo * plan.word_duration, 4)))
    return Speaker(i, speaker_id, *roster.voice[i], pitch, rate, vtl, roster.split[i],
                   roster.group.get(i, "seen") != "seen", engine, tempo, i >= plan.n)
