"""The streaming spotter: every hop's posteriors equal the network's on the same window, for every
Res8-family network registered, while a hop computes only its new log-mel frames and the window's edges.
The causal stream: every hop of a streaming network equals the network on all the audio so far,
while a hop computes only its new frames and columns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.core.features import FeatureConfig, FoldedLogMel
from distill.core.models import MODELS, CausalRes8, Res8, build_model
from distill.core.streaming import CausalStream, StreamingSpotter

RES8_FAMILY = [name for name in MODELS.names() if isinstance(build_model(name, 12).net, Res8)]
CAUSAL = [name for name in MODELS.names() if isinstance(build_model(name, 12).net, CausalRes8)]


def speech(samples: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.003, samples)
    for at in range(0, samples - 4000, 3000):
        x[at:at + 4000] += rng.normal(0, 0.2, 4000) * np.hanning(4000)
    return torch.from_numpy(x.astype(np.float32))


def test_the_family_is_the_res8_networks():
    assert {"res8", "res8_narrow", "res15"} <= set(RES8_FAMILY) and "tiny" not in RES8_FAMILY
    assert {"res8_causal", "res8_narrow_causal"} <= set(CAUSAL)


def trained_looking(name: str, normalize: str, cepstra: int | None = None) -> torch.nn.Module:
    """An untrained network whose batch norms hold statistics (and affine maps) as after training."""
    torch.manual_seed(0)
    model = build_model(name, 12, {}, FeatureConfig(normalize=normalize, cepstra=cepstra)).eval()
    with torch.no_grad():
        for module in model.net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                if module.affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("normalize, cepstra", [("utterance", None), ("band", None), ("none", None), ("utterance", 13)])
@pytest.mark.parametrize("name", RES8_FAMILY)
def test_each_hop_equals_the_network_on_its_window(name, normalize, cepstra):
    model = trained_looking(name, normalize, cepstra)
    n, hop, hops = 8000, 1600, 6
    audio = torch.stack([speech(n + hops * hop, seed) for seed in (1, 2)])  # two streams at once
    stream = StreamingSpotter(model, n, hop)
    outputs = [stream.step(audio[:, i:i + hop]) for i in range(0, audio.shape[1], hop)]
    assert all(o is None for o in outputs[:n // hop - 1])
    decisions = outputs[n // hop - 1:]
    assert len(decisions) == hops + 1
    with torch.no_grad():
        for i, post in enumerate(decisions):
            window = audio[:, i * hop:i * hop + n]
            assert torch.allclose(post, torch.softmax(model(window), -1), atol=1e-5)  # the model as trained
            folded = torch.softmax(model.net(FoldedLogMel(model.features)(window)), -1)
            assert torch.allclose(post, folded, atol=1e-6)  # the folded front end it shares frames with


def test_a_hop_computes_only_its_new_frames_and_the_edges():
    model = build_model("res8_narrow", 12).eval()
    stream = StreamingSpotter(model, 8000, 1600)
    assert stream.frames == 51 and stream.computed_frames() == 14  # 2 left-edge, 10 new, 2 right-edge
    assert StreamingSpotter(model, 16000, 1600).computed_frames() == 14  # the same at 1000 ms: per hop, not per window
    with pytest.raises(ValueError, match="whole feature frames"):
        StreamingSpotter(model, 8000, 1000)
    stream.step(torch.zeros(1, 1600))
    with pytest.raises(ValueError, match="moves 1600"):
        stream.step(torch.zeros(1, 800))


@pytest.mark.parametrize("cepstra", [None, 13])
@pytest.mark.parametrize("name", CAUSAL)
def test_each_causal_hop_equals_the_network_on_all_the_audio_so_far(name, cepstra):
    model = trained_looking(name, "none", cepstra)
    model.net.norm.running_mean.fill_(-8.0)  # about the log-mel's own level
    model.net.norm.running_var.fill_(9.0)
    n, hop, hops = 8000, 1600, 12
    audio = torch.stack([speech(hops * hop, seed) for seed in (3, 4)])
    stream = CausalStream(model, n, hop)
    outputs = [stream.step(audio[:, i:i + hop]) for i in range(0, audio.shape[1], hop)]
    columns, frame_hop = stream.columns, stream.front.hop
    assert columns == 10  # 51 frames of a 500 ms window, 5 to a column
    answered = 0
    with torch.no_grad():
        for k, post in enumerate(outputs, start=1):
            heard = audio[:, :k * hop]
            frames = (k * hop + stream.front.left - stream.front.blocks * frame_hop) // frame_hop + 1  # taps all heard
            feats = model.features(heard)[..., :frames]  # the windowed front end; its last frames reflect the end
            if frames // 5 < columns:
                assert post is None
                continue
            reference = torch.softmax(model.net(feats, columns=columns), -1)
            assert torch.allclose(post, reference, atol=1e-5), (k, (post - reference).abs().max())
            answered += 1
    assert answered == hops - 5  # from the sixth hop on: 59 frames, 11 columns


def test_a_causal_hop_computes_a_fifth_of_the_windows_work():
    from torch.utils.flop_counter import FlopCounterMode

    model = trained_looking("res8_narrow_causal", "none")
    stream = CausalStream(model, 8000, 1600)
    audio = speech(8 * 1600)
    for i in range(7):
        stream.step(audio[None, i * 1600:(i + 1) * 1600])
    counted = {}
    for name, run in (("hop", lambda: stream.step(audio[None, 7 * 1600:])),
                      # the folded front end both ways: torch.stft's FFT is not counted
                      ("window", lambda: model.net(FoldedLogMel(model.features)(audio[None, :8000])))):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            run()
        counted[name] = counter.get_total_flops()
    assert 0.15 < counted["hop"] / counted["window"] < 0.25, counted  # front end and network: 0.198
    with pytest.raises(ValueError, match="not a streaming network"):
        CausalStream(build_model("res8_narrow", 12), 8000, 1600)
    with pytest.raises(ValueError, match="features.normalize: none"):
        CausalStream(build_model("res8_narrow_causal", 12), 8000, 1600)
    with pytest.raises(ValueError, match="whole pooled columns"):
        CausalStream(model, 8000, 1200)


@pytest.mark.parametrize("cepstra", [None, 13])
@pytest.mark.parametrize("name", CAUSAL)
def test_the_exported_step_streams_what_the_causal_stream_does(name, cepstra, tmp_path):
    """The ONNX step from zero state, hop by hop under onnxruntime, gives CausalStream's answers
    once the zeros are out of the network's reach; so does the step in PyTorch."""
    from distill.core.stream_export import OnnxStream, export_stream_step
    from distill.core.streaming import CausalStep

    model = trained_looking(name, "none", cepstra)
    model.net.norm.running_mean.fill_(-8.0)
    model.net.norm.running_var.fill_(9.0)
    hop, hops = 1600, 24
    audio = torch.stack([speech(hops * hop, seed) for seed in (5, 6)])
    step = CausalStep(model, 8000, hop)
    warm = step.warmup_hops()
    assert 5 < warm < hops - 4
    stream, onnx = CausalStream(model, 8000, hop), OnnxStream(export_stream_step(model, 8000, hop, tmp_path / "s.onnx"))
    state = step.zero_state(2)
    for k in range(hops):
        chunk = audio[:, k * hop:(k + 1) * hop]
        expected = stream.step(chunk)
        with torch.no_grad():
            posteriors, *state = step(chunk, *state)
        exported = onnx.step(chunk.numpy())
        if k + 1 >= warm:
            assert torch.allclose(posteriors, expected, atol=1e-5), (k, (posteriors - expected).abs().max())
            assert np.allclose(exported, expected.numpy(), atol=1e-5), k


def test_the_exported_step_computes_no_shapes_and_copies_no_state_it_holds(tmp_path):
    """Every operator of a hop costs a call under onnxruntime (most of a hop's time): the step's
    sizes are constants (no Shape arithmetic in the graph), and a convolution whose new input
    is exactly its two state columns hands those on as they are (no Slice makes its next state)."""
    import onnx

    from distill.core.stream_export import export_stream_step

    graph = onnx.load(str(export_stream_step(trained_looking("res8_narrow_causal", "none"), 8000, 1600,
                                             tmp_path / "s.onnx"))).graph
    ops = [node.op_type for node in graph.node]
    assert "Shape" not in ops and "Gather" not in ops
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    conv_states = [o.name for o in graph.output][4:-1]  # next_state3 … : the pooled convolutions' states
    assert len(conv_states) == 6 and all(made_by[name] != "Slice" for name in conv_states), \
        {name: made_by[name] for name in conv_states}
