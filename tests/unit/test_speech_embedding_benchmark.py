"""benchmarks/speech_embedding.py: the frozen speech embedding's shapes on real ONNX files, the
head keeping its best validation epoch, and a part's cache. (Missing model files: tests/unit/core/test_speech_embedding.py.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

spec = importlib.util.spec_from_file_location("speech_embedding",
                                              Path(__file__).resolve().parents[2] / "benchmarks" / "speech_embedding.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_a_clip_becomes_a_sequence_of_96_number_embeddings_that_depends_on_the_sound():
    embed = bench.SpeechEmbedding(threads=1)
    t = np.arange(16000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    noise = 0.3 * np.random.default_rng(0).standard_normal(16000)
    out = embed(np.stack([tone, noise]).astype(np.float32))
    # 1.8 s padded: 177 frames of 10 ms, windows of 76 frames every 8
    assert out.shape == (2, 13, bench.DIM)
    assert np.isfinite(out).all()
    assert np.abs(out[0] - out[1]).max() > 1e-2
    np.testing.assert_allclose(embed(tone[None].astype(np.float32))[0], out[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="not int16"):
        embed((tone[None] * 32767).astype(np.int16))
    louder = bench.SpeechEmbedding(threads=1, gain_db=20.0)(tone[None].astype(np.float32))
    np.testing.assert_allclose(louder, embed((tone[None] * 10).astype(np.float32)), rtol=1e-4, atol=1e-3)


def test_the_head_learns_separable_classes_and_keeps_its_best_validation_epoch(monkeypatch):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, bench.DIM, generator=g) * 3
    y = torch.arange(300) % 3
    x = centres[y][:, None, :] + torch.randn(300, 5, bench.DIM, generator=g)
    val = (x[:60], y[:60])
    seen = []
    real_accuracy = bench.accuracy
    monkeypatch.setattr(bench, "accuracy", lambda p, t: seen.append(real_accuracy(p, t)) or seen[-1])
    head, epoch = bench.train_head(x[60:], y[60:], val, classes=3, seed=0, epochs=4)
    assert epoch == int(np.argmax(seen))  # the first best, on a tie
    assert bench.accuracy(bench.posteriors(head, val[0]), val[1]) == max(seen) > 0.9


def test_a_part_is_embedded_once_and_read_back_from_its_cache(tmp_path):
    import soundfile as sf
    from distill.names import SILENCE, UNKNOWN
    labels = [SILENCE, UNKNOWN, "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
    for label in labels:
        (tmp_path / "part" / label).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("yes/a_nohash_0.wav", "no/b_nohash_0.wav", "no/c_nohash_0.wav"):
        sf.write(tmp_path / "part" / name, (rng.standard_normal(16000) * 1000).astype(np.int16), 16000, subtype="PCM_16")
    calls = []

    def embed(waves):
        calls.append(len(waves))
        assert waves.dtype == np.float32 and np.abs(waves).max() <= 1  # the clips as float, not int16
        return np.repeat(waves[:, :bench.DIM][:, None, :], 2, axis=1)

    spec_ = f"speech_commands_test:{tmp_path / 'part'}"
    first = bench.embedded("part", spec_, "test", tmp_path, embed, labels)
    again = bench.embedded("part", spec_, "test", tmp_path, embed, labels)
    assert calls == [3]
    assert first[0].shape == (3, 2, bench.DIM)
    assert sorted(labels[i] for i in first[1]) == ["no", "no", "yes"]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="not among"):
        bench.embedded("part", spec_, "test", tmp_path, embed, labels[:3])
