"""A model directory: ``model.pt`` (state dict, loaded with ``weights_only=True`` so a
checkpoint can never run code) and ``model.json`` (how to rebuild the network and what its
outputs mean). Ray Train checkpoints, relabel actors and evaluation all use this format."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from distill.core.features import FeatureConfig, num_samples
from distill.core.models import KeywordSpotter, build_model
from distill.names import SILENCE

WEIGHTS, SPEC = "model.pt", "model.json"


@dataclass
class ModelSpec:
    model: str
    options: dict[str, Any]
    labels: list[str]
    input_ms: int
    features: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. epoch, validation accuracy

    @property
    def input_samples(self) -> int:
        """Samples of audio in one of the model's decisions."""
        return num_samples(self.input_ms, self.features["sample_rate"])

    @property
    def silence_index(self) -> int | None:
        """The class the stream protocol treats as "no keyword here", if the model has one."""
        return self.labels.index(SILENCE) if SILENCE in self.labels else None

    def build(self) -> KeywordSpotter:
        return build_model(self.model, len(self.labels), self.options, FeatureConfig(**self.features), self.labels)


def save_model_dir(path: str | Path, model: torch.nn.Module, spec: ModelSpec) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, path / WEIGHTS)
    (path / SPEC).write_text(json.dumps(asdict(spec), indent=2))
    return path


def load_model_dir(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[KeywordSpotter, ModelSpec]:
    path = Path(path)
    if not (path / WEIGHTS).is_file() or not (path / SPEC).is_file():
        raise FileNotFoundError(f"{path}: not a model directory (needs {WEIGHTS} and {SPEC})")
    spec = ModelSpec(**json.loads((path / SPEC).read_text()))
    model = spec.build()
    try:
        state = torch.load(path / WEIGHTS, map_location=map_location, weights_only=True)
    except Exception as exc:  # the unpickler refuses anything but tensors and plain containers
        raise ValueError(f"{path / WEIGHTS}: refused to load (not a plain state dict): {exc}") from None
    model.load_state_dict(state)
    return model.eval(), spec
