"""The weights-only checkpoint directory: a round trip, and pickled objects refused."""

from __future__ import annotations

import json

import pytest
import torch

from distill.core.checkpoint import load_model_dir, ModelSpec, save_model_dir
from distill.core.features import FeatureConfig


def test_checkpoint_roundtrip_and_refuses_pickled_objects(tmp_path):
    spec = ModelSpec(model="tiny", options={}, labels=["a", "b", "c"], input_ms=500, features={"sample_rate": 16000})
    model = spec.build().eval()
    save_model_dir(tmp_path / "m", model, spec)
    loaded, spec2 = load_model_dir(tmp_path / "m")
    x = torch.randn(2, 8000)
    assert torch.allclose(loaded(x), model(x)) and spec2.labels == ["a", "b", "c"]
    torch.save({"evil": ModelSpec}, tmp_path / "m" / "model.pt")  # a pickled class, not tensors
    with pytest.raises(ValueError, match="refused to load"):
        load_model_dir(tmp_path / "m")


def test_a_pickled_object_checkpoint_is_refused(tmp_path):
    import torch

    from distill.core.checkpoint import ModelSpec, load_model_dir, save_model_dir

    spec = ModelSpec(model="tiny", options={}, labels=["a", "b"], input_ms=500, features={})
    save_model_dir(tmp_path / "m", spec.build(), spec)

    class Payload:  # what an attacker's checkpoint would carry: code run on unpickling
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').close()",))

    torch.save({"weights": Payload()}, tmp_path / "m" / "model.pt")
    with pytest.raises(ValueError, match="refused to load"):
        load_model_dir(tmp_path / "m")
    assert not (tmp_path / "pwned").exists()
    json.loads((tmp_path / "m" / "model.json").read_text())


def test_a_model_spec_knows_its_silence_class():
    spec = ModelSpec(model="tiny", options={}, labels=["_silence_", "_unknown_", "yes"], input_ms=500,
                     features=FeatureConfig().model_dump())
    assert spec.silence_index == 0
    assert ModelSpec(model="tiny", options={}, labels=["yes", "no"], input_ms=500,
                     features=FeatureConfig().model_dump()).silence_index is None
