"""Keyword-spotting figures: events, false accepts per hour, recall at a false-alarm budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.core.checkpoint import ModelSpec
from distill.core.detection import count_events, false_alarm_metrics, keyword_spotting_metrics
from distill.core.protocols import protocol_starts, window_posteriors


def test_events_are_runs_of_windows_above_the_threshold():
    scores = np.array([0.1, 0.9, 0.95, 0.2, 0.8, 0.1, 0.7, 0.75])
    assert count_events(scores, np.array([0.0, 0.5, 0.78, 0.92, 0.99])).tolist() == [1, 3, 2, 1, 0]
    thresholds = np.linspace(0, 1, 50)
    assert count_events(scores, thresholds, chunk=7).tolist() == count_events(scores, thresholds).tolist()
    # raising the threshold can split a run: the count is not monotone
    assert count_events(np.array([0.9, 0.6, 0.9]), np.array([0.5, 0.7])).tolist() == [1, 2]


def test_false_alarm_metrics_on_a_stream_with_a_known_answer():
    # half an hour of negative audio: keyword scores with three peaks above 0.5
    neg = np.array([0.1, 0.6, 0.65, 0.1, 0.2, 0.85, 0.1, 0.3, 0.55, 0.1])
    pos = np.array([0.99, 0.95, 0.9, 0.88, 0.8, 0.75, 0.7, 0.6, 0.52, 0.3])  # ten keyword clips
    m = false_alarm_metrics(neg, 1800.0, pos)
    # 90 % recall keeps 9 of 10 clips: threshold 0.52; the peaks 0.6-0.65, 0.85, 0.55 fire: 3 per ½ h
    assert m["threshold_at_recall"] == pytest.approx(0.52)
    assert m["fa_per_hour_at_recall"] == pytest.approx(6.0)
    # ≤ 1 false accept per hour on ½ h allows none: the threshold must sit just above 0.85
    assert 0.85 < m["threshold_at_fa_budget"] < 0.8500001
    assert m["recall_at_fa_budget"] == pytest.approx(0.4)  # 0.99, 0.95, 0.9, 0.88
    # two hours of the same audio allow two false accepts per hour … but not the split ones
    m = false_alarm_metrics(np.tile(neg, 4), 7200.0, pos)
    assert m["fa_per_hour_at_recall"] == pytest.approx(6.0) and m["recall_at_fa_budget"] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        false_alarm_metrics(neg, 0.0, pos)


def test_keyword_spotting_metrics_score_windows_of_the_negative_stream():
    class Loudness(torch.nn.Module):  # class 0 = _silence_, 1 = _unknown_, 2 = yes: "yes" when loud
        def forward(self, x):
            level = x.float().abs().mean(dim=1) / 1000
            return torch.stack([torch.zeros_like(level), torch.full_like(level, 0.5), level * 4 - 2], dim=1)

    sr, n = 1000, 1000
    waves = np.zeros((4, n), np.int16)
    waves[2, 100:200] = 3000  # a quiet keyword clip (its best window scores 0.36)
    waves[3, 600:900] = 3000  # a loud one (0.99)
    waves[1, 400:550] = 3000  # a blip in the unknown clip (0.65): one false accept at 90 % recall
    labels = np.array([0, 1, 2, 2])
    spec = ModelSpec(model="loudness", options={}, labels=["_silence_", "_unknown_", "yes"], input_ms=500,
                     features={"sample_rate": sr})
    m = keyword_spotting_metrics(Loudness(), spec, waves, labels, 100)
    assert m["negative_hours"] == pytest.approx(2 / 3600) and m["keyword_clips"] == 2
    assert m["fa_per_hour_at_recall"] == pytest.approx(1 / (2 / 3600))
    assert m["recall_at_fa_budget"] == pytest.approx(0.5)  # no false accept allowed: only the loud keyword
    # the evaluation hands over the stream protocol's posteriors instead of computing them twice
    post = window_posteriors(Loudness(), waves, 500, protocol_starts(waves, 500, "stream", 100))
    assert keyword_spotting_metrics(Loudness(), spec, waves, labels, 100, stream_posteriors=post) == m
    assert keyword_spotting_metrics(Loudness(), spec, waves[2:], labels[2:], 100) is None


def test_operating_points_follow_the_false_alarm_envelope_and_recall():
    from distill.core.detection import operating_points, threshold_for

    # one hour of negative windows: runs at 0.9 (once), 0.6 (twice, split by a dip), 0.3 (three times)
    neg = np.array([0.9, 0.1, 0.6, 0.5, 0.6, 0.1, 0.3, 0.1, 0.3, 0.1, 0.3])
    pos = np.array([0.95, 0.7, 0.4, 0.2])
    points = operating_points(neg, 3600.0, pos)
    assert [p["threshold"] for p in points] == sorted(p["threshold"] for p in points)
    assert all(a["fa_per_hour"] > b["fa_per_hour"] for a, b in zip(points, points[1:]))  # each point a step down
    fa = {round(p["threshold"], 6): (p["fa_per_hour"], p["recall"]) for p in points}
    # above 0.9 nothing fires, above 0.6 the 0.9 alone; above 0.5 the two 0.6 windows fire apart (3
    # runs), above 0.3 they merge into one (2 runs): the envelope keeps 3 there, the most any
    # higher threshold gives, so 0.3 is the lowest threshold at 3 per hour; above 0.1, 5
    assert sorted(fa) == [0.0, round(np.nextafter(0.3, 1), 6), round(np.nextafter(0.6, 1), 6),
                          round(np.nextafter(0.9, 1), 6)]
    assert fa[round(np.nextafter(0.9, 1), 6)] == (0.0, 0.25) and fa[round(np.nextafter(0.6, 1), 6)] == (1.0, 0.5)
    assert fa[round(np.nextafter(0.3, 1), 6)] == (3.0, 0.75) and fa[0.0] == (5.0, 1.0)
    assert threshold_for(points, 0.0)["fa_per_hour"] == 0.0 and threshold_for(points, 0.0)["recall"] == 0.25
    assert threshold_for(points, 3.0)["threshold"] == pytest.approx(np.nextafter(0.3, 1))
    assert threshold_for(points, 100.0)["threshold"] == 0.0 and threshold_for(points, 100.0)["recall"] == 1.0
    assert len(operating_points(np.random.default_rng(0).random(5000), 3600.0, pos, max_points=20)) <= 20
