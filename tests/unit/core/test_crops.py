"""Crops: seeded random offsets, sliding windows, padding, cutting a batch of clips."""

from __future__ import annotations

import numpy as np
import pytest

from distill.core.crops import crop_batch, cut_crops, pad_to, sample_crop_offsets, sliding_crop_offsets


def test_crops_are_seeded_per_clip_and_length():
    a = sample_crop_offsets("yes/a_nohash_0.wav", 16000, 8000, 4, seed=7)
    assert np.array_equal(a, sample_crop_offsets("yes/a_nohash_0.wav", 16000, 8000, 4, seed=7))
    assert not np.array_equal(a, sample_crop_offsets("yes/a_nohash_0.wav", 16000, 8000, 4, seed=8))
    assert not np.array_equal(a, sample_crop_offsets("yes/b_nohash_0.wav", 16000, 8000, 4, seed=7))
    assert not np.array_equal(a, sample_crop_offsets("yes/a_nohash_0.wav", 16000, 9600, 4, seed=7))
    many = np.concatenate([sample_crop_offsets(f"c{i}", 16000, 8000, 8, seed=0) for i in range(200)])
    assert many.min() >= 0 and many.max() <= 8000
    assert many.min() < 400 and many.max() > 7600  # uniform over every position that fits
    assert (sample_crop_offsets("x", 16000, 16000, 3, seed=0) == 0).all()


def test_crop_errors_and_cutting():
    with pytest.raises(ValueError, match="does not fit"):
        sample_crop_offsets("x", 8000, 16000, 1, seed=0)
    with pytest.raises(ValueError, match="≥ 1"):
        sample_crop_offsets("x", 16000, 8000, 0, seed=0)
    waves = np.arange(20).reshape(2, 10)
    assert cut_crops(waves, np.array([1, 6]), 3).tolist() == [[1, 2, 3], [16, 17, 18]]
    assert cut_crops(waves, np.array([0, 5, 7]), 2, rows=np.array([1, 1, 0])).tolist() == [[10, 11], [15, 16], [7, 8]]


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
