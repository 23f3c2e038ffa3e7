"""distill.corpus's placement modes and speaking rates on tiny corpora: uniform with fast
(the old, short) words, center with a small jitter, and the loudest-window cut itself."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from distill.corpus.options import CorpusOptions
from distill.corpus.sound import loudest_window
from distill.corpus.summary import timing_stats
from distill.corpus.writer import synthesize_corpus

ESPEAK = dict(engines={"espeak": 1}, unseen_engine_speakers=0)  # placement is the same for every engine
FAST = CorpusOptions(seed=3, speakers=6, unknown_words=("bed", "marvin"), noise_seconds=3.0, **ESPEAK,
                     placement="uniform", rate_range=(170, 200), heldout_val_voices=0, heldout_test_voices=0)
CENTER = CorpusOptions(seed=4, speakers=4, unknown_words=("sheila",), noise_seconds=3.0, **ESPEAK,
                       placement="center", center_jitter_ms=50, heldout_val_voices=["en-029"],
                       heldout_test_voices="en-us-nyc,en-gb-scotland")


def _manifest(out: Path) -> list[dict[str, str]]:
    with open(out / "synth_manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _column(rows: list[dict[str, str]], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows])


@pytest.fixture(scope="module")
def fast_uniform(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict[str, str]]]:
    out = tmp_path_factory.mktemp("fast") / "corpus"
    meta = synthesize_corpus(out, FAST, workers=1, progress=False)
    return meta, _manifest(out)


@pytest.fixture(scope="module")
def centered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    outs = []
    for workers in (2, 1):
        outs.append(tmp_path_factory.mktemp(f"center{workers}") / "corpus")
        synthesize_corpus(outs[-1], CENTER, workers=workers, progress=False)
    return outs[0], outs[1]


def test_uniform_places_fast_words_anywhere(fast_uniform: tuple[dict, list[dict[str, str]]]) -> None:
    meta, rows = fast_uniform
    start, end = _column(rows, "speech_start_ms"), _column(rows, "speech_end_ms")
    assert (start >= 0).all() and (end <= 1000).all() and (end - start > 100).all()
    assert start.min() < 100 and start.max() > 400  # near both edges of the clip
    assert np.mean(np.abs((start + end) / 2 - 500) < 50) < 0.5  # not centred
    assert (start > 500).sum() >= 3  # a 500 ms crop at the start of the clip misses all of some words
    assert (_column(rows, "speech_cut_ms") == 0).all()  # a uniform word always fits
    stats = meta["stats"]
    assert stats == timing_stats(rows) and stats["share_cut_by_clip_edge"] == 0
    assert stats["word_ms"]["median"] < 450  # fast speech: short words, as before the slow default
    assert meta["heldout_voices"] == {"validation": [], "testing": []}
    assert all(r["unseen_voice"] == "0" for r in rows)


def test_center_is_centred_within_the_jitter(centered: tuple[Path, Path]) -> None:
    rows = _manifest(centered[0])
    start, end = _column(rows, "speech_start_ms"), _column(rows, "speech_end_ms")
    offset = (start + end) / 2 - 500
    clamped = (start == 0) | (end == 1000)  # a long word is moved so that it fits
    assert (np.abs(offset[~clamped]) <= 50 + 0.1).all() and (~clamped).sum() > 0.8 * len(rows)
    assert offset.std() > 10  # the jitter is used
    assert (_column(rows, "speech_cut_ms") == 0).all()
    meta = json.loads((centered[0] / "synth.json").read_text())
    assert (meta["params"]["placement"], meta["params"]["center_jitter_ms"]) == ("center", 50.0)
    assert meta["heldout_voices"] == {"validation": ["en-029"], "testing": ["en-us-nyc", "en-gb-scotland"]}


def test_center_is_deterministic_across_worker_counts(centered: tuple[Path, Path]) -> None:
    out2, out1 = centered
    files = sorted(str(p.relative_to(out2)) for p in out2.rglob("*") if p.is_file() and p.name != "synth.json")
    assert files == sorted(str(p.relative_to(out1)) for p in out1.rglob("*")
                           if p.is_file() and p.name != "synth.json")
    assert [f for f in files if (out2 / f).read_bytes() != (out1 / f).read_bytes()] == []


def test_loudest_window_finds_the_highest_energy_second() -> None:
    rng = np.random.default_rng(0)
    x = 0.01 * rng.standard_normal(30000)
    x[12000:20000] += np.sin(np.arange(8000) * 0.3)  # a 0.5 s burst
    start = loudest_window(x, 16000)
    assert start <= 12000 and start + 16000 >= 20000  # the whole burst is inside
    energy = [np.sum(x[s:s + 16000] ** 2) for s in range(len(x) - 16000 + 1)]
    assert start == int(np.argmax(energy))
    assert loudest_window(np.zeros(20000), 16000) == 0  # a tie: the first window
    with pytest.raises(ValueError, match="no 16000-sample window"):
        loudest_window(np.zeros(100), 16000)
