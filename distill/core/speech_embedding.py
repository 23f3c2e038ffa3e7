"""``speech_embedding``: a keyword spotter that is a small head on a speech embedding learned
from human speech, frozen.

Why: every other network here learns sound from the corpus's synthesizers alone, and hears
those synthesizers. Google's speech embedding (Lin et al. 2020, "Training keyword spotters with
limited and synthesized speech data") was trained on human speech so that keyword spotters
trained on synthesized speech hear people; openWakeWord ships it as ONNX (Apache 2.0) in its
0.5 wheels, which `make install` installs without its dependencies. This module is its exact
port to PyTorch, weights read from those files, so that it trains in the platform's one loop
and exports like any network. Measured as a teacher: docs/benchmarks.md.

The pipeline, as the ONNX files compute it:
- the waveform at int16 scale (times ``input_gain_db``, 0 by default: chosen on validation);
- a 512-tap STFT every 10 ms (a convolution with the window in its weights), power, 32 mel
  bands, 10·log10 floored at 80 dB under the loudest value (per clip here; the ONNX file takes
  the loudest of its whole batch), then x / 10 + 2 (openWakeWord's match to the TF original);
- 20 convolutions with leaky ReLU (0.2) floored at −0.4 and 5 max-pools, over 76 frames:
  96 numbers per 775 ms window. Its time axis is convolutional with a stride of 8 frames, so
  one pass over a clip's frames gives the embedding of every window 80 ms apart, as the
  sliding windows would, computing each frame once where overlapping windows would compute it
  up to 9.5 times;
- the head (trained): layer norm, two convolutions over the windows, max over time, a linear
  layer. The input is padded with ``pad_ms`` of zeros either side, so a word anywhere in the
  clip fills some window.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distill.core.features import float_waveform

SAMPLE_RATE = 16_000
WINDOW_FRAMES, EMBEDDING_DIM = 76, 96
INPUT_GAIN_DB = 0.0  # on the waveform before the front end: see docs/benchmarks.md, chosen on validation
INSTALL_HINT = "pip install --no-deps openwakeword==0.5.1 (`make install` does)"


def package_dir(name: str) -> Path | None:
    """An installed package's folder, found without importing it (None when it is not installed):
    where a wheel that ships model files keeps them."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_files() -> tuple[Path, Path]:
    """openWakeWord 0.5's melspectrogram.onnx and embedding_model.onnx, or a clear error."""
    package = package_dir("openwakeword")  # located, not imported: its dependencies are not needed
    if package is None:
        raise RuntimeError(f"model speech_embedding needs openWakeWord's model files: {INSTALL_HINT}")
    models = package / "resources" / "models"
    files = models / "melspectrogram.onnx", models / "embedding_model.onnx"
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise RuntimeError(f"model speech_embedding: {missing} not found (openWakeWord 0.6 and later "
                           f"download them at run time): {INSTALL_HINT}")
    return files


def _onnx_graph(path: Path):
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    return graph, weights


class EmbeddingLogMel(nn.Module):
    """Waveform (batch, samples) at 16 kHz in [-1, 1] -> log-mel (batch, frames, 32) as the embedding expects."""

    def __init__(self, dft_real: np.ndarray, dft_imag: np.ndarray, mel: np.ndarray, gain_db: float = 0.0):
        super().__init__()
        self.scale = 32767.0 * 10 ** (gain_db / 20)  # int16 scale, as trained, times the input gain
        self.register_buffer("dft", torch.tensor(np.concatenate([dft_real, dft_imag]), dtype=torch.float32))
        self.register_buffer("mel", torch.tensor(mel, dtype=torch.float32))
        self.bins = dft_real.shape[0]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = F.conv1d(waveform.unsqueeze(1) * self.scale, self.dft, stride=160)
        power = spec[:, :self.bins] ** 2 + spec[:, self.bins:] ** 2
        db = 10.0 * torch.log10(torch.clamp(power.transpose(1, 2) @ self.mel, min=1e-10))
        db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80.0)
        return db / 10.0 + 2.0


class EmbeddingNet(nn.Module):
    """Log-mel (batch, frames, 32) -> embeddings (batch, windows, 96), one per 8 frames."""

    def __init__(self, layers: list[tuple[str, dict]]):
        super().__init__()
        self.layers = nn.ModuleList()
        for kind, spec in layers:
            if kind == "conv":
                conv = nn.Conv2d(spec["weight"].shape[1], spec["weight"].shape[0], spec["weight"].shape[2:],
                                 padding=spec["padding"], bias=spec["bias"] is not None)
                conv.weight.data.copy_(torch.tensor(spec["weight"]))
                if spec["bias"] is not None:
                    conv.bias.data.copy_(torch.tensor(spec["bias"]))
                self.layers.append(conv)
            else:
                self.layers.append(nn.MaxPool2d(spec["kernel"], spec["stride"]))
        self.activated = [isinstance(m, nn.Conv2d) and i < len(self.layers) - 1 for i, m in enumerate(self.layers)]

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = logmel.unsqueeze(1)
        for layer, activated in zip(self.layers, self.activated):
            x = layer(x)
            if activated:
                x = torch.clamp(F.leaky_relu(x, 0.2), min=-0.4)  # the TF model's leaky ReLU, then max(x, -0.4)
        return x.squeeze(-1).transpose(1, 2)


def load_embedding(gain_db: float = 0.0) -> tuple[EmbeddingLogMel, EmbeddingNet]:
    """The front end (``gain_db`` on its input) and the embedding network, their weights read
    from openWakeWord's ONNX files."""
    from onnx import helper

    mel_file, net_file = model_files()
    _, w = _onnx_graph(mel_file)
    frontend = EmbeddingLogMel(w["0.stft.conv_real.weight"], w["0.stft.conv_imag.weight"], w["1.melW"], gain_db)
    graph, w = _onnx_graph(net_file)
    layers = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            pads = attrs.get("pads", [0, 0, 0, 0])  # [time begin, mel begin, time end, mel end]
            layers.append(("conv", {"weight": w[node.input[1]], "padding": (pads[0], pads[1]),
                                    "bias": w[node.input[2]] if len(node.input) > 2 else None}))
        elif node.op_type == "MaxPool":
            layers.append(("pool", {"kernel": tuple(attrs["kernel_shape"]), "stride": tuple(attrs["strides"])}))
    if sum(kind == "conv" for kind, _ in layers) != 20 or layers[-1][1]["weight"].shape[0] != EMBEDDING_DIM:
        raise RuntimeError(f"{net_file}: not the speech embedding this port reads (20 convolutions to "
                           f"{EMBEDDING_DIM} numbers); {INSTALL_HINT}")
    return frontend, EmbeddingNet(layers)


def head_layers(dim: int, width: int, dropout: float, n_classes: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The trained head on a frozen sequence of ``dim`` numbers (this model's and ``moonshine``'s):
    layer norm, two convolutions over time, then (after the max over time) a linear layer. Held
    as a model's ``norm``, ``conv`` and ``out``, the names its checkpoints store."""
    conv = nn.Sequential(nn.Conv1d(dim, width, 3, padding=1), nn.ReLU(), nn.Dropout(dropout),
                         nn.Conv1d(width, width, 3, padding=1), nn.ReLU())
    return nn.LayerNorm(dim), conv, nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n_classes))


def head_logits(norm: nn.Module, conv: nn.Module, out: nn.Module, sequence: torch.Tensor) -> torch.Tensor:
    """(batch, steps, dim) -> logits: the head of ``head_layers``, max over time (a word anywhere)."""
    return out(conv(norm(sequence).transpose(1, 2)).amax(-1))


class SpeechEmbeddingSpotter(nn.Module):
    """Waveform -> logits: the frozen embedding and a trained head (see the module doc)."""

    takes_waveform = True  # KeywordSpotter hands it the waveform, not the platform's log-mel

    def __init__(self, n_classes: int, width: int = 128, dropout: float = 0.3, pad_ms: float = 400.0,
                 input_gain_db: float = INPUT_GAIN_DB):
        super().__init__()
        if not 0 <= pad_ms <= 2000:
            raise ValueError(f"pad_ms must be in [0, 2000], got {pad_ms}")
        if not -40 <= input_gain_db <= 120:
            raise ValueError(f"input_gain_db must be in [-40, 120] dB, got {input_gain_db}")
        self.pad = int(round(pad_ms * SAMPLE_RATE / 1000))
        self.frontend, self.embedding = load_embedding(input_gain_db)
        for p in [*self.frontend.parameters(), *self.embedding.parameters()]:
            p.requires_grad_(False)  # frozen: what it learned from human speech is what it is for
        self.norm, self.conv, self.out = head_layers(EMBEDDING_DIM, width, dropout, n_classes)

    def embed(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples), float in [-1, 1] or int16 samples -> (batch, windows, 96)."""
        # int16 read as float in [-1, 1]: else int16 values times the int16 scale, +90 dB, a level it never learned
        x = F.pad(float_waveform(waveform), (self.pad, self.pad))
        short = WINDOW_FRAMES * 160 + 512 - 160 - x.shape[-1]
        if short > 0:  # fewer frames than one window: pad the end to one
            x = F.pad(x, (0, short))
        with torch.autocast(x.device.type, enabled=False):  # int16-scale power overflows fp16: the front end stays fp32
            logmel = self.frontend(x.float())
        return self.embedding(logmel)

    def train(self, mode: bool = True) -> "SpeechEmbeddingSpotter":
        super().train(mode)
        self.frontend.eval(), self.embedding.eval()  # frozen: no dropout or batch statistics of its own either way
        return self

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            emb = self.embed(waveform)
        return head_logits(self.norm, self.conv, self.out, emb)
