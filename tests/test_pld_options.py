"""PLD's open choices as options (schedule, crop placement, teacher view, soft and mixed labels,
confidence filter), the false-alarm figures, latency, and the label statistics of a distilled
dataset — all without Ray or MLflow."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from distill.config import ConfigError, load_config
from distill.crops import pad_to, sliding_crop_offsets
from distill.detection import count_events, false_alarm_metrics, keyword_spotting_metrics
from distill.labels import keep_confident, student_loss, teacher_labels
from distill.models import build_model, latency_per_decision
from distill.protocols import protocol_starts, window_posteriors
from distill.runtime.relabel import TeacherView, _apply_teacher, crop_batch, label_stats
from distill.stages import plan_chain


# ------------------------------------------------------------------ schedule
def test_schedule_expands_and_is_validated():
    cfg = load_config(None, {"chain.schedule": {"start_ms": 1000, "stop_ms": 500, "step_ms": 250}})
    assert cfg.chain.lengths_ms == [1000, 750, 500] and cfg.chain.schedule is None
    assert [s.name for s in plan_chain(cfg)][:3] == ["teacher", "student_750ms", "student_500ms"]
    assert load_config(None, {"chain.schedule": {"start_ms": 800, "stop_ms": 800},
                              "chain.self_distill": True}).chain.lengths_ms == [800]
    assert load_config(None).chain.lengths_ms == [1000, 900, 800, 700, 600, 500]
    bad = {
        "steps of 150 ms from 900 ms do not reach 500 ms": {"chain.schedule": {"start_ms": 900, "step_ms": 150}},
        "stop_ms (900) must not exceed start_ms (500)": {"chain.schedule": {"start_ms": 500, "stop_ms": 900}},
        "give chain.lengths_ms or chain.schedule, not both": {"chain.schedule": {}, "chain.lengths_ms": [1000]},
        "1200 ms is longer than data.clip_ms": {"chain.schedule": {"start_ms": 1200}},
        "strictly decreasing": {"chain.lengths_ms": [1000, 1000]},
        "greater than 0": {"chain.schedule": {"step_ms": 0}},
    }
    for message, overrides in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, overrides)
    with pytest.raises(ConfigError, match=r"chain\.schedule: Value error, schedule: steps"):
        load_config(None, {"chain.schedule": {"start_ms": 900, "step_ms": 150}})


def test_method_options_have_laptop_defaults_and_reject_nonsense():
    cfg = load_config(None)
    assert (cfg.chain.crop_placement, cfg.chain.teacher_view, cfg.labels.original_weight, cfg.labels.min_confidence) == (
        "random", "native", 0.0, 0.0)
    params = load_config(None, {"chain.teacher_view": "pad", "labels.min_confidence": 0.5}).flat_params()
    assert params["chain.teacher_view"] == "pad" and params["labels.min_confidence"] == "0.5"  # MLflow params
    for overrides, field in [({"chain.crop_placement": "grid"}, "chain.crop_placement"),
                             ({"chain.pad_position": "left"}, "chain.pad_position"),
                             ({"labels.original_weight": 1.5}, "labels.original_weight"),
                             ({"labels.min_confidence": 1.0}, "labels.min_confidence")]:
        with pytest.raises(ConfigError, match=field):
            load_config(None, overrides)


# ------------------------------------------------------------------ crops
def test_sliding_offsets_cover_the_clip_with_the_last_flush():
    assert sliding_crop_offsets(16000, 8000, 1600).tolist() == [0, 1600, 3200, 4800, 6400, 8000]
    assert sliding_crop_offsets(16000, 12000, 4000).tolist() == [0, 4000]
    assert sliding_crop_offsets(16000, 12000, 3000).tolist() == [0, 3000, 4000]  # the last flush with the end
    assert sliding_crop_offsets(16000, 16000, 1600).tolist() == [0]
    with pytest.raises(ValueError, match="does not fit"):
        sliding_crop_offsets(8000, 16000, 1600)


def _clips(n=3, samples=16000):
    rng = np.random.default_rng(0)
    return {"clip_id": np.array([f"c{i}" for i in range(n)], dtype=object),
            "label": np.array(["yes"] * n, dtype=object), "label_index": np.zeros(n, dtype=np.int64),
            "speaker": np.array(["s"] * n, dtype=object),
            "waveform": rng.integers(-3000, 3000, size=(n, samples)).astype(np.int16)}


def test_crop_batch_sliding_gives_every_window_of_every_clip():
    batch = _clips()
    out = crop_batch(batch, crop_samples=8000, k=2, seed=0, stride_samples=4000)
    assert len(out["clip_id"]) == 3 * 3
    assert out["offset"].tolist() == [0, 4000, 8000] * 3 and out["crop_index"].tolist() == [0, 1, 2] * 3
    np.testing.assert_array_equal(out["waveform"][4], batch["waveform"][1, 4000:12000])
    random = crop_batch(batch, crop_samples=8000, k=2, seed=0)
    assert len(random["clip_id"]) == 6  # random placement: k per clip


# ------------------------------------------------------------------ teacher view
def test_pad_to_centres_or_places_each_crop_at_a_seeded_position():
    crops = np.arange(1, 7, dtype=np.int16).reshape(2, 3)
    centred = pad_to(crops, 7, "center", seed=0)
    assert centred.tolist() == [[0, 0, 1, 2, 3, 0, 0], [0, 0, 4, 5, 6, 0, 0]]
    keys = ["a/0", "b/0"]
    a, b = pad_to(crops, 50, "random", 0, keys), pad_to(crops, 50, "random", 0, keys)
    np.testing.assert_array_equal(a, b)  # the same keys and seed: the same positions, however batched
    assert pad_to(crops[1:], 50, "random", 0, keys[1:]).tolist() == a[1:].tolist()
    starts = [int(np.flatnonzero(row)[0]) for row in pad_to(np.ones((40, 3), np.int16), 50, "random", 0,
                                                              [f"k{i}" for i in range(40)])]
    assert len(set(starts)) > 10 and min(starts) >= 0 and max(starts) <= 47
    assert (a.sum(axis=1) == crops.sum(axis=1)).all()
    with pytest.raises(ValueError, match="does not fit"):
        pad_to(crops, 2, "center", 0)


class _Recorder(torch.nn.Module):
    """A fake teacher: records the input length it was shown; class = 1 when the crop's mean is positive."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(x.shape[1])
        m = x.float().mean(dim=1)
        return torch.stack([-m, m, torch.zeros_like(m)], dim=1) * 10


def _crops(values: list[float], samples: int = 8000) -> dict[str, np.ndarray]:
    n = len(values)
    return {"clip_id": np.array([f"c{i}" for i in range(n)], dtype=object), "crop_index": np.zeros(n, np.int32),
            "waveform": np.stack([np.full(samples, v, np.float32) for v in values])}


def test_the_teacher_sees_native_crops_or_crops_padded_to_its_length():
    labels = np.array(["no", "yes", "up"], dtype=object)
    model = _Recorder()
    _apply_teacher(_crops([1.0, -1.0]), model, labels, "cpu", "r", 1.0, teacher_samples=16000)
    _apply_teacher(_crops([1.0, -1.0]), model, labels, "cpu", "r", 1.0, view=TeacherView("pad"), teacher_samples=16000)
    out = _apply_teacher(_crops([1.0, -1.0]), model, labels, "cpu", "r", 1.0,
                         view=TeacherView("pad", "random", seed=3), teacher_samples=16000)
    assert model.seen == [8000, 16000, 16000]
    assert out["waveform"].shape == (2, 8000)  # the dataset keeps the crop; only the teacher's view is padded
    assert out["teacher_label"].tolist() == ["yes", "no"]


def test_confidence_filter_drops_unsure_crops():
    labels = np.array(["no", "yes", "up"], dtype=object)
    # mean 0.5 → logits (-5, 5, 0): confident; mean 0.01 → (-0.1, 0.1, 0): unsure
    out = _apply_teacher(_crops([0.5, 0.01, -0.5]), _Recorder(), labels, "cpu", "r", 1.0,
                         view=TeacherView(min_confidence=0.6), teacher_samples=8000)
    assert out["clip_id"].tolist() == ["c0", "c2"] and out["teacher_label"].tolist() == ["yes", "no"]
    assert all(len(v) == 2 for v in out.values())
    assert keep_confident(np.array([0.2, 0.6, 0.9]), 0.6).tolist() == [False, True, True]
    with pytest.raises(ValueError):
        keep_confident(np.array([0.5]), 1.0)


# ------------------------------------------------------------------ labels and losses
def test_confidence_does_not_depend_on_the_temperature():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.0, 3.0]])
    cold, hot = teacher_labels(logits, 1.0), teacher_labels(logits, 4.0)
    assert torch.equal(cold.label, hot.label) and torch.allclose(cold.confidence, hot.confidence)
    assert (hot.probs.max(dim=1).values < cold.probs.max(dim=1).values).all()  # softer targets


def test_soft_loss_is_temperature_scaled_kl_and_zero_at_the_target():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 4), torch.randn(5, 4)
    t = 3.0
    soft = torch.softmax(teacher / t, dim=-1)
    expected = (soft * (soft.log() - F.log_softmax(student / t, dim=-1))).sum(dim=1).mean() * t * t
    assert torch.allclose(student_loss(student, mode="soft", soft=soft, temperature=t), expected, atol=1e-6)
    assert student_loss(teacher, mode="soft", soft=soft, temperature=t).abs() < 1e-5


def test_mixing_in_the_original_label_weights_the_two_losses():
    torch.manual_seed(1)
    logits, hard, original = torch.randn(6, 4), torch.randint(0, 4, (6,)), torch.randint(0, 4, (6,))
    teacher_loss = F.cross_entropy(logits, hard)
    original_loss = F.cross_entropy(logits, original)
    mixed = student_loss(logits, mode="hard", hard=hard, original=original, original_weight=0.25)
    assert torch.allclose(mixed, 0.75 * teacher_loss + 0.25 * original_loss)
    assert torch.allclose(student_loss(logits, mode="hard", hard=hard, original=original, original_weight=1.0),
                          original_loss)
    soft = torch.softmax(torch.randn(6, 4), dim=-1)
    assert torch.allclose(student_loss(logits, mode="soft", soft=soft, original=original, original_weight=0.5),
                          0.5 * student_loss(logits, mode="soft", soft=soft) + 0.5 * original_loss)
    with pytest.raises(ValueError, match="original label"):
        student_loss(logits, mode="hard", hard=hard, original_weight=0.5)


# ------------------------------------------------------------------ false alarms
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
    m = keyword_spotting_metrics(Loudness(), waves, labels, ["_silence_", "_unknown_", "yes"], 500, 100, sr,
                                 negative=("_silence_", "_unknown_"))
    assert m["negative_hours"] == pytest.approx(2 / 3600) and m["keyword_clips"] == 2
    assert m["fa_per_hour_at_recall"] == pytest.approx(1 / (2 / 3600))
    assert m["recall_at_fa_budget"] == pytest.approx(0.5)  # no false accept allowed: only the loud keyword
    # the evaluation hands over the stream protocol's posteriors instead of computing them twice
    post = window_posteriors(Loudness(), waves, 500, protocol_starts(waves, 500, "stream", 100))
    assert keyword_spotting_metrics(Loudness(), waves, labels, ["_silence_", "_unknown_", "yes"], 500, 100, sr,
                                    negative=("_silence_", "_unknown_"), stream_posteriors=post) == m
    assert keyword_spotting_metrics(Loudness(), waves[2:], labels[2:], ["_silence_", "_unknown_", "yes"], 500, 100, sr,
                                    negative=("_silence_", "_unknown_")) is None


# ------------------------------------------------------------------ what relabeling did; cost per decision
def test_label_stats_count_agreement_and_relabelling_to_silence_and_unknown(tmp_path):
    labels = ["_silence_", "_unknown_", "yes", "no"]
    source = [2, 2, 2, 2, 3, 3, 0, 1]
    teacher = [2, 2, 0, 1, 3, 0, 0, 2]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({"source_label_index": source, "teacher_label_index": teacher}), tmp_path / "data" / "p.parquet")
    stats = label_stats(tmp_path / "data", labels)
    assert stats["agreement"] == pytest.approx(4 / 8)
    assert stats["to_silence"] == pytest.approx(2 / 7)  # of the 7 crops whose clip is not silence
    assert stats["to_unknown"] == pytest.approx(1 / 7)
    assert set(label_stats(tmp_path / "data", ["a", "b", "c", "d"])) == {"agreement"}


def test_latency_per_decision_is_a_median_of_batch_one_runs():
    model = build_model("tiny", 12)
    torch.set_num_threads(2)
    short, long = latency_per_decision(model, 4000, repeats=15), latency_per_decision(model, 16000, repeats=15)
    assert 0 < short < 1 and 0 < long < 1
    assert torch.get_num_threads() == 2 and model.training  # its settings are put back
