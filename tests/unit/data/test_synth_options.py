"""distill.corpus's speakers, held-out voices and option checks (no audio is rendered,
except by one tiny corpus through the `pld data synth` command line)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from distill.cli import build_parser, main
from distill.corpus import layout, options, voices
from distill.corpus.espeak import MAX_RATE
from distill.corpus.options import CorpusOptions
from distill.corpus.speakers import UNSEEN_SHARE, Speaker, make_speakers
from distill.corpus.voices import heldout_voices
from distill.corpus.writer import synthesize_corpus

SEED = 7
ESPEAK = {"espeak": 1}


def _speakers(seed: int, n: int, **opts: object) -> list[Speaker]:
    """make_speakers for n seen speakers and, unless asked, no unseen-engine speakers."""
    return make_speakers(CorpusOptions(seed=seed, speakers=n, **{"unseen_engine_speakers": 0, **opts}))


def test_speakers_stable_for_seed() -> None:
    few, many = _speakers(SEED, 3, engines=ESPEAK), _speakers(SEED, 8, engines=ESPEAK)
    # id, pitch, rate and vocal-tract factor of speaker i depend only on (seed, i)
    assert [(s.id, s.pitch, s.rate, s.vtl) for s in few] == [(s.id, s.pitch, s.rate, s.vtl) for s in many[:3]]
    assert _speakers(SEED, 8, engines=ESPEAK) == many
    assert [s.id for s in _speakers(SEED + 1, 3, engines=ESPEAK)] != [s.id for s in few]
    with pytest.raises(ValueError, match="at least 3 speakers"):
        _speakers(SEED, 2)  # no room for train


def test_speaker_population_and_voice_disjoint_splits() -> None:
    speakers = _speakers(0, 150, engines=ESPEAK)
    val_voices, test_voices = heldout_voices(0)
    assert len(val_voices) == 1 and len(test_voices) == 2
    held = {*val_voices, *test_voices}
    assert held <= set(voices.HELDOUT_CANDIDATES)  # en and en-us always stay in training
    by_split = {s: [p for p in speakers if p.split == s] for s in layout.SPLITS}
    assert [len(by_split[s]) for s in layout.SPLITS] == [120, 15, 15]
    train_voices = Counter(p.voice for p in by_split["train"])
    assert set(train_voices) == set(voices.VOICES) - held  # every training voice, none held out
    assert max(train_voices.values()) - min(train_voices.values()) <= 1  # dealt round-robin
    for split, held_voices in (("validation", val_voices), ("testing", test_voices)):
        unseen = [p for p in by_split[split] if p.unseen_voice]
        assert len(unseen) == math.ceil(15 * UNSEEN_SHARE)
        assert {p.voice for p in unseen} == set(held_voices)
        assert {p.voice for p in by_split[split] if not p.unseen_voice} <= set(train_voices)
    assert not [p for p in by_split["train"] if p.unseen_voice]
    assert len({(p.voice, p.variant) for p in speakers}) == 150  # all differ in accent or timbre
    assert all(lo <= p.rate <= hi for p in speakers for lo, hi in [options.RATE_RANGE])
    vtl = [p.vtl for p in speakers]
    assert 0.9 - 0.002 <= min(vtl) < 0.95 and 1.05 < max(vtl) <= 1.1 + 0.002
    assert all(round(22050 * v) % 50 == 0 for v in vtl)  # on the cheap-resampling grid


def test_heldout_voice_choice() -> None:
    assert heldout_voices(0) == heldout_voices(0) and heldout_voices(0) != heldout_voices(5)
    assert heldout_voices(0, 0, 0) == ((), ())
    assert heldout_voices(0, ["en-029"], "en-us-nyc, en") == (("en-029",), ("en-us-nyc", "en"))
    for seed in range(10):  # a count never draws a voice named for the other split
        val, test = heldout_voices(seed, 2, ["en-029"])
        assert len(val) == 2 and "en-029" not in val and test == ("en-029",)
    with pytest.raises(ValueError, match="heldout_val_voices: unknown voice"):
        heldout_voices(0, ["en-xx"], 0)
    with pytest.raises(ValueError, match="share voice"):
        heldout_voices(0, ["en-029"], ["en-029"])
    with pytest.raises(ValueError, match="names a voice twice"):
        heldout_voices(0, 0, ["en-029", "en-029"])
    with pytest.raises(ValueError, match="ask for 7 voice"):
        heldout_voices(0, 3, 4)
    with pytest.raises(ValueError, match="heldout_test_voices must be a count >= 0"):
        heldout_voices(0, 1, -1)
    with pytest.raises(ValueError, match="leave no voice for training"):
        heldout_voices(0, list(voices.VOICES[:4]), list(voices.VOICES[4:]))


@pytest.mark.parametrize("bad, message", [
    (dict(placement="middle"), "placement must be one of"),
    (dict(rate_range=(60, 100)), "rate_range must satisfy 80"),
    (dict(rate_range=(100.5, 120)), "rate_range must be whole"),
    (dict(rate_range=(100,)), "rate_range must be a pair"),
    (dict(vtl_range=(1.2, 1.0)), "vtl_range must satisfy"),
    (dict(pause_ms=(-1, 5)), "pause_ms must satisfy"),
    (dict(center_jitter_ms=600), "center_jitter_ms must be within"),
    (dict(val_fraction=0), "heldout_val_voices .* val_fraction is 0"),
    (dict(heldout_test_voices=["en-029", "nope"]), "heldout_test_voices: unknown voice"),
    (dict(speakers=2), "use at least 3 speakers"),
])
def test_bad_options_fail_before_writing(tmp_path: Path, bad: dict, message: str) -> None:
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=message):
        synthesize_corpus(out, CorpusOptions(**{"speakers": 4, "unseen_engine_speakers": 0, **bad}), progress=False)
    assert not out.exists()


def test_cli_flags_reach_the_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["data", "synth", "--out", str(out), "--speakers", "3", "--unknown-words", "1",
                 "--workers", "1", "--seed", "2", "--placement", "center", "--center-jitter-ms", "20",
                 "--rate-range", "150", "160", "--vtl-range", "1", "1", "--pause-ms", "0", "100",
                 "--heldout-val-voices", "en-029", "--heldout-test-voices", "0", "--engines", "espeak",
                 "--unseen-engine-speakers", "0"]) == 0
    meta = json.loads((out / "synth.json").read_text())
    p = meta["params"]
    assert (p["placement"], p["center_jitter_ms"], p["rate_range"], p["vtl_range"], p["pause_ms"]) == (
        "center", 20.0, [150, 160], [1.0, 1.0], [0.0, 100.0])
    assert meta["heldout_voices"] == {"validation": ["en-029"], "testing": []}
    assert (out / "validation_unseen_voice_list.txt").read_text().count("\n") == 11
    assert (out / "testing_unseen_voice_list.txt").read_text() == ""
    assert all(s["vtl"] == 1.0 for s in meta["speakers"])
    assert "word " in capsys.readouterr().err  # the one-line summary
    assert main(["data", "synth", "--out", str(tmp_path / "bad"), "--heldout-test-voices", "9"]) == 2
    assert "heldout_val_voices + heldout_test_voices ask for 10" in capsys.readouterr().err


def test_cli_help_states_the_module_defaults() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["data"]
    synth_parser = next(a for a in sub._actions if a.dest == "data_command").choices["synth"]
    helps = {a.dest: a.help for a in synth_parser._actions}
    assert f"default {options.RATE_RANGE[0]} {options.RATE_RANGE[1]}" in helps["rate_range"]
    assert f"default {options.VTL_RANGE[0]:g} {options.VTL_RANGE[1]:g}" in helps["vtl_range"]
    assert f"default {options.PLACEMENT}" in helps["placement"]
    assert f"default {options.CENTER_JITTER_MS:g}" in helps["center_jitter_ms"]
    assert f"default {options.PAUSE_MS[0]:g} {options.PAUSE_MS[1]:g}" in helps["pause_ms"]
    assert f"default {options.HELDOUT_VAL_VOICES}" in helps["heldout_val_voices"]
    assert f"default {options.HELDOUT_TEST_VOICES}" in helps["heldout_test_voices"]


def test_word_duration_scales_every_engine_and_leaves_the_rest_of_the_speaker() -> None:
    engines = {"espeak": 1, "festival": 1, "pico": 1}
    base = _speakers(SEED, 12, engines=engines, unseen_engine_speakers=0)
    short = _speakers(SEED, 12, engines=engines, unseen_engine_speakers=0, word_duration=0.6)
    assert {s.engine for s in base} == set(engines)
    for a, b in zip(base, short):
        assert (a.id, a.voice, a.split, a.pitch, a.vtl) == (b.id, b.voice, b.split, b.pitch, b.vtl)
        if a.engine == "espeak":
            assert b.rate == min(MAX_RATE, round(a.rate / 0.6)) and b.tempo == a.tempo == 1.0
        else:
            assert b.tempo == pytest.approx(a.tempo * 0.6, abs=1e-4) and b.rate == a.rate == 0
    with pytest.raises(ValueError, match="word_duration must be within"):
        _speakers(SEED, 12, word_duration=3.0)


def test_short_words_are_short(tmp_path: Path) -> None:
    """Measured on rendered audio: the median word of a --word-duration 0.6 corpus is shorter."""
    medians = {}
    for factor in (1.0, 0.6):
        meta = synthesize_corpus(tmp_path / str(factor),
                                 CorpusOptions(seed=SEED, speakers=3, unknown_words=("bed",),
                                               engines={"espeak": 1, "festival": 1}, unseen_engine_speakers=0,
                                               word_duration=factor), workers=1, progress=False)
        medians[factor] = meta["stats"]["word_ms"]["median"]
        assert meta["params"]["word_duration"] == factor
    assert medians[0.6] < 0.8 * medians[1.0], medians
