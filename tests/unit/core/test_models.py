"""The networks: any input length, the paper's size, MACs, the registry, autocast, latency."""

from __future__ import annotations

import pytest
import torch

from distill.core.features import num_samples
from distill.core.models import build_model, count_macs, latency_per_decision, MODELS


@pytest.mark.parametrize("name", MODELS.names())  # every registered model, plug-ins included
@pytest.mark.parametrize("ms", [100, 500, 750, 1000])
def test_models_accept_any_input_length(name, ms):
    model = build_model(name, n_classes=12).eval()
    out = model(torch.randn(2, num_samples(ms, 16000)))
    assert out.shape == (2, 12)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS.names())  # every registered model, plug-ins included
def test_int16_samples_and_float_waveforms_are_the_same_input(name):
    """The datasets hold int16 samples and training's augmentation gives float in [-1, 1]: a
    network must hear both alike, or it is evaluated at a level it was not trained at."""
    torch.manual_seed(0)
    model = build_model(name, n_classes=12).eval()
    g = torch.Generator().manual_seed(1)
    t = torch.arange(16000) / 16000
    samples = (3000 * torch.sin(2 * torch.pi * 300 * t) + 300 * torch.randn(2, 16000, generator=g)).to(torch.int16)
    with torch.no_grad():
        torch.testing.assert_close(model(samples), model(samples.float() / 32768.0), atol=1e-4, rtol=1e-4)


def test_a_network_with_its_own_front_end_is_handed_float_in_minus_one_to_one():
    """Any such network, a plug-in's too: KeywordSpotter reads int16 as LogMel does."""
    from distill.core.features import FeatureConfig
    from distill.core.models import KeywordSpotter, takes_waveform

    class Loudness(torch.nn.Module):
        takes_waveform = True

        def forward(self, waveform):
            self.seen = waveform
            return waveform.abs().amax(-1, keepdim=True).repeat(1, 12)

    net = Loudness()
    spotter = KeywordSpotter(net, FeatureConfig())
    samples = torch.tensor([[16384, -32768, 0, 8]], dtype=torch.int16)
    assert takes_waveform(net) and spotter(samples)[0, 0] == 1.0 and net.seen.dtype == torch.float32
    torch.testing.assert_close(spotter.net_input(samples), samples.float() / 32768.0)


def test_res8_matches_the_paper_size_and_macs_scale_with_input():
    model = build_model("res8", 12)
    params = sum(p.numel() for p in model.net.parameters())
    assert 105_000 < params < 115_000  # Tang & Lin report 110K parameters for res8
    narrow = sum(p.numel() for p in build_model("res8_narrow", 12).net.parameters())
    assert 18_000 < narrow < 22_000  # and 19.9K for res8-narrow
    full, half = count_macs(model, 16000), count_macs(model, 8000)
    assert 30e6 < full < 45e6
    assert 0.45 < half / full <= 0.51
    res15 = build_model("res15", 12)
    assert 235_000 < sum(p.numel() for p in res15.net.parameters()) < 240_000  # 238K in the paper
    dilations = [c.dilation[0] for c in res15.net.convs]
    assert dilations == [1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 16]  # 2^⌊i/3⌋
    assert count_macs(res15, 16000) > 20 * full  # no pooling: every layer sees every frame


def test_model_registry_errors_are_clear():
    with pytest.raises(KeyError, match="registered models: .*res8"):
        build_model("nope", 12)
    with pytest.raises(ValueError, match="bad options"):
        build_model("tiny", 12, {"width": 3})
    assert {"res8", "res8_narrow", "tiny"} <= set(MODELS.names())


def test_bf16_autocast_trains_on_cpu_and_fp32_is_untouched():
    from distill.core.models import autocast, build_model

    torch.manual_seed(0)
    model = build_model("res8_narrow", 12)
    x = torch.randn(4, 8000) * 0.1
    with autocast("cpu", "fp32"):
        assert model(x).dtype == torch.float32
    with autocast("cpu", "bf16"):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.arange(4))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad(), autocast("cpu", "bf16"):
        assert torch.allclose(model(x).float(), model.float()(x).float(), atol=0.2)  # bf16: close, not equal


def test_latency_per_decision_is_a_median_of_batch_one_runs():
    model = build_model("tiny", 12)
    torch.set_num_threads(2)
    short, long = latency_per_decision(model, 4000, repeats=15), latency_per_decision(model, 16000, repeats=15)
    assert 0 < short < 1 and 0 < long < 1
    assert torch.get_num_threads() == 2 and model.training  # its settings are put back


def test_a_package_registers_its_model_through_an_entry_point(tmp_path, monkeypatch, caplog):
    import importlib.metadata
    import sys

    from distill.core.registry import Registry

    registry = Registry("model", plugins="pld.test-models")
    (tmp_path / "my_nets.py").write_text(
        "from distill.core.models import Tiny\n"
        "from test_models_plugin_target import REGISTRY\n"
        "REGISTRY.register('my_net')(lambda n_classes, **o: Tiny(n_classes, **o))\n")
    (tmp_path / "test_models_plugin_target.py").write_text("REGISTRY = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import test_models_plugin_target

    monkeypatch.setattr(test_models_plugin_target, "REGISTRY", registry)
    plugins = [importlib.metadata.EntryPoint("my_net", "my_nets", "pld.test-models"),
               importlib.metadata.EntryPoint("broken", "no_such_module", "pld.test-models")]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [e for e in plugins if e.group == group])
    assert registry.names() == ["my_net"]  # loaded on the first look-up; the broken one only warns
    assert "plug-in 'broken' (no_such_module) failed to import" in caplog.text
    assert registry.get("my_net")(3).output.out_features == 3
    sys.modules.pop("my_nets", None)
