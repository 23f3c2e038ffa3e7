"""A trained network as one ONNX file that takes raw waveforms and returns class posteriors.

The exported graph is the log-mel front end → the network → softmax, with a dynamic batch and
input length, so a device needs only an ONNX runtime. The front end (``frontend="folded"``, the
default) is ``frontend_onnx``: ``FoldedLogMel`` written as plain ONNX operators (reflect pad,
hop-long blocks, each frame folded about its centre, two half-length DFT MatMuls, the mel
MatMul, log, normalisation), equal to the torchaudio one to 1e-5; the network and the softmax
are torch's export of ``model.net``, and the two graphs are joined on the features.
``frontend="conv"`` exports the earlier ``ConvLogMel`` (the STFT as one 1-D convolution), kept
for comparison (benchmarks/throughput.py). ``check_equivalence`` runs the file under onnxruntime beside
the PyTorch checkpoint; an export that disagrees is refused. ``quantize_int8`` writes the
statically quantized variant of the network's convolutions (calibrated on training crops); the
front end and the softmax stay fp32. ``pld export --int8`` keeps it only where ``latencies``
measures it ``INT8_MIN_SPEEDUP`` times faster than fp32.
PyTorch, onnx and onnxruntime only: no Ray, no MLflow.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from distill.core.features import ConvLogMel, FoldedLogMel
from distill.core.models import KeywordSpotter, takes_waveform

if TYPE_CHECKING:  # onnx is imported where a function needs it: core stays importable without it
    import onnx

INPUT, OUTPUT = "waveform", "posteriors"
FEATURES = "features"  # where the front end's graph meets the network's
OPSET = 17
FRONTENDS = ("folded", "conv")
MAX_POSTERIOR_GAP = 1e-4  # |Δ posterior| an export may differ from its checkpoint by
MIN_CHECK_CLIPS = 200


class ExportError(ValueError):
    """An export that does not compute what its checkpoint computes; the message gives the figures."""


class Posteriors(torch.nn.Module):
    """float waveforms in [-1, 1] ``(batch, samples)`` → softmax posteriors ``(batch, classes)``."""

    def __init__(self, model: KeywordSpotter):
        super().__init__()
        self.frontend = torch.nn.Identity() if takes_waveform(model.net) else ConvLogMel(model.features)
        self.net = model.net

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(self.frontend(waveform)), dim=-1)


NET_FRONTEND = "/net/frontend/"  # the front end of a network that takes the waveform (speech_embedding): fp32 too
NCHWC_BLOCK = 16  # onnxruntime's blocked-channel convolutions (NCHWc): 16 channels a block with AVX-512, 8 with AVX2
MAX_PADDING = 0.125  # pad a network's channels to whole blocks when that adds at most this share of channels


def pad_channels(net: torch.nn.Module, block: int = NCHWC_BLOCK, max_growth: float = MAX_PADDING) -> torch.nn.Module:
    """A ``Res8``-family network with its maps padded with zero channels to a multiple of ``block``,
    computing exactly what ``net`` computes (a zero channel stays zero through ReLU, the residual
    sums and a batch norm of mean 0, and the output layer gives it weight 0): onnxruntime then
    runs its convolutions in blocked layout. res8 and res15 (45 → 48 maps) ran 1.3-1.4× faster
    so on this CPU (docs/benchmarks.md); res8_narrow (19 maps, 32 would be 68 % more work) is
    returned as it is, as is any other network."""
    import copy

    from distill.core.models import Res8

    if not isinstance(net, Res8):
        return net
    c = net.conv0.out_channels
    wide = -(-c // block) * block
    if wide == c or wide - c > max_growth * c:
        return net
    padded = copy.deepcopy(net).eval()
    conv = lambda old, c_in: torch.nn.Conv2d(c_in, wide, old.kernel_size, padding=old.padding,  # noqa: E731
                                            dilation=old.dilation, bias=False)
    with torch.no_grad():
        padded.conv0 = conv(net.conv0, 1)
        padded.conv0.weight.zero_()[:c] = net.conv0.weight
        for i, old in enumerate(net.convs):
            padded.convs[i] = conv(old, wide)
            padded.convs[i].weight.zero_()[:c, :c] = old.weight
        for i, old in enumerate(net.bns):
            bn = padded.bns[i] = torch.nn.BatchNorm2d(wide, eps=old.eps, affine=False).eval()
            bn.running_mean[:c], bn.running_var[:c] = old.running_mean, old.running_var
        padded.output = torch.nn.Linear(wide, net.output.out_features)
        padded.output.weight.zero_()[:, :c] = net.output.weight
        padded.output.bias.copy_(net.output.bias)
    return padded.eval()


class NetPosteriors(torch.nn.Module):
    """features ``(batch, 1, mels, frames)`` → softmax posteriors: the network half of the export."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(features), dim=-1)


def frontend_onnx(front: FoldedLogMel, output: str = FEATURES) -> "onnx.ModelProto":
    """``FoldedLogMel`` as an ONNX graph: float waveforms ``(batch, samples)`` → features
    ``(batch, 1, mels, frames)``. Written by hand rather than traced: the tracer records the
    reflect pad as an ``If`` and the shape arithmetic as a dozen operators, each a fixed cost
    per decision (together some 20 µs on one thread, more than a shorter input saves there)."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), "frontend." + name))
        return "frontend." + name

    def op(kind: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, inputs, ["frontend." + name], name="/frontend/" + name, **attrs))
        return "frontend." + name

    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    hop, half, k, mels = front.hop, front.half, front.blocks, front.fb.shape[1]
    x = op("Pad", [INPUT, const("pads", i64(0, front.left, 0, front.right))], "padded", mode="reflect")
    # samples // hop + k blocks: the padded length, cut down to whole blocks
    blocks_n = op("Div", [op("Shape", [x], "padded_len", start=1, end=2), const("hop", i64(hop))], "blocks_n")
    zero, one, two = const("zero", i64(0)), const("one", i64(1)), const("two", i64(2))
    x = op("Slice", [x, zero, op("Mul", [blocks_n, "frontend.hop"], "whole"), one], "whole_blocks")
    blocks = op("Reshape", [x, const("block_shape", i64(0, -1, hop))], "blocks")  # (batch, frames + k - 1, hop)
    end = 2 ** 62
    parts = [op("Slice", [blocks, const(f"from{i}", i64(i)), const(f"to{i}", i64(i - (k - 1) if i < k - 1 else end)),
                          one], f"blocks{i}") for i in range(k)]
    frames = op("Concat", parts, "frames", axis=2)  # (batch, frames, k · hop)
    a = op("Slice", [frames, const("centre", i64(half)), const("right_end", i64(2 * half + 1)), two], "right_half")
    b = op("Slice", [frames, "frontend.centre", const("left_end", i64(-end)), two, const("back", i64(-1))],
           "left_half_reversed")
    re = op("MatMul", [op("Add", [a, b], "symmetric"), const("cos", front.cos.numpy())], "re")
    im = op("MatMul", [op("Sub", [a, b], "antisymmetric"), const("sin", front.sin.numpy())], "im")
    power = op("Add", [op("Mul", [re, re], "re2"), op("Mul", [im, im], "im2")], "power")
    mel = op("MatMul", [power, const("fb", front.fb.numpy())], "mel")  # (batch, frames, mels)
    feats = op("Log", [op("Add", [mel, const("log_offset", np.array(1e-6, np.float32))], "mel_offset")], "log_mel")
    if front.smoothing is not None:  # symmetric: the same matrix on (frames, mels) rows
        feats = op("MatMul", [feats, const("smoothing", front.smoothing.numpy())], "smoothed")
    normalize = front.cfg.normalize
    if normalize == "band":
        feats = op("Sub", [feats, op("ReduceMean", [feats], "band_mean", axes=[1], keepdims=1)], "band_centred")
    if normalize in ("utterance", "band"):
        centred = op("Sub", [feats, op("ReduceMean", [feats], "mean", axes=[1, 2], keepdims=1)], "centred")
        sum_sq = op("ReduceSumSquare", [centred], "sum_sq", axes=[1, 2], keepdims=1)
        # torch's std is unbiased: mels · frames - 1 values, frames = blocks_n - (k - 1)
        dof = op("Sub", [op("Mul", [blocks_n, const("mels", i64(mels))], "mels_blocks"),
                         const("dof_offset", i64(mels * (k - 1) + 1))], "dof")
        var = op("Div", [sum_sq, op("Cast", [dof], "dof_float", to=TensorProto.FLOAT)], "var")
        std = op("Add", [op("Sqrt", [var], "std"), const("std_eps", np.array(1e-5, np.float32))], "std_offset")
        feats = op("Div", [centred, std], "normalized")
    feats = op("Transpose", [feats], "mels_by_frames", perm=[0, 2, 1])
    nodes.append(helper.make_node("Unsqueeze", [feats, one], [output], name="/frontend/features"))
    graph = helper.make_graph(nodes, "frontend", [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", "samples"])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 1, mels, "frames"])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def export_onnx(model: KeywordSpotter, input_samples: int, path: str | Path, frontend: str = "folded") -> Path:
    """Write ``model`` as ONNX (batch and length dynamic); returns the path. ``frontend``:
    "folded" (``frontend_onnx`` joined to the network, its channels padded by ``pad_channels``;
    the default, "conv" where the window is not symmetric about a tap) or "conv" (``ConvLogMel``
    traced with the network as it is: the export before the folded front end)."""
    import onnx

    if frontend not in FRONTENDS:
        raise ValueError(f"frontend {frontend!r}: one of {FRONTENDS}")
    path = Path(path)
    if not getattr(model.net, "exportable", True):
        raise ValueError(f"{type(model.net).__name__}: not exported: {model.net.exportable_note}")
    model = model.eval()
    try:
        folded = FoldedLogMel(model.features) if frontend == "folded" and not takes_waveform(model.net) else None
    except ValueError:
        folded = None
    if folded is None:
        module, example, names, axes = Posteriors(model).eval(), torch.zeros(2, input_samples), [INPUT], \
            {INPUT: {0: "batch", 1: "samples"}, OUTPUT: {0: "batch"}}
    else:
        with torch.no_grad():
            features = folded(torch.zeros(2, input_samples))
        module, example, names, axes = NetPosteriors(pad_channels(model.net)).eval(), features, [FEATURES], \
            {FEATURES: {0: "batch", 3: "frames"}, OUTPUT: {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on constant folding of slices
        torch.onnx.export(module, (example,), str(path), input_names=names, output_names=[OUTPUT],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    if folded is not None:
        net = onnx.load(str(path))
        front = frontend_onnx(folded)
        front.ir_version = net.ir_version
        merged = onnx.compose.merge_models(front, net, io_map=[(FEATURES, FEATURES)])
        opsets = {o.domain or "": o.version for o in merged.opset_import}  # merge_models lists the default domain twice
        del merged.opset_import[:]
        merged.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets.items())
        merged.producer_name, merged.producer_version = net.producer_name, net.producer_version
        onnx.checker.check_model(merged)
        onnx.save(merged, str(path))
    return path


class OnnxSpotter:
    """An exported model under onnxruntime, one CPU thread by default: ``spotter(waves)`` → posteriors."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a file that is not a model
            raise ValueError(f"{path}: onnxruntime cannot load it ({str(exc).strip().splitlines()[-1]})") from None
        self.path = Path(path)

    def __call__(self, waveforms: np.ndarray | torch.Tensor) -> np.ndarray:
        x = waveforms.numpy() if isinstance(waveforms, torch.Tensor) else waveforms
        if x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(x, dtype=np.float32)})[0]


def torch_posteriors(model: KeywordSpotter, waveforms: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The checkpoint's posteriors of float (or int16) waveforms ``(n, samples)``."""
    out = []
    with torch.inference_mode():
        for lo in range(0, len(waveforms), batch_size):
            out.append(torch.softmax(model(torch.from_numpy(waveforms[lo:lo + batch_size])), dim=-1).numpy())
    return np.concatenate(out)


def onnx_posteriors(spotter: OnnxSpotter, waveforms: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([spotter(waveforms[lo:lo + batch_size]) for lo in range(0, len(waveforms), batch_size)])


@dataclass
class Equivalence:
    clips: int
    max_abs_diff: float
    argmax_disagreements: int

    @property
    def ok(self) -> bool:
        return (self.clips >= MIN_CHECK_CLIPS and self.max_abs_diff <= MAX_POSTERIOR_GAP
                and self.argmax_disagreements == 0)

    def describe(self) -> str:
        return (f"{self.clips} clips: max |Δ posterior| {self.max_abs_diff:.2e} (allowed {MAX_POSTERIOR_GAP:g}), "
                f"argmax differs on {self.argmax_disagreements}")


def check_equivalence(model: KeywordSpotter, spotter: OnnxSpotter, waveforms: np.ndarray) -> Equivalence:
    """Posteriors of the checkpoint and of the ONNX file on the same crops ``(n, samples)``."""
    a, b = torch_posteriors(model, waveforms), onnx_posteriors(spotter, waveforms)
    return Equivalence(len(waveforms), float(np.abs(a - b).max()), int((a.argmax(-1) != b.argmax(-1)).sum()))


INT8_MIN_SPEEDUP = 1.3  # an int8 file is written only when it decides this much faster than fp32
# The quantization that measured fastest on this machine's CPU (AVX-512 VNNI; docs/benchmarks.md,
# "Latency per decision"): uint8 activations with int8 weights (onnxruntime's U8S8 kernels; S8S8
# was 1.1-1.2x slower), per-channel weights, QOperator (QLinearConv), and the convolutions alone
# (quantizing Add, pooling and the output layer as well added Q/DQ steps that cost more than
# they saved, and moved the posteriors 4x further from fp32's).
INT8_OPS = ("Conv",)


def quantize_int8(fp32: str | Path, int8: str | Path, calibration: np.ndarray, *, per_channel: bool = True,
                  qdq: bool = False, activations: str = "uint8", ops: tuple[str, ...] | None = INT8_OPS) -> Path:
    """Static int8 quantization of the network, calibrated on ``calibration`` crops; the front end
    (DFT basis, mel matrix, log) keeps fp32, as int8 would bend the features. The keywords choose
    the variant (benchmarks/throughput.py measures them): ``qdq`` (QuantizeLinear/DequantizeLinear
    pairs) or QOperator, ``activations`` "uint8" or "int8", ``ops`` the operator types to
    quantize (None: every one onnxruntime can)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            x = calibration.astype(np.float32) / (32768.0 if calibration.dtype == np.int16 else 1.0)
            self.batches = iter([{INPUT: x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.batches, None)

    fp32, int8 = Path(fp32), Path(int8)
    prepared = int8.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    # only the network's operators: the front end and the softmax (posteriors in steps of 1/255
    # would blunt the detection threshold) stay fp32
    outside = [n.name for n in onnx.load(str(prepared)).graph.node
               if not n.name.startswith("/net/") or n.name.startswith(NET_FRONTEND)]
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # per-channel notes on batch-norm constants, logged on root
    try:
        quantize_static(str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
                        per_channel=per_channel, weight_type=QuantType.QInt8, nodes_to_exclude=outside,
                        activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                        op_types_to_quantize=list(ops) if ops else None)
    finally:
        root.setLevel(level)
    prepared.unlink()
    return int8


def latencies(spotters: dict[str, "OnnxSpotter"], input_samples: int, repeats: int = 200, warmup: int = 20,
              rounds: int = 4) -> dict[str, float]:
    """Median seconds of one decision (batch 1) of each spotter, timed side by side: ``rounds``
    passes over them, in alternating order, so that a load change on the machine reaches all alike."""
    x = np.random.default_rng(0).normal(0, 0.03, (1, input_samples)).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in spotters}
    order = list(spotters)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            for i in range(warmup + -(-repeats // rounds)):
                t = time.perf_counter()
                spotters[name](x)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}


def onnx_latency(spotter: OnnxSpotter, input_samples: int, repeats: int = 200, warmup: int = 20) -> float:
    """Median seconds of one decision (batch 1) under onnxruntime, as ``models.latency_per_decision``."""
    x = np.random.default_rng(0).normal(0, 0.03, (1, input_samples)).astype(np.float32)
    times = []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        spotter(x)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)
