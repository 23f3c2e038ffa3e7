"""pld export's stream step for a streaming network: written beside the windowed export, checked
hop by hop against the stream in PyTorch on test clips end to end, refused when it disagrees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import distill.runtime.deployment.export as deploy
from distill.core.export import ExportError
from distill.core.features import FeatureConfig
from distill.core.models import build_model


def streaming_network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("res8_narrow_causal", 12, {}, FeatureConfig(normalize="none")).eval()
    with torch.no_grad():
        model.net.norm.running_mean.fill_(-8.0)
        model.net.norm.running_var.fill_(9.0)
    return model


def speech_clips() -> np.ndarray:
    rng = np.random.default_rng(0)
    clips = rng.normal(0, 300, (80, 16000))
    clips[:, 4000:10000] += rng.normal(0, 6000, (80, 6000)) * np.hanning(6000)
    return clips.astype(np.int16)


def test_the_stream_step_is_written_checked_and_timed(tmp_path):
    said = []
    card = deploy.exported_stream(streaming_network(0), speech_clips(), 8000, 1600, tmp_path / deploy.STREAM_FILE,
                                  "student_500ms", said.append)
    assert (tmp_path / deploy.STREAM_FILE).is_file() and card["file"] == deploy.STREAM_FILE
    assert card["equivalence"]["hops"] >= 200 and card["equivalence"]["max_abs_diff"] < 1e-4
    assert card["latency_us"] > 0 and card["state"][0] == "chunk" and len(card["state"]) == 11
    assert "stream step, onnxruntime vs PyTorch" in said[0]


def test_a_stream_step_that_disagrees_is_refused_and_removed(tmp_path, monkeypatch):
    other = streaming_network(1)  # the file holds another network's weights
    real = deploy.export_stream_step
    monkeypatch.setattr(deploy, "export_stream_step", lambda model, n, hop, path: real(other, n, hop, path))
    with pytest.raises(ExportError, match="stream step and CausalStream disagree"):
        deploy.exported_stream(streaming_network(0), speech_clips(), 8000, 1600, tmp_path / deploy.STREAM_FILE,
                               "student_500ms", print)
    assert not (tmp_path / deploy.STREAM_FILE).exists()
    with pytest.raises(ExportError, match="the test split has 10 clips"):
        deploy.exported_stream(streaming_network(0), speech_clips()[:10], 8000, 1600, tmp_path / deploy.STREAM_FILE,
                               "student_500ms", print)
