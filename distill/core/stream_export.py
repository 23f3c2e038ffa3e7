"""A streaming network's hop as ONNX: ``export_stream_step`` writes ``core.streaming.CausalStep``
(the chunk and the state in, the posteriors and the next state out), ``OnnxStream`` runs it
under onnxruntime keeping the state, and ``check_stream_equivalence`` holds it against
``CausalStream``. PyTorch, onnx and onnxruntime only: no Ray, no MLflow.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from distill.core.export import OPSET, OUTPUT, Equivalence, OnnxSpotter
from distill.core.models import KeywordSpotter

STREAM_INPUT, STREAM_STATE = "chunk", "state"


def export_stream_step(model: KeywordSpotter, input_samples: int, hop_samples: int, path: str | Path) -> Path:
    """Write one hop of a streaming network (``res8_causal``, ``res8_narrow_causal``) as ONNX:
    inputs ``chunk`` ``(batch, hop_samples)`` and ``state0`` … ``stateN``, outputs ``posteriors``
    and ``next_state0`` … (``core.streaming.CausalStep``; the batch is dynamic). A device keeps
    the state between hops, starting from zeros (``OnnxStream``)."""
    from distill.core.streaming import CausalStep

    step = CausalStep(model.eval(), input_samples, hop_samples).eval()
    state = step.zero_state(2)
    names = [f"{STREAM_STATE}{i}" for i in range(len(state))]
    outputs = [OUTPUT, *[f"next_{n}" for n in names]]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(step, (torch.zeros(2, hop_samples), *state), str(path), input_names=[STREAM_INPUT, *names],
                          output_names=outputs, dynamic_axes={n: {0: "batch"} for n in [STREAM_INPUT, *names, *outputs]},
                          opset_version=OPSET, dynamo=False)
    return Path(path)


class OnnxStream:
    """An exported stream step under onnxruntime, one CPU thread: ``stream.step(chunk)`` →
    posteriors of the last window, the state kept between calls (zeros at the start)."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.spotter = OnnxSpotter(path, threads)
        session = self.spotter.session
        self.state_names = [i.name for i in session.get_inputs() if i.name != STREAM_INPUT]
        self.outputs = [o.name for o in session.get_outputs()]
        self.shapes = [tuple(i.shape[1:]) for i in session.get_inputs() if i.name != STREAM_INPUT]
        self.state: list[np.ndarray] | None = None

    def step(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        if self.state is None:
            self.state = [np.zeros((len(chunk), *shape), np.float32) for shape in self.shapes]
        posteriors, *self.state = self.spotter.session.run(
            self.outputs, {STREAM_INPUT: chunk, **dict(zip(self.state_names, self.state))})
        return posteriors


def check_stream_equivalence(model: KeywordSpotter, stream: "OnnxStream", audio: np.ndarray, input_samples: int,
                             hop_samples: int) -> Equivalence:
    """The exported step (from zero state) against ``CausalStream`` (from the stream's start) on
    ``audio`` ``(streams, samples)``, hop by hop once the zeros are out of the network's reach:
    each compared hop is one of ``clips``."""
    from distill.core.streaming import CausalStep, CausalStream

    warm = CausalStep(model, input_samples, hop_samples).warmup_hops()
    x = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
    reference = CausalStream(model, input_samples, hop_samples)
    gaps, disagreements, compared = [0.0], 0, 0
    for k in range(x.shape[1] // hop_samples):
        chunk = x[:, k * hop_samples:(k + 1) * hop_samples]
        expected, exported = reference.step(torch.from_numpy(chunk)), stream.step(chunk)
        if k + 1 >= warm:
            expected = expected.numpy()
            gaps.append(float(np.abs(exported - expected).max()))
            disagreements += int((exported.argmax(-1) != expected.argmax(-1)).sum())
            compared += len(chunk)
    return Equivalence(compared, max(gaps), disagreements)
