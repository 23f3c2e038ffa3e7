"""Test-set evaluation of a model directory under every protocol: a plain function, and the
same as a Ray task for running on a GPU of the cluster."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from distill.protocols import PROTOCOLS


def evaluate_model_dir(model_dir: str, waveforms: np.ndarray, labels: np.ndarray, *, hop_samples: int,
                       silence_index: int | None, batch_size: int, threads: int = 1, use_gpu: bool = False) -> dict[str, Any]:
    import torch

    from distill.checkpoint import load_model_dir
    from distill.features import num_samples
    from distill.models import count_macs
    from distill.protocols import predict

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    model, spec = load_model_dir(model_dir, map_location=device)
    model.to(device)
    input_samples = num_samples(spec.input_ms, spec.features["sample_rate"])
    out: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        pred = predict(model, waveforms, input_samples, protocol, hop_samples=hop_samples, silence_index=silence_index,
                       batch_size=batch_size, device=device)
        out[f"test_acc_{protocol}"] = float((pred == labels).mean()) if len(labels) else float("nan")
    out["macs"] = count_macs(model.cpu(), input_samples)
    torch.set_num_threads(previous_threads)
    return out


@ray.remote
def evaluate_task(model_dir: str, test: tuple[np.ndarray, np.ndarray], **kwargs) -> dict[str, Any]:
    return evaluate_model_dir(model_dir, test[0], test[1], **kwargs)
