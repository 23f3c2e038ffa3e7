"""A trained network as one ONNX file that takes raw waveforms and returns class posteriors.

The exported graph is ``ConvLogMel`` (the log-mel front end as a convolution, equal to the
torchaudio one to 1e-5) → the network → softmax, with a dynamic batch and input length, so a
device needs only an ONNX runtime. ``check_equivalence`` runs the file under onnxruntime beside
the PyTorch checkpoint; an export that disagrees is refused. ``quantize_int8`` writes the
statically quantized (QDQ, calibrated on training crops) variant of the network; the front end
and the softmax stay fp32.
PyTorch, onnx and onnxruntime only: no Ray, no MLflow.
"""

from __future__ import annotations

import logging
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from distill.core.features import ConvLogMel
from distill.core.models import KeywordSpotter

INPUT, OUTPUT = "waveform", "posteriors"
OPSET = 17
MAX_POSTERIOR_GAP = 1e-4  # |Δ posterior| an export may differ from its checkpoint by
MIN_CHECK_CLIPS = 200


class ExportError(ValueError):
    """An export that does not compute what its checkpoint computes; the message gives the figures."""


class Posteriors(torch.nn.Module):
    """float waveforms in [-1, 1] ``(batch, samples)`` → softmax posteriors ``(batch, classes)``."""

    def __init__(self, model: KeywordSpotter):
        super().__init__()
        self.frontend = ConvLogMel(model.features)
        self.net = model.net

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(self.frontend(waveform)), dim=-1)


def export_onnx(model: KeywordSpotter, input_samples: int, path: str | Path) -> Path:
    """Write ``model`` as ONNX (batch and length dynamic); returns the path."""
    path = Path(path)
    module = Posteriors(model.eval()).eval()
    example = torch.zeros(2, input_samples)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's notes on constant folding of slices
        torch.onnx.export(module, (example,), str(path), input_names=[INPUT], output_names=[OUTPUT],
                          dynamic_axes={INPUT: {0: "batch", 1: "samples"}, OUTPUT: {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
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


def quantize_int8(fp32: str | Path, int8: str | Path, calibration: np.ndarray) -> Path:
    """Static int8 (QDQ) quantization of the network, calibrated on ``calibration`` crops; the
    front end (DFT basis, mel matrix, log) keeps fp32, as int8 would bend the features."""
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
    outside = [n.name for n in onnx.load(str(prepared)).graph.node if not n.name.startswith("/net/")]
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # per-channel notes on batch-norm constants, logged on root
    try:
        quantize_static(str(prepared), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=outside)
    finally:
        root.setLevel(level)
    prepared.unlink()
    return int8


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
