"""Evaluation protocols on planted signals with a known answer."""

import numpy as np
import pytest
import torch

from distill.core.protocols import loudest_window_starts, predict, stream_decision, window_starts

SILENCE = 0


def test_window_starts_end_flush_with_the_clip():
    assert window_starts(16000, 8000, 1600) == [0, 1600, 3200, 4800, 6400, 8000]
    assert window_starts(16000, 9000, 1600) == [0, 1600, 3200, 4800, 6400, 7000]
    assert window_starts(16000, 16000, 1600) == [0]
    with pytest.raises(ValueError):
        window_starts(8000, 16000, 1600)


def test_loudest_window_finds_a_planted_burst():
    waves = np.zeros((3, 16000), np.int16)
    for i, at in enumerate([1000, 7000, 12000]):
        waves[i, at:at + 2000] = 10000
    starts = loudest_window_starts(waves, 2000)
    assert starts.tolist() == [1000, 7000, 12000]


def test_stream_decision_rules():
    # clip 0: every window says silence → silence; clip 1: a keyword wins in one window
    post = torch.tensor([
        [[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]],
        [[0.9, 0.08, 0.02], [0.3, 0.1, 0.6]],
    ])
    assert stream_decision(post, SILENCE).tolist() == [0, 2]
    # the non-silence posterior is taken even where silence is the top class of that window
    post2 = torch.tensor([[[0.6, 0.4, 0.0], [0.2, 0.3, 0.5]]])
    assert stream_decision(post2, SILENCE).tolist() == [2]
    assert stream_decision(post2, None).tolist() == [0]


class LoudnessModel(torch.nn.Module):
    """Class 1 when the input holds the loud burst, else silence — a known-answer model."""

    def forward(self, x):
        loud = (x.float().abs() > 5000).float().mean(dim=1) > 0.05
        return torch.stack([(~loud).float() * 5, loud.float() * 5], dim=1)


def test_protocols_differ_where_the_word_is_off_centre():
    waves = np.zeros((2, 16000), np.int16)
    waves[0, 200:2200] = 8000  # word at the start: the centred 500 ms window misses it
    waves[1, 7000:9000] = 8000  # word in the middle: every protocol sees it
    labels = np.array([1, 1])
    model = LoudnessModel()
    n = 8000
    center = predict(model, waves, n, "center", silence_index=SILENCE)
    window = predict(model, waves, n, "window", silence_index=SILENCE)
    stream = predict(model, waves, n, "stream", silence_index=SILENCE, hop_samples=1600)
    assert center.tolist() == [0, 1]
    assert window.tolist() == [1, 1]
    assert stream.tolist() == [1, 1]
    assert (predict(model, waves, 16000, "center", silence_index=SILENCE) == labels).all()
    with pytest.raises(ValueError, match="unknown protocol"):
        predict(model, waves, n, "bogus")


def test_predict_batches_do_not_change_answers():
    rng = np.random.default_rng(0)
    waves = (rng.standard_normal((7, 16000)) * 1000).astype(np.int16)
    waves[::2, 3000:5000] = 9000
    model = LoudnessModel()
    a = predict(model, waves, 4000, "stream", silence_index=SILENCE, batch_size=3)
    b = predict(model, waves, 4000, "stream", silence_index=SILENCE, batch_size=1000)
    assert a.tolist() == b.tolist() == [1, 0, 1, 0, 1, 0, 1]
