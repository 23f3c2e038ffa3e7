"""moonshine: the frozen encoder's states on real files (batch-independent, any length), a checkpoint
that is the head alone, a model that copies and pickles, and missing or different files refused clearly."""

from __future__ import annotations

import copy
import importlib.util
import pickle

import numpy as np
import pytest
import torch

from distill.core import moonshine as ms
from distill.core.features import FeatureConfig
from distill.core.models import build_model
from test_speech_embedding import speechlike  # the same signal the other frozen front end is tested on


@pytest.fixture(scope="module")
def spotter():
    torch.manual_seed(0)
    return ms.MoonshineSpotter(12).eval()


def test_states_are_the_encoder_file_under_onnxruntime_and_do_not_depend_on_the_batch(spotter):
    import onnxruntime as ort

    x = speechlike(35, 16000)  # more than one of encode's batches of 32
    session = ort.InferenceSession(str(ms.encoder_file()), providers=["CPUExecutionProvider"])
    ref = np.concatenate([session.run(None, {"input_values": x[i:i + 1]})[0] for i in range(len(x))])
    with torch.no_grad():
        got = spotter.states(torch.from_numpy(x))
    assert got.shape == (35, 40, ms.STATE_DIM)  # a state every 24 ms
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-4 * np.abs(ref).max())
    assert not np.allclose(ref[0], ref[1], atol=1e-2)  # different clips, different states


def test_int16_samples_are_heard_as_float_and_short_inputs_give_one_state(spotter):
    samples = np.round(speechlike(2, 8000, seed=1) * 32767).astype(np.int16)
    with torch.no_grad():
        torch.testing.assert_close(spotter.states(torch.from_numpy(samples)),
                                   spotter.states(torch.from_numpy(samples.astype(np.float32) / 32768)))
        assert spotter.states(torch.zeros(1, 160)).shape == (1, 1, ms.STATE_DIM)
        assert spotter(torch.zeros(3, 160)).shape == (3, 12)


def test_a_training_step_moves_the_head_and_the_checkpoint_is_the_head():
    torch.manual_seed(0)
    model = build_model("moonshine", 12, {}, FeatureConfig()).train()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    assert set(before) == {k for k, _ in model.net.named_parameters()}  # no encoder weight is the model's
    assert sum(v.numel() for v in before.values()) < 300_000
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(speechlike(4, 16000))), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert all(not torch.equal(model.net.state_dict()[k], v) for k, v in before.items() if k.endswith("weight"))


def test_the_model_copies_and_pickles_and_answers_the_same(spotter):
    """Weight averaging deep-copies a model and Ray pickles one: no onnxruntime session inside."""
    x = torch.from_numpy(speechlike(2, 12000, seed=2))
    with torch.no_grad():
        want = spotter(x)
        torch.testing.assert_close(copy.deepcopy(spotter)(x), want)
        torch.testing.assert_close(pickle.loads(pickle.dumps(spotter))(x), want)


def test_it_is_refused_for_export_with_the_reason(tmp_path):
    from distill.core.export import export_onnx

    with pytest.raises(ValueError, match="MoonshineSpotter: not exported: .*onnxruntime"):
        export_onnx(build_model("moonshine", 12), 8000, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_an_ensemble_holds_it_as_a_member():
    torch.manual_seed(0)
    model = build_model("ensemble", 12, {"members": [{"name": "tiny"}, {"name": "moonshine", "lr_scale": 0.1}]},
                        FeatureConfig())
    x = torch.from_numpy(speechlike(3, 16000, seed=3))
    assert model.train()(x).shape == (2, 3, 12)  # each member's logits, for its own loss
    with torch.no_grad():
        assert torch.allclose(model.eval()(x).exp().sum(-1), torch.ones(3))


def test_bad_options_and_missing_or_different_files_are_refused_clearly(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="pad_ms"):
        build_model("moonshine", 12, {"pad_ms": -1})
    with pytest.raises(ValueError, match="bad options"):
        build_model("moonshine", 12, {"colour": "red"})
    other = tmp_path / "moonshine_cpp" / ms.ENCODER
    other.parent.mkdir(parents=True)
    other.write_bytes(b"not the encoder")
    found = type("Spec", (), {"submodule_search_locations": [str(tmp_path / "moonshine_cpp")]})()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: found)
    with pytest.raises(RuntimeError, match="not the encoder this model's heads learn on.*moonshine-cpp==0.1.4"):
        build_model("moonshine", 12)
    other.unlink()
    with pytest.raises(RuntimeError, match="not found: pip install --no-deps moonshine-cpp==0.1.4"):
        build_model("moonshine", 12)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="moonshine-cpp==0.1.4"):
        build_model("moonshine", 12)
