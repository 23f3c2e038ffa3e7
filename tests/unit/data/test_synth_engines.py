"""The corpus's engines (distill.corpus.engines, distill.corpus.festival) and its unseen parts: each
engine's binding on a word, the engine column of the manifest, disjoint splits, and the
unseen-engine parts as prepared test sets."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from distill.corpus import festival, layout, mbrola, options, rhvoice, voices
from distill.corpus.engines import ENGINES, parse_family, speak_batch
from distill.corpus.options import CorpusOptions
from distill.corpus.sound import speech_bounds
from distill.corpus.speakers import make_speakers
from distill.corpus.writer import synthesize_corpus
from distill.data.base import build_source_index, parse_dataset_options
from distill.names import KEYWORDS

# Two speakers per unseen-engine part; 8 seen speakers: 4 train, 2 validation, 2 test.
PARAMS = dict(seed=11, speakers=8, unknown_words=("bed", "marvin"), noise_seconds=3.0, val_fraction=0.25,
              test_fraction=0.25, unseen_engine_speakers=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("engines") / "corpus"
    meta = synthesize_corpus(out, CorpusOptions(**PARAMS), workers=2, progress=False)
    with open(out / layout.MANIFEST, newline="") as fh:
        return out, meta, list(csv.DictReader(fh))


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.wav"))}


@pytest.mark.parametrize("engine, voice", [("festival", "ked_diphone"), ("festival", "hy_fi_mv_diphone"),
                                           ("pico", "en-US"), ("pico", "en-GB"), ("hibari", "heart"),
                                           ("mbrola", "us1"), ("mbrola", "de4"), ("mbrola", "fr4"),
                                           ("openjtalk", "mei"), ("rhvoice", "evgeniy-eng"), ("rhvoice", "lyubov")])
def test_each_engine_speaks_a_word(engine: str, voice: str) -> None:
    (x, rate), (slow, slow_rate) = speak_batch(engine, voice, ["yes", "yes"], [1.0, 1.8], pitches=[1.0, 1.0],
                                               seeds=[0, 0])
    assert rate == slow_rate and rate in (16000, 22050, 24000, 32000, 44100, 48000)
    for wave in (x, slow):
        assert wave.dtype == np.float64 and wave.ndim == 1
        assert np.abs(wave).max() < 0.999  # no clipping (pico clips at its default volume)
        start, end = speech_bounds(wave, frame=rate // 200)
        assert 0.15 < (end - start) / rate < 1.6, (engine, voice, (end - start) / rate)
    word, slow_word = (np.diff(speech_bounds(w, frame=rate // 200))[0] for w in (x, slow))
    assert slow_word > 1.3 * word  # tempo 1.8 is slower


def test_engines_are_deterministic() -> None:
    for engine, voice in (("festival", "czech_dita"), ("pico", "en-GB"), ("hibari", "heart"), ("mbrola", "en1"),
                          ("openjtalk", "mei"), ("rhvoice", "lyubov")):
        a = speak_batch(engine, voice, ["stop", "go"], [1.2, 1.5], [1.1, 0.9], [3, 4])
        b = speak_batch(engine, voice, ["stop", "go"], [1.2, 1.5], [1.1, 0.9], [3, 4])
        assert all(np.array_equal(p[0], q[0]) for p, q in zip(a, b)), engine


def test_festival_refuses_held_out_voices_and_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for voice in festival.FORBIDDEN_VOICES:
        with pytest.raises(ValueError, match="reserved for held-out evaluation"):
            festival.check_voices([voice])
        with pytest.raises(ValueError, match="reserved for held-out evaluation"):
            festival.festival_synthesize(voice, ["yes"], [1.0])
    with pytest.raises(ValueError, match="unknown festival voice"):
        festival.check_voices(["nobody_diphone"])
    festival.festival_binary.cache_clear()
    monkeypatch.setattr(festival.shutil, "which", lambda name: None)
    try:
        with pytest.raises(RuntimeError, match="apt-get install festival festvox-"):
            festival.check_voices(["ked_diphone"])
    finally:
        festival.festival_binary.cache_clear()


def test_every_mbrola_voice_offered_says_every_word() -> None:
    """No voice a speaker may get lacks a diphone that a corpus word needs (mbrola would stop:
    why us3, de1 and sw2 are in EXCLUDED_VOICES), and each word is a word's length, unclipped."""
    from concurrent.futures import ThreadPoolExecutor
    words = list(KEYWORDS) + list(layout.UNKNOWN_WORDS)
    offered = [v for v in mbrola.MBROLA_VOICES if ("mbrola", v) not in voices.EXCLUDED_VOICES]
    with ThreadPoolExecutor(4) as pool:  # two processes per utterance: run voices side by side
        spoken = pool.map(lambda v: mbrola.mbrola_synthesize(v, words, [2.3] * len(words), [1.0] * len(words)),
                          offered)
        for voice, clips in zip(offered, spoken):
            for word, (x, rate) in zip(words, clips):
                start, end = speech_bounds(x, frame=rate // 200)
                assert 0.15 < (end - start) / rate < 1.2 and np.abs(x).max() < 0.999, (voice, word)


def test_openjtalk_and_rhvoice_say_every_word_and_pitch_moves_the_voice() -> None:
    words = list(KEYWORDS) + list(layout.UNKNOWN_WORDS)
    for engine, voice in (("openjtalk", "mei"), ("rhvoice", "evgeniy-eng")):
        slowest = voices.TEMPO_RANGE[engine][0]  # the corpus's fastest speaker
        spoken = speak_batch(engine, voice, words, [slowest] * len(words), pitches=[1.0] * len(words))
        for word, (x, rate) in zip(words, spoken):
            start, end = speech_bounds(x, frame=rate // 200)
            assert 0.12 < (end - start) / rate < 1.6, (engine, word, (end - start) / rate)  # openjtalk's "on": 0.14
        (low, rate), (high, _) = speak_batch(engine, voice, ["five", "five"], [1.0, 1.0], pitches=[0.8, 1.25])
        assert _pitch_hz(high, rate) > 1.25 * _pitch_hz(low, rate), engine


def _pitch_hz(x: np.ndarray, rate: int) -> float:
    """The strongest autocorrelation lag between 60 and 500 Hz over the word's voiced middle."""
    start, end = speech_bounds(x, frame=rate // 200)
    mid = x[start + (end - start) // 4: end - (end - start) // 4]
    ac = np.correlate(mid, mid, "full")[len(mid) - 1:]
    lo, hi = rate // 500, rate // 60
    return rate / (lo + int(np.argmax(ac[lo:hi])))


def test_rhvoice_offers_no_arctic_speaker_and_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not set(rhvoice.ARCTIC_VOICES) & set(rhvoice.RHVOICE_VOICES)
    for voice in rhvoice.ARCTIC_VOICES:
        with pytest.raises(ValueError, match="unknown rhvoice voice"):
            rhvoice.rhvoice_synthesize(voice, ["yes"], [1.0], [1.0])
    rhvoice.binary.cache_clear()
    monkeypatch.setattr(rhvoice.shutil, "which", lambda name: None)
    try:
        with pytest.raises(RuntimeError, match="apt-get install rhvoice rhvoice-english"):
            rhvoice.check_voices(["lyubov"])
    finally:
        rhvoice.binary.cache_clear()


def test_mbrola_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown mbrola voice"):
        mbrola.check_voices(["xx9"])
    monkeypatch.setattr(mbrola, "VOICE_DIRS", (Path("/nonexistent"),))
    with pytest.raises(RuntimeError, match=r"mbrola voice\(s\) \['us1'\] are not installed; .*apt-get install "
                       r"espeak-ng mbrola mbrola-us1 .*non-free"):
        mbrola.check_voices(["us1"])
    mbrola.binaries.cache_clear()
    monkeypatch.setattr(mbrola.shutil, "which", lambda name: None if name == "mbrola" else "/usr/bin/" + name)
    try:
        with pytest.raises(RuntimeError, match=r"needs mbrola on PATH; install with `apt-get install espeak-ng mbrola"):
            mbrola.check_voices(["us1"])
    finally:
        mbrola.binaries.cache_clear()


def test_an_mbrola_corpus_records_engine_voice_tempo_and_pitch(tmp_path: Path) -> None:
    params = {**PARAMS, "engines": {"mbrola": 1}, "unseen_engine_speakers": 0, "speakers": 4,
              "val_fraction": 0.25, "test_fraction": 0.25, "heldout_val_voices": 0, "heldout_test_voices": 0}
    synthesize_corpus(tmp_path / "mb", CorpusOptions(**params), workers=1, progress=False)
    with open(tmp_path / "mb" / layout.MANIFEST, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["engine"] for r in rows} == {"mbrola"}
    excluded = {v for e, v in voices.EXCLUDED_VOICES if e == "mbrola"}
    assert {r["voice"] for r in rows} <= set(mbrola.MBROLA_VOICES) - excluded
    lo, hi = voices.TEMPO_RANGE["mbrola"]
    for r in rows:
        assert r["rate"] == "" and lo * 0.9 <= float(r["tempo"]) <= hi * 1.1  # jitter, or re-spoken faster
        assert 100 * voices.PICO_PITCH_RANGE[0] - 1 <= int(r["pitch"]) <= 100 * voices.PICO_PITCH_RANGE[1] + 1


def test_manifest_records_engine_voice_and_part(corpus: tuple[Path, dict, list[dict[str, str]]]) -> None:
    out, meta, rows = corpus
    speakers = {s["id"]: s for s in meta["speakers"]}
    assert {r["engine"] for r in rows} <= set(ENGINES)
    for r in rows:
        spk = speakers[r["speaker"]]
        assert (r["engine"], r["voice"], r["split"]) == (spk["engine"], spk["voice"], spk["split"])
        assert (out / r["path"]).is_file()
        if r["engine"] == "espeak":
            assert r["variant"] and int(r["rate"]) >= 80 and r["tempo"] == ""
        else:
            assert r["variant"] == "" and r["rate"] == "" and float(r["tempo"]) > 0.5
    parts = Counter(r["part"] for r in rows)
    assert set(parts) == set(layout.PARTS)
    # an unseen-engine speaker says the keywords and one other word
    assert parts["unseen_engine"] == 2 * 2 * (len(KEYWORDS) + 1)
    assert meta["stats_per_engine"]  # word-duration statistics per engine and part
    assert all("word_ms" in v for v in meta["stats_per_engine"].values())


def test_splits_are_disjoint(corpus: tuple[Path, dict, list[dict[str, str]]]) -> None:
    out, meta, rows = corpus
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r["speaker"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())  # a speaker is in one split
    train = [r for r in rows if r["split"] == "train"]
    train_voices = {(r["engine"], r["voice"]) for r in train}
    for part in ("unseen_accent", "unseen_engine"):
        held = [r for r in rows if r["part"] == part]
        assert held and not {(r["engine"], r["voice"]) for r in held} & train_voices, part
    engine_parts = {s: {(r["engine"], r["voice"]) for r in rows if r["part"] == "unseen_engine" and r["split"] == s}
                    for s in ("validation", "testing")}
    seen = {(r["engine"], r["voice"]) for r in rows if r["part"] != "unseen_engine"}
    assert not engine_parts["validation"] & engine_parts["testing"]
    assert not (engine_parts["validation"] | engine_parts["testing"]) & seen
    # a held-out engine family: no seen speaker has any voice of it
    for split, spec in (("validation", options.HELDOUT_ENGINE_VAL), ("testing", options.HELDOUT_ENGINE_TEST)):
        engine, family_voices = parse_family(spec)
        assert {e for e, _ in engine_parts[split]} == {engine}
        assert not {(engine, v) for v in family_voices} & seen
    listed = set().union(*((out / name).read_text().split() for name in (layout.VALIDATION_LIST, layout.TESTING_LIST)))
    assert not any(p.startswith("_unseen_engine") for p in listed)


def test_unseen_engine_parts_are_prepared_test_sets(corpus: tuple[Path, dict, list[dict[str, str]]]) -> None:
    out, meta, _ = corpus
    train_index = build_source_index(parse_dataset_options({"name": "speech_commands", "path": str(out)}))
    assert not train_index.clips["path"].str.contains("_unseen_engine").any()  # never trained on
    for split, folder in layout.UNSEEN_ENGINE_DIRS.items():
        index = build_source_index(parse_dataset_options({"name": "speech_commands_test", "path": str(out / folder)}))
        counts = index.clips["label"].value_counts().to_dict()
        assert counts == {**{k: 2 for k in KEYWORDS}, "_unknown_": 2, "_silence_": 2}
        assert meta["unseen_engine"][split]["clips_total"] == len(index.clips) == 24


def test_same_corpus_for_any_worker_count(corpus: tuple[Path, dict, list[dict[str, str]]],
                                          tmp_path: Path) -> None:
    synthesize_corpus(tmp_path / "one", CorpusOptions(**PARAMS), workers=1, progress=False)
    assert _digest(tmp_path / "one") == _digest(corpus[0])


def test_default_population_holds_out_whole_families() -> None:
    speakers = make_speakers(CorpusOptions(seed=0, speakers=300, val_fraction=0.3, test_fraction=0.3,
                                           unseen_engine_speakers=options.UNSEEN_ENGINE_SPEAKERS))
    seen = [s for s in speakers if not s.unseen_engine]
    assert Counter(s.split for s in seen) == {"train": 120, "validation": 90, "testing": 90}
    train = Counter(s.engine for s in seen if s.split == "train")
    total = sum(options.ENGINE_WEIGHTS.values())
    for engine, weight in options.ENGINE_WEIGHTS.items():
        assert abs(train[engine] - 120 * weight / total) <= 1
    for split, spec in (("validation", options.HELDOUT_ENGINE_VAL), ("testing", options.HELDOUT_ENGINE_TEST)):
        part = [s for s in speakers if s.unseen_engine and s.split == split]
        engine, family = parse_family(spec)
        assert len(part) == options.UNSEEN_ENGINE_SPEAKERS
        assert {s.engine for s in part} == {engine} and {s.voice for s in part} <= set(family)
        assert not {(s.engine, s.voice) for s in seen} & {(engine, v) for v in family}
    # >= 400 evaluated clips per part (keywords + 10 % unknown + 10 % silence), and per unseen-accent test part
    assert options.UNSEEN_ENGINE_SPEAKERS * 12 >= 400
    assert sum(s.unseen_voice and s.split == "testing" for s in seen) * 12 >= 400


@pytest.mark.parametrize("bad, message", [
    (dict(engines={"flite": 1}), "engines must give weights"),
    (dict(engines={"espeak": -1, "pico": 1}), "engines must give weights"),
    (dict(heldout_engine_val="festival:klingon"), "has no voice family 'klingon'"),
    (dict(heldout_engine_val="hibari", heldout_engine_test="hibari"), "must differ"),
    (dict(engines={"hibari": 1}), r"engine\(s\) \['hibari'\] have no voice left"),
    (dict(unseen_engine_speakers=-1), "unseen_engine_speakers must be >= 0"),
])
def test_bad_engine_options(tmp_path: Path, bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthesize_corpus(tmp_path / "never", CorpusOptions(**{**PARAMS, **bad}), progress=False)
    assert not (tmp_path / "never").exists()


def test_festival_retries_an_utterance_that_crashed_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[str, ...], tuple[float, ...]]] = []
    crashes = {"batch": 1, "alone": 2}  # the batch crashes, then the word alone twice, then it speaks

    def once(voice: str, texts, stretches):
        calls.append((tuple(texts), tuple(stretches)))
        kind = "batch" if len(texts) > 1 else "alone"
        if crashes[kind]:
            crashes[kind] -= 1
            raise festival._Crashed("signal 11")
        return [(np.full(160, 0.1 * s), 16000) for s in stretches]

    monkeypatch.setattr(festival, "_synthesize_once", once)
    out = festival.festival_synthesize("pc_diphone", ["yes", "no"], [1.5, 2.0])
    assert [len(c[0]) for c in calls] == [2, 1, 1, 1, 1]
    assert calls[3] == (("yes",), (1.5 * festival.ALONE_STRETCH_NUDGES[2],))  # a 2 % tempo nudge on the third try
    assert out[1][0][0] == pytest.approx(0.2)  # "no" spoke at its own stretch first time
    crashes["batch"], crashes["alone"] = 1, 99
    with pytest.raises(RuntimeError, match=r"pc_diphone crashed on 'yes' .*4 times.*--engines"):
        festival.festival_synthesize("pc_diphone", ["yes", "no"], [1.5, 2.0])
