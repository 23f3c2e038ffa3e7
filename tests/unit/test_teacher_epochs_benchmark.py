"""benchmarks/teacher_epochs.py's mean of saved epochs: the weights ``train.keep: average`` keeps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from distill.core.checkpoint import ModelSpec, load_model_dir, save_model_dir
from distill.core.features import FeatureConfig
from distill.core.models import build_model

spec = importlib.util.spec_from_file_location("teacher_epochs",
                                              Path(__file__).resolve().parents[2] / "benchmarks" / "teacher_epochs.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_the_mean_of_saved_epochs_is_what_an_averaged_model_keeps(tmp_path):
    labels = [f"w{i}" for i in range(4)]
    model_spec = ModelSpec("res8_narrow", {}, labels, 500, FeatureConfig().model_dump())
    net = build_model("res8_narrow", len(labels))
    averaged = AveragedModel(net, use_buffers=True)  # as core/fit.py keeps the last epochs
    dirs = []
    for epoch in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
            for name, b in net.named_buffers():
                if b.is_floating_point():
                    b.add_(torch.rand_like(b))  # batch-norm statistics move too, and are averaged
        averaged.update_parameters(net)
        dirs.append(save_model_dir(tmp_path / f"epoch-{epoch:04d}", net, model_spec))
    mean, _ = load_model_dir(bench.mean_weights(dirs, tmp_path / "mean"))
    kept = averaged.module.state_dict()
    for key, value in mean.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, kept[key], atol=1e-5), key
    last = torch.load(dirs[-1] / "model.pt", weights_only=True)
    assert not torch.allclose(mean.state_dict()["net.output.weight"], last["net.output.weight"])
