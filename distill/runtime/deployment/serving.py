"""An exported model as something that answers: a clip-level decision function shared by the
MLflow pyfunc model (``mlflow models serve``) and ``pld predict``.

A clip as long as the model's input is one decision; a longer one is scored as the evaluation's
stream protocol scores it (windows every ``hop`` samples; the non-silence class with the highest
posterior in any window, or silence), so a 500 ms model answers for a 1 s clip the way its test
accuracy was measured.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from distill.core.export import OnnxSpotter
from distill.core.protocols import decide, protocol_starts, window_posteriors


class LogPosteriors:
    """An ONNX spotter as the protocols' model callable (which applies softmax to what it returns)."""

    def __init__(self, spotter: OnnxSpotter):
        self.spotter = spotter

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.from_numpy(self.spotter(x.numpy())).clamp_min(1e-30))


def decide_clips(spotter: OnnxSpotter, waveforms: np.ndarray, card: dict) -> tuple[np.ndarray, np.ndarray]:
    """Class index and posteriors (of the deciding window) per clip ``(clips, samples)``."""
    n = card["input_samples"]
    if waveforms.shape[1] < n:
        waveforms = np.pad(waveforms, ((0, 0), (0, n - waveforms.shape[1])))
    starts = protocol_starts(waveforms, n, "stream", card["hop_samples"])
    post = window_posteriors(LogPosteriors(spotter), waveforms, n, starts)
    silence = card["labels"].index(card["silence"]) if card.get("silence") in card["labels"] else None
    classes = decide(post, "stream", silence)
    window = post[torch.arange(len(post)), :, torch.as_tensor(classes)].argmax(dim=-1)
    return classes, post[torch.arange(len(post)), window].numpy()



class KeywordSpotterModel(mlflow.pyfunc.PythonModel):
    """pyfunc: float32 waveforms in [-1, 1] ``(clips, samples)`` → one row per clip: ``label``,
    ``score`` (its posterior) and one posterior column per class."""

    _skip_type_hint_validation = True  # MLflow would wrap predict and advise type hints; the signature is logged

    def load_context(self, context) -> None:
        self.card = json.loads(Path(context.artifacts["card"]).read_text())
        self.spotter = OnnxSpotter(context.artifacts["onnx"])

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        if isinstance(model_input, dict):  # a named tensor
            model_input = next(iter(model_input.values()))
        x = np.asarray(model_input.values if isinstance(model_input, pd.DataFrame) else model_input, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        classes, post = decide_clips(self.spotter, x, self.card)
        labels = self.card["labels"]
        frame = pd.DataFrame(post.astype(np.float64), columns=labels)
        frame.insert(0, "score", post[np.arange(len(post)), classes].astype(np.float64))
        frame.insert(0, "label", [labels[c] for c in classes])
        return frame
