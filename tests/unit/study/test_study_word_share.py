"""Labels against the share of the word a crop holds (distill/study/word_share.py), on hand-made
crops whose shares are known exactly."""

from __future__ import annotations

import pandas as pd
import pytest

from distill.study.word_share import OUTCOMES, crop_shares, share_table, summary, word_bounds

SR = 16000


def crops(rows):
    return pd.DataFrame(rows, columns=["clip_id", "offset", "length", "source_label", "teacher_label"])


BOUNDS = pd.DataFrame({"clip_id": ["yes/a.wav", "bed/b.wav"], "speech_start_ms": [400.0, 0.0],
                       "speech_end_ms": [800.0, 200.0]}).set_index("clip_id")


def test_shares_of_known_crops() -> None:
    c = crops([("yes/a.wav", 0, 8000, "yes", "yes"),         # 0-500 ms: 100 of the word's 400 ms
               ("yes/a.wav", 4000, 8000, "yes", "yes"),      # 250-750 ms: 350 of 400
               ("yes/a.wav", 6400, 8000, "yes", "yes"),      # 400-900 ms: all of it
               ("yes/a.wav", 12800, 3200, "yes", "yes"),     # 800-1000 ms: none
               ("_silence_/n.wav", 0, 8000, "_silence_", "_silence_")])  # not in the manifest
    share = crop_shares(c, BOUNDS, SR)
    assert share.iloc[:4].tolist() == pytest.approx([0.25, 0.875, 1.0, 0.0])
    assert pd.isna(share.iloc[4])


def test_outcomes_per_bin_and_the_summary() -> None:
    c = crops([("yes/a.wav", 6400, 8000, "yes", "yes"),          # share 1.0: keeps the word
               ("yes/a.wav", 6080, 8000, "yes", "no"),           # 380-880 ms, share 1.0: another word
               ("yes/a.wav", 12800, 3200, "yes", "_silence_"),   # share 0: silence
               ("yes/a.wav", 12800, 3200, "yes", "_unknown_"),   # share 0: unknown
               ("yes/a.wav", 0, 7040, "yes", "yes"),             # 0-440 ms, share 0.1: keeps the word
               ("bed/b.wav", 0, 3200, "_unknown_", "_unknown_"),  # an unknown word, whole: its own label
               ("_silence_/n.wav", 0, 8000, "_silence_", "_silence_")])
    table = share_table(c, BOUNDS, SR)
    assert table["edges"][0] == 0 and table["edges"][-1] == 1
    assert table["word"] == [0, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert table["other"][9] == 1 and table["silence"][0] == 1 and table["unknown"][0] == 1
    assert sum(sum(table[k]) for k in OUTCOMES) == 6  # the silence clip is left out
    s = summary(table)
    assert (s["crops_most"], s["crops_little"]) == (3, 3)
    assert s["most_keep_word"] == pytest.approx(2 / 3)
    assert s["little_to_silence_or_unknown"] == pytest.approx(2 / 3)


def test_a_corpus_without_a_manifest_has_no_bounds(tmp_path) -> None:
    assert word_bounds(tmp_path) is None
    (tmp_path / "synth_manifest.csv").write_text("path,word,speech_start_ms,speech_end_ms\nyes/a.wav,yes,10,20\n")
    assert word_bounds(tmp_path).loc["yes/a.wav"].tolist() == [10, 20]
