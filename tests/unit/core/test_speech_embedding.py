"""speech_embedding: the PyTorch port equals openWakeWord's ONNX files, one pass equals the
sliding windows, the embedding stays frozen while the head trains, and bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.core import speech_embedding as se
from distill.core.features import FeatureConfig
from distill.core.models import build_model


def speechlike(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """Noise under a moving formant-like envelope: something the embedding does not see as silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    tone = np.sin(2 * np.pi * (200 + 300 * rng.random((n, 1))) * t * (1 + 0.3 * t))
    return (0.3 * tone * np.hanning(samples) + 0.02 * rng.standard_normal((n, samples))).astype(np.float32)


@pytest.fixture(scope="module")
def spotter():
    torch.manual_seed(0)
    return se.SpeechEmbeddingSpotter(12).eval()


def test_the_port_equals_the_onnx_files_under_onnxruntime(spotter):
    import onnxruntime as ort

    mel_file, net_file = se.model_files()
    mel, net = (ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]) for f in (mel_file, net_file))
    x = speechlike(1, 12512 + 8 * 160)  # two windows' worth of frames (78 + 8 - 8)
    ref_mel = mel.run(None, {"input": x * 32767.0})[0][0, 0] / 10 + 2  # one clip: its own loudest value
    with torch.no_grad():
        got_mel = spotter.frontend(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(got_mel, ref_mel, atol=2e-4)
    windows = np.stack([ref_mel[s:s + se.WINDOW_FRAMES] for s in (0, 8)])[..., None]
    ref = net.run(None, {"input_1": windows.astype(np.float32)})[0].reshape(2, se.EMBEDDING_DIM)
    with torch.no_grad():
        got = spotter.embedding(torch.from_numpy(got_mel)[None])[0].numpy()
    assert got.shape == (2, se.EMBEDDING_DIM)  # one pass over the frames: a window every 8 frames
    np.testing.assert_allclose(got, ref, atol=2e-3 * np.abs(ref).max())


def test_one_pass_over_a_clip_equals_each_window_alone(spotter):
    with torch.no_grad():
        logmel = spotter.frontend(torch.from_numpy(speechlike(2, 16000, seed=1)))
        whole = spotter.embedding(logmel)
        alone = torch.stack([spotter.embedding(logmel[:, s:s + se.WINDOW_FRAMES])[:, 0]
                             for s in range(0, logmel.shape[1] - se.WINDOW_FRAMES + 1, 8)], 1)
    assert whole.shape == alone.shape and whole.shape[1] >= 3
    torch.testing.assert_close(whole, alone, atol=1e-4, rtol=1e-4)


def test_a_training_step_moves_the_head_and_not_the_embedding():
    torch.manual_seed(0)
    model = build_model("speech_embedding", 12, {}, FeatureConfig()).train()
    frozen = {k: v.clone() for k, v in model.net.named_parameters() if k.startswith(("frontend", "embedding"))}
    frozen |= {k: v.clone() for k, v in model.net.named_buffers()}
    head = {k: v.clone() for k, v in model.net.named_parameters() if not k.startswith(("frontend", "embedding"))}
    assert frozen and head and all(not p.requires_grad for k, p in model.net.named_parameters() if k in frozen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # as the platform builds it
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(speechlike(4, 16000))), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    after = dict(model.net.named_parameters()) | dict(model.net.named_buffers())
    assert all(torch.equal(after[k], v) for k, v in frozen.items())
    assert any(not torch.equal(after[k], v) for k, v in head.items())
    assert not model.net.frontend.training and not model.net.embedding.training and model.net.out.training


def test_under_mixed_precision_the_front_end_stays_fp32(spotter):
    from distill.core.models import autocast

    x = torch.from_numpy(speechlike(2, 16000, seed=2))
    calls = []
    hook = spotter.frontend.register_forward_hook(lambda m, i, out: calls.append(out))
    try:
        with torch.no_grad():
            plain = spotter(x)
            with autocast("cpu", "bf16"):
                mixed = spotter(x)
    finally:
        hook.remove()
    assert calls[1].dtype == torch.float32 and torch.equal(calls[0], calls[1])
    assert torch.isfinite(mixed).all() and torch.allclose(mixed.float(), plain, atol=0.3)


def test_log_mel_augmentations_are_refused_for_a_network_that_reads_the_waveform():
    model = build_model("speech_embedding", 12, {}, FeatureConfig())
    with pytest.raises(ValueError, match="takes the waveform"):
        model(torch.zeros(1, 16000), frequency_warp=torch.ones(1))


def test_short_inputs_are_padded_to_one_window_and_bad_options_refused(spotter):
    with torch.no_grad():
        assert spotter.embed(torch.zeros(1, 160)).shape == (1, 1, se.EMBEDDING_DIM)
    with pytest.raises(ValueError, match="pad_ms"):
        build_model("speech_embedding", 12, {"pad_ms": -1})
    with pytest.raises(ValueError, match="input_gain_db"):
        build_model("speech_embedding", 12, {"input_gain_db": 200})
    with pytest.raises(ValueError, match="bad options"):
        build_model("speech_embedding", 12, {"colour": "red"})


def test_the_input_gain_scales_the_waveform_before_the_front_end(spotter):
    louder = se.SpeechEmbeddingSpotter(12, input_gain_db=20.0).eval()
    x = torch.from_numpy(speechlike(1, 16000, seed=3))
    with torch.no_grad():
        torch.testing.assert_close(louder.frontend(x), spotter.frontend(x * 10), atol=1e-4, rtol=1e-5)
        assert not torch.allclose(louder.frontend(x), spotter.frontend(x))


def test_missing_model_files_say_how_to_install_them(monkeypatch):
    monkeypatch.setattr(se.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="openwakeword==0.5.1"):
        build_model("speech_embedding", 12)
