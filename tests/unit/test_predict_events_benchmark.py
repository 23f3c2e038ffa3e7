"""benchmarks/predict_events.py's bookkeeping: the long recording and where each detection lands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from distill.runtime.deployment.predict import Detection

spec = importlib.util.spec_from_file_location(
    "predict_events", Path(__file__).resolve().parents[2] / "benchmarks" / "predict_events.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
NAMES = ["_silence_", "_unknown_", "yes", "no"]


def test_each_detection_is_counted_where_its_window_is_centred():
    waves = np.ones((5, 16000), np.int16)
    labels = np.array([0, 2, 3, 1, 0])  # silence, yes, no, unknown, silence
    audio, intervals = bench.long_recording(waves, labels, NAMES, seed=0)
    assert len(audio) == 6 * 16000 and [name for *_, name in intervals][::2] == ["_silence_"] * 3
    words = {name: (s * 1000 // 16000, e * 1000 // 16000) for s, e, name in intervals if name != "_silence_"}
    at = lambda name, frac: int(words[name][0] + frac * 1000) - 250  # noqa: E731 (a 500 ms window centred there)
    d = lambda kw, start: Detection("long", kw, start, start + 500, 0.9)  # noqa: E731
    found = [d("yes", at("yes", 0.5)), d("yes", at("yes", 0.8)),  # a hit and a repeat
             d("yes", at("no", 0.5)),  # a substitution
             d("no", at("_unknown_", 0.5)),  # a false alarm on a word
             d("no", words["no"][0] - 600),  # centred in the gap before "no": a false alarm in silence
             d("no", words["no"][0] - 400),  # centred in the gap, its window into "no": early, on its word
             d("yes", words["no"][0] - 400)]  # the same window naming another keyword: a phantom
    t = bench.tally(found, intervals)
    assert (t["hits"], t["repeats"], t["substitutions"], t["fa_speech"], t["fa_silence"], t["misses"]) == (1, 1, 1, 1, 3, 1)
    assert (t["onset_same"], t["onset_other"]) == (1, 1)
    assert t["keyword_clips"] == 2 and np.isclose(t["silence_hours"], 3 / 3600) and np.isclose(t["unknown_hours"], 1 / 3600)
