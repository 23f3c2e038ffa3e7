"""The ONNX export of the method core: the folded and the convolution front ends equal
torchaudio's (in PyTorch, and the folded one as the ONNX graph the export writes), the exported
graph equals the checkpoint under onnxruntime (any batch, any length), a broken export is caught
by the equivalence check, and int8 keeps the front end in fp32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from distill.core.export import (MAX_POSTERIOR_GAP, OnnxSpotter, check_equivalence, export_onnx, frontend_onnx,
                                 NET_FRONTEND, latencies, onnx_posteriors, pad_channels, quantize_int8)
from distill.core.features import ConvLogMel, FeatureConfig, FoldedLogMel, LogMel
from distill.core.models import MODELS, build_model, takes_waveform


def speechlike(n: int, samples: int, seed: int = 0) -> np.ndarray:
    """Broadband bursts in low noise, float in [-1, 1]: what the front end meets in a dataset."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.003, (n, samples))
    for row in x:
        at, length = rng.integers(0, samples // 2), rng.integers(samples // 8, samples // 2)
        row[at:at + length] += rng.normal(0, 0.2, length) * np.hanning(length)
    return x.astype(np.float32)


@pytest.mark.parametrize("normalize", ["utterance", "band", "none"])
@pytest.mark.parametrize("samples", [16000, 8000, 12345, 800])
def test_the_convolution_front_end_equals_torchaudio(normalize, samples):
    logmel = LogMel(FeatureConfig(normalize=normalize))
    x = torch.from_numpy(speechlike(6, samples))
    a, b = logmel(x), ConvLogMel(logmel)(x)
    assert a.shape == b.shape
    assert (a - b).abs().max() <= 1e-5


@pytest.mark.parametrize("normalize", ["utterance", "band", "none"])
@pytest.mark.parametrize("samples", [16000, 8000, 12345, 800, 300])
def test_the_folded_front_end_equals_torchaudio_in_pytorch_and_as_onnx(normalize, samples, tmp_path):
    logmel = LogMel(FeatureConfig(normalize=normalize))
    x = speechlike(6, samples)
    reference = logmel(torch.from_numpy(x))
    folded = FoldedLogMel(logmel)(torch.from_numpy(x))
    assert folded.shape == reference.shape and (folded - reference).abs().max() <= 1e-5
    path = tmp_path / "front.onnx"
    onnx.save(frontend_onnx(FoldedLogMel(logmel)), str(path))
    import onnxruntime as ort

    graph = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    features = graph.run(None, {"waveform": x})[0]
    assert features.shape == reference.shape and np.abs(features - reference.numpy()).max() <= 1e-5


@pytest.mark.parametrize("options", [{"win_ms": 25.0}, {"f_max": 8000.0}, {"hop_ms": 20.0}, {"win_ms": 32.0},
                                     {"cepstra": 13}])
def test_the_folded_front_end_follows_the_feature_config(options, tmp_path):
    logmel = LogMel(FeatureConfig(**options))
    x = speechlike(3, 8000)
    reference = logmel(torch.from_numpy(x))
    assert (FoldedLogMel(logmel)(torch.from_numpy(x)) - reference).abs().max() <= 1e-5
    assert (ConvLogMel(logmel)(torch.from_numpy(x)) - reference).abs().max() <= 1e-5
    path = tmp_path / "front.onnx"
    onnx.save(frontend_onnx(FoldedLogMel(logmel)), str(path))
    import onnxruntime as ort

    features = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"waveform": x})[0]
    assert np.abs(features - reference.numpy()).max() <= 1e-5


def test_the_front_end_keeps_only_the_bins_a_mel_filter_reads():
    conv = ConvLogMel(LogMel(FeatureConfig(f_max=4000)))
    assert conv.bins == 128 and conv.basis.shape == (256, 1, 479)  # of 257 bins and 512 taps
    assert ConvLogMel(LogMel(FeatureConfig(f_max=8000))).bins == 256  # all but Nyquist, where no filter reaches
    folded = FoldedLogMel(LogMel(FeatureConfig(f_max=4000)))  # folded: 240 taps (the centre and one side) per bin
    assert folded.cos.shape == folded.sin.shape == (240, 128) and folded.blocks == 3  # 3 blocks of 160 ≥ 479 taps
    assert 2 * folded.cos.numel() < conv.basis.numel() / 1.99  # half the multiply-adds of the convolution


def test_a_window_off_the_centre_tap_is_exported_with_the_convolution(tmp_path):
    features = FeatureConfig(win_ms=25.0625)  # 401 samples: n_fft - win odd, no tap at the centre
    with pytest.raises(ValueError, match="not symmetric"):
        FoldedLogMel(LogMel(features))
    torch.manual_seed(0)
    model = build_model("tiny", 12, {}, features).eval()
    path = export_onnx(model, 8000, tmp_path / "m.onnx")
    assert any(n.op_type == "Conv" and n.name.startswith("/frontend") for n in onnx.load(str(path)).graph.node)
    assert check_equivalence(model, OnnxSpotter(path), speechlike(200, 8000, seed=6)).ok


EXPORTABLE = [n for n in MODELS.names() if getattr(MODELS.get(n), "exportable", True)]


def test_a_network_that_is_not_deployed_is_refused_with_the_reason(tmp_path):
    assert "ensemble" not in EXPORTABLE and {"res8", "speech_embedding"} <= set(EXPORTABLE)
    with pytest.raises(ValueError, match="Ensemble: not exported: an ensemble is a teacher's network"):
        export_onnx(build_model("ensemble", 12, {"members": [{"name": "tiny"}, {"name": "tiny"}]}), 8000,
                    tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


@pytest.fixture(scope="module", params=EXPORTABLE)  # every registered model that deploys, plug-ins included
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(request.param, 12, {}, FeatureConfig()).eval()
    with torch.no_grad():  # batch norm with statistics that are not the identity
        for module in model.net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, 8000, tmp_path_factory.mktemp("onnx") / "m.onnx")
    return model, path


@pytest.mark.parametrize("name", MODELS.names())
def test_padded_channels_compute_what_the_network_computes(name):
    torch.manual_seed(0)
    net = build_model(name, 12, {}, FeatureConfig()).net.eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
        padded = pad_channels(net)
        x = build_model(name, 12, {}, FeatureConfig()).net_input(torch.from_numpy(speechlike(4, 8000)))
        assert (padded(x) - net(x)).abs().max() <= 1e-5
    widths = {"res8": 48, "res15": 48}  # 45 maps → 3 blocks of 16; res8_narrow's 19 would need 68 % more
    if name in widths:
        assert padded is not net and padded.conv0.out_channels == widths[name] and net.conv0.out_channels == 45
    elif name in ("res8_narrow", "tiny"):
        assert padded is net


def test_the_export_equals_the_checkpoint_for_any_batch_and_length(exported):
    model, path = exported
    spotter = OnnxSpotter(path)
    result = check_equivalence(model, spotter, speechlike(210, 8000, seed=1))
    assert result.ok and result.max_abs_diff <= MAX_POSTERIOR_GAP and result.argmax_disagreements == 0
    for batch, samples in ((1, 8000), (3, 16000), (2, 4000)):
        x = speechlike(batch, samples, seed=2)
        post = spotter(x)
        assert post.shape == (batch, 12) and np.allclose(post.sum(-1), 1, atol=1e-5)
        with torch.no_grad():
            ref = torch.softmax(model(torch.from_numpy(x)), -1).numpy()
        assert np.abs(post - ref).max() <= MAX_POSTERIOR_GAP
    assert spotter((speechlike(1, 8000) * 32768).astype(np.int16)).shape == (1, 12)  # int16 is scaled


def test_a_broken_export_fails_the_check(exported, tmp_path):
    model, path = exported
    graph = onnx.load(str(path))
    for basis in (t for t in graph.graph.initializer if t.name in ("frontend.cos", "frontend.sin")):
        assert list(basis.dims) == [240, 128]
        bent = numpy_helper.to_array(basis).copy()
        bent[:, :32] *= 2.0  # the lowest quarter of the bins twice as loud (a uniform gain would vanish in the
        # per-input normalisation; a smaller bend slips under the gap of an untrained tiny network)
        basis.CopyFrom(numpy_helper.from_array(bent, basis.name))
    for mel in (t for t in graph.graph.initializer if t.name == "net.frontend.mel"):  # a net with its own front end
        bent = numpy_helper.to_array(mel).copy()
        bent[:, :8] *= 2.0
        mel.CopyFrom(numpy_helper.from_array(bent, mel.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    result = check_equivalence(model, OnnxSpotter(broken), speechlike(200, 8000, seed=3))
    assert not result.ok and result.max_abs_diff > MAX_POSTERIOR_GAP
    assert "200 clips: max |Δ posterior|" in result.describe()
    assert not check_equivalence(model, OnnxSpotter(path), speechlike(50, 8000)).ok  # too few clips to vouch


@pytest.mark.parametrize("qdq", [False, True])
def test_int8_quantizes_the_network_and_not_the_front_end(exported, tmp_path, qdq):
    model, path = exported
    int8 = quantize_int8(path, tmp_path / "m.int8.onnx", (speechlike(40, 8000, seed=4) * 32768).astype(np.int16), qdq=qdq)
    nodes = onnx.load(str(int8)).graph.node
    dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    frontend = [n for n in nodes if n.name.startswith(("/frontend", NET_FRONTEND))]
    if takes_waveform(model.net):  # its own front end: the DFT as a convolution, mel, log
        assert [n.op_type for n in frontend if n.op_type in ("Conv", "MatMul", "Log")] == ["Conv", "MatMul", "Log"]
    else:
        assert sum(n.op_type in ("MatMul", "Log") for n in frontend) == 4  # re, im, mel, log: fp32 features
    assert not any(n.op_type.startswith("QLinear") or i in dequantized for n in frontend for i in n.input)
    if qdq:  # every network convolution reads dequantized int8
        network = [n for n in nodes if n.name.startswith("/net") and n.op_type == "Conv" and n not in frontend]
        assert network and all(any(i in dequantized for i in n.input) for n in network)
    else:  # QOperator: the convolutions alone become QLinearConv; Add, pooling and the output layer stay fp32
        assert any(n.op_type == "QLinearConv" for n in nodes) and not any(
            n.op_type == "Conv" and n.name.startswith("/net") and n not in frontend for n in nodes)
        assert not any(n.op_type in ("QLinearAdd", "QLinearAveragePool", "QGemm") for n in nodes)
    x = speechlike(20, 8000, seed=5)
    post = onnx_posteriors(OnnxSpotter(int8), x)
    assert post.shape == (20, 12) and np.allclose(post.sum(-1), 1, atol=1e-4)


def test_latencies_time_each_spotter_side_by_side(exported):
    _, path = exported
    spotter = OnnxSpotter(path)
    times = latencies({"a": spotter, "b": spotter}, 8000, repeats=8, warmup=2, rounds=2)
    assert set(times) == {"a", "b"} and all(0 < t < 1 for t in times.values())


def test_a_file_that_is_not_a_model_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"bad.onnx: onnxruntime cannot load it"):
        OnnxSpotter(bad)
