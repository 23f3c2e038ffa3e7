"""``moonshine``: a keyword spotter that is a small head on the encoder of a speech recogniser
trained on human speech, frozen.

Why: the other networks here learn sound from the corpus's synthesizers alone, and even the
head on Google's speech embedding mishears a few short words of engines no training clip uses
(`up`, `on`, `off`). Moonshine (Jeffries et al. 2024, "Moonshine: Speech Recognition for Live
Transcription and Voice Commands") is an encoder-decoder recogniser trained on about 200 k
hours of human speech. Its English base model's encoder ships in the `moonshine-cpp` wheel
(MIT) as an onnxruntime model (`.ort`, its weights int8), which `make install` installs without
importing it. Measured as a member of the teacher: docs/benchmarks.md.

- The encoder (frozen): the waveform at 16 kHz in [-1, 1] → 416 numbers every 24 ms (a strided
  convolution stem, then 8 transformer layers that attend over the whole input). It runs in
  onnxruntime on the CPU, where the file was built to run; its states are moved to the input's
  device, so a GPU worker trains the head there. It computes no gradient, and the model holds
  none of its weights: a checkpoint is the head's.
- The head (trained): layer norm, two convolutions over time, max over time, a linear layer, as
  ``speech_embedding``'s. The input is padded with ``pad_ms`` of zeros either side.
- Not exported: the encoder is an onnxruntime file, not a PyTorch graph. It is a teacher's
  network, as ``ensemble`` is.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.core.features import float_waveform
from distill.core.speech_embedding import head_layers, head_logits, package_dir  # the same head as speech_embedding's

SAMPLE_RATE = 16_000
STATE_DIM = 416
MIN_SAMPLES = 127 + 64 * 12  # the stem's strides (64, 3, 2) leave one state from this many samples
ENCODER = Path("models") / "base-en" / "encoder_model.ort"
# the file the heads were trained on: another encoder's states mean nothing to them
ENCODER_SHA256 = "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c"
INSTALL_HINT = "pip install --no-deps moonshine-cpp==0.1.4 (`make install` does)"


def encoder_file() -> Path:
    """moonshine-cpp 0.1.4's English base encoder, or a clear error."""
    package = package_dir("moonshine_cpp")  # located, not imported: it would load its own runtime
    if package is None:
        raise RuntimeError(f"model moonshine needs Moonshine's encoder file: {INSTALL_HINT}")
    path = package / ENCODER
    if not path.exists():
        raise RuntimeError(f"model moonshine: {path} not found: {INSTALL_HINT}")
    if _sha256(path) != ENCODER_SHA256:
        raise RuntimeError(f"model moonshine: {path} is not the encoder this model's heads learn on "
                           f"(sha256 {ENCODER_SHA256[:12]}…): {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=None)
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def _session(path: Path, threads: int):
    """One onnxruntime session per file and thread count in a process; never held by a model,
    which is then copied and pickled as any module is."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def encode(waveform: torch.Tensor, path: Path, batch: int = 32) -> torch.Tensor:
    """(batch, samples) float at 16 kHz in [-1, 1] -> the states (batch, steps, 416) of the encoder
    file at ``path`` (``encoder_file()``), on the input's device."""
    session = _session(path, torch.get_num_threads())
    x = waveform.detach().float().cpu().numpy()
    states = [session.run(None, {"input_values": np.ascontiguousarray(x[i:i + batch])})[0]
              for i in range(0, len(x), batch)]
    return torch.from_numpy(np.concatenate(states)).to(waveform.device)


class MoonshineSpotter(nn.Module):
    """Waveform -> logits: the frozen encoder and a trained head (see the module doc)."""

    takes_waveform = True  # KeywordSpotter hands it the waveform, not the platform's log-mel
    exportable = False
    exportable_note = ("model moonshine runs its frozen encoder in onnxruntime (an .ort file, not a PyTorch "
                       "graph): it is a teacher's network; export a student")

    def __init__(self, n_classes: int, width: int = 128, dropout: float = 0.3, pad_ms: float = 0.0):
        super().__init__()
        if not 0 <= pad_ms <= 2000:
            raise ValueError(f"pad_ms must be in [0, 2000], got {pad_ms}")
        self.pad = int(round(pad_ms * SAMPLE_RATE / 1000))
        self.encoder = encoder_file()  # a missing or different file fails here, when the model is built
        self.norm, self.conv, self.out = head_layers(STATE_DIM, width, dropout, n_classes)

    def states(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples), float in [-1, 1] or int16 samples -> (batch, steps, 416)."""
        x = F.pad(float_waveform(waveform).float(), (self.pad, self.pad))
        if x.shape[-1] < MIN_SAMPLES:  # too short for one state: pad the end to one
            x = F.pad(x, (0, MIN_SAMPLES - x.shape[-1]))
        return encode(x, self.encoder)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return head_logits(self.norm, self.conv, self.out, self.states(waveform))
