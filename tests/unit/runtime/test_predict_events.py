"""pld predict's events: one detection per run of windows above the threshold, at its peak, and
non-maximum suppression over a keyword's detections (runtime/deployment/predict.py)."""

from __future__ import annotations

import numpy as np

from distill.runtime.deployment.predict import Detection, detect, merge_events

LABELS = ["_silence_", "_unknown_", "yes", "no"]


def test_a_run_of_windows_is_one_detection_at_its_peak():
    scores = np.array([0.1, 0.6, 0.9, 0.7, 0.2, 0.8, 0.1], np.float32)
    classes = np.array([2, 2, 2, 2, 2, 3, 3])
    starts = np.arange(7) * 1600
    found = detect(scores, classes, starts, 0.5, LABELS, 16000, 8000, "f.wav")
    assert [(d.keyword, d.start_ms, d.end_ms, d.score) for d in found] == [("yes", 200, 700, 0.9), ("no", 500, 1000, 0.8)]


def test_merging_keeps_the_strongest_detection_of_a_keyword_within_the_window():
    d = lambda kw, ms, score, file="a.wav": Detection(file, kw, ms, ms + 500, score)  # noqa: E731
    events = [d("yes", 1600, 0.7), d("yes", 2100, 0.9), d("stop", 1100, 0.6),  # one "yes" that dipped; a "stop"
              d("yes", 4000, 0.8),  # the next "yes", 1.9 s later
              d("yes", 2000, 0.95, file="b.wav")]  # another file's
    merged = merge_events(events, 1000)
    assert [(e.file, e.keyword, e.start_ms) for e in merged] == [
        ("a.wav", "stop", 1100), ("a.wav", "yes", 2100), ("a.wav", "yes", 4000), ("b.wav", "yes", 2000)]
    assert merge_events(events, 0) == sorted(events, key=lambda e: (e.file, e.start_ms))  # 0: every crossing
    # a chain of weaker crossings is measured from the kept peak, not from each other
    chain = [d("no", 0, 0.9), d("no", 900, 0.8), d("no", 1800, 0.7)]
    assert [e.start_ms for e in merge_events(chain, 1000)] == [0, 1800]


def test_the_operating_point_is_chosen_by_false_alarms_per_hour():
    import pytest

    from distill.runtime.deployment.predict import operating_point

    points = [{"threshold": 0.1, "fa_per_hour": 400.0, "recall": 0.95}, {"threshold": 0.5, "fa_per_hour": 9.0,
              "recall": 0.7}, {"threshold": 0.8, "fa_per_hour": 0.5, "recall": 0.4}]
    card = {"threshold": 0.1, "operating_points": points, "negative_hours": 0.05}
    threshold, said = operating_point(card, None, None)  # the default: at most 10 per hour
    assert threshold == 0.5 and said == ("threshold 0.5000 (≤ 10 false accepts per hour: 9.0 per hour and recall "
                                         "0.700 measured on the test split in 3.0 min of negatives)")
    assert operating_point(card, None, 1.0)[0] == 0.8 and operating_point(card, None, 1000)[0] == 0.1
    assert operating_point(card, 0.33, None) == (0.33, "threshold 0.3300 (--threshold)")
    old = {"threshold": 0.26}  # a card exported before operating points
    assert operating_point(old, None, None) == (0.26, "threshold 0.2600 (the card's 90 % recall point)")
    with pytest.raises(ValueError, match="has no operating points; export it again"):
        operating_point(old, None, 5.0)


def test_model_that_is_no_model_says_what_model_may_be(tmp_path):
    import pytest

    from distill.runtime.deployment.predict import load_model
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    for model, what in ((notes, "a file"), (tmp_path, "a folder without model.onnx"),
                        ("abc", "no such file, and not a run id")):
        with pytest.raises(ValueError) as exc:
            load_model(str(model))
        assert str(exc.value) == (f"MODEL {str(model)!r} ({what}) is not a model: give a chain or stage run id "
                                  "(32 hex digits), models:/NAME@ALIAS (or /VERSION), or an exported .onnx file "
                                  "or its folder")


def test_no_real_time_factor_when_nothing_was_read(tmp_path, capsys):
    from distill.runtime.deployment.predict import operating_point, predict_files
    card = {"operating_points": [], "threshold": 0.5, "sample_rate": 16000, "input_samples": 8000}
    code = predict_files(None, card, [str(tmp_path / "missing.wav")], operating_point(card, 0.5, None),
                         say=lambda line: None)
    err = capsys.readouterr().err
    assert code == 1 and "could not be read" in err
    assert "inf" not in err and "real-time factor" not in err
