"""Test-set evaluation of a model directory: accuracy and the confusion matrix under every
protocol, the keyword-spotting false-alarm figures (``distill.core.detection``), and the input
cost per decision (MACs, batch-1 CPU latency). A plain function, and the same as a Ray task
for running on a GPU of the cluster."""

from __future__ import annotations

from typing import Any

import numpy as np
import ray

from distill.names import PROTOCOLS


def worker_device(use_gpu: bool, setting: str):
    """The GPU where one was asked for (``setting`` names the config field that asked), else the
    CPU. A worker that was given a GPU but whose torch sees no CUDA device is refused: running on
    its CPU would hold the GPU idle and report CPU figures as GPU ones."""
    import torch

    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        import os

        raise RuntimeError(f"{setting} asks for a GPU, and Ray gave this worker one, but its torch "
                           f"({torch.__version__}, CUDA build {torch.version.cuda}) sees no CUDA device "
                           f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}): install a CUDA "
                           f"build of torch on the GPU nodes, or set {setting} to 0/false")
    return torch.device("cuda")


def evaluate_model_dir(model_dir: str, waveforms: np.ndarray, labels: np.ndarray, *, hop_samples: int, batch_size: int, threads: int = 1, use_gpu: bool = False,
                       latency_repeats: int = 50) -> dict[str, Any]:
    """Flat metrics (``test_acc_<protocol>``, ``test_fa_per_hour_at_90_recall``,
    ``test_recall_at_1_fa_per_hour``, ``macs``, ``latency_us``) plus ``confusion``: per protocol
    the matrix (true class × predicted class) as lists — not a metric, logged as an artifact.
    ``labels`` are class indices of the model's label set (whose ``_silence_`` the stream protocol knows)."""
    import torch

    from distill.core.checkpoint import load_model_dir
    from distill.core.detection import keyword_spotting_metrics
    from distill.core.models import count_macs, latency_per_decision
    from distill.runtime.infra import storage

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    device = worker_device(use_gpu, "train.use_gpu")
    model, spec = load_model_dir(storage.local_copy(model_dir), map_location=device)
    model.to(device)
    input_samples = spec.input_samples
    n_classes = len(spec.labels)
    out: dict[str, Any] = {"confusion": {}}
    posteriors, decisions = protocol_decisions(model, spec, waveforms, hop_samples=hop_samples, batch_size=batch_size,
                                               device=device)
    for protocol, pred in decisions.items():
        out[f"test_acc_{protocol}"] = float((pred == labels).mean()) if len(labels) else float("nan")
        confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(confusion, (np.asarray(labels, dtype=np.int64), pred.astype(np.int64)), 1)
        out["confusion"][protocol] = confusion.tolist()
    kws = keyword_spotting_metrics(model, spec, waveforms, np.asarray(labels), hop_samples, batch_size=batch_size,
                                   device=device, stream_posteriors=posteriors["stream"])
    if kws is not None:
        out.update({"test_fa_per_hour_at_90_recall": kws["fa_per_hour_at_recall"],
                    "test_recall_at_1_fa_per_hour": kws["recall_at_fa_budget"],
                    "test_negative_hours": kws["negative_hours"]})
    model = model.cpu()
    out["macs"] = count_macs(model, input_samples)
    out["latency_us"] = latency_per_decision(model, input_samples, repeats=latency_repeats) * 1e6
    torch.set_num_threads(previous_threads)
    return out


@ray.remote
def evaluate_task(model_dir: str, test: tuple[np.ndarray, np.ndarray], **kwargs) -> dict[str, Any]:
    return evaluate_model_dir(model_dir, test[0], test[1], **kwargs)


def protocol_decisions(model, spec, waveforms: np.ndarray, *, hop_samples: int, batch_size: int, device,
                       protocols: tuple[str, ...] = PROTOCOLS) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per protocol, a loaded model's window posteriors on ``waveforms`` and its decision per clip."""
    from distill.core.protocols import decide, protocol_starts, window_posteriors

    posteriors, decisions = {}, {}
    for protocol in protocols:
        starts = protocol_starts(waveforms, spec.input_samples, protocol, hop_samples)
        posteriors[protocol] = window_posteriors(model, waveforms, spec.input_samples, starts, batch_size=batch_size,
                                                 device=device)
        decisions[protocol] = decide(posteriors[protocol], protocol, spec.silence_index)
    return posteriors, decisions


def predict_model_dir(model_dir: str, waveforms: np.ndarray, *, hop_samples: int, batch_size: int, threads: int = 1,
                      protocols: tuple[str, ...] = PROTOCOLS, use_gpu: bool = False) -> dict[str, np.ndarray]:
    """Per-clip predicted class indices (of the model's label set) under each protocol: the
    decisions ``evaluate_model_dir`` scores, kept clip by clip (``pld study`` pairs them)."""
    import torch

    from distill.core.checkpoint import load_model_dir
    from distill.runtime.infra import storage

    if len(waveforms) == 0:
        return {protocol: np.zeros(0, np.int64) for protocol in protocols}
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        device = worker_device(use_gpu, "train.use_gpu")
        model, spec = load_model_dir(storage.local_copy(model_dir), map_location=device)
        model.to(device)
        _, decisions = protocol_decisions(model, spec, waveforms, hop_samples=hop_samples, batch_size=batch_size,
                                          device=device, protocols=protocols)
        return {protocol: pred.astype(np.int64) for protocol, pred in decisions.items()}
    finally:
        torch.set_num_threads(previous_threads)
