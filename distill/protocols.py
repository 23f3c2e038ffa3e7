"""Evaluation protocols for a model of input length L on 1 s clips (ground-truth labels).

- ``window``: the L-sample window of the clip with the highest energy.
- ``stream``: slide over the clip with a hop (100 ms by default; the last window flush with
  the end); the clip's prediction is the non-silence class with the highest posterior in any
  window, or silence when every window's top class is silence — how a streaming keyword
  spotter fires.
- ``center``: the centred window.
The 1000 ms teacher sees the whole clip in all three.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

PROTOCOLS = ("window", "stream", "center")


def window_starts(clip_samples: int, window_samples: int, hop_samples: int) -> list[int]:
    """Starts of a sliding window with the last window flush with the clip's end."""
    if window_samples > clip_samples:
        raise ValueError(f"window of {window_samples} samples is longer than the clip ({clip_samples})")
    last = clip_samples - window_samples
    starts = list(range(0, last + 1, hop_samples))
    if starts[-1] != last:
        starts.append(last)
    return starts


def loudest_window_starts(waveforms: np.ndarray, window_samples: int) -> np.ndarray:
    """Per clip, the start of the window with the highest energy (exact, at sample resolution)."""
    energy = np.cumsum(np.square(waveforms.astype(np.float64)), axis=1)
    energy = np.concatenate([np.zeros((len(waveforms), 1)), energy], axis=1)
    window_energy = energy[:, window_samples:] - energy[:, :-window_samples]
    return window_energy.argmax(axis=1)


def stream_decision(posteriors: torch.Tensor, silence_index: int | None) -> torch.Tensor:
    """posteriors (clips, windows, classes) → one class per clip (see module doc)."""
    if silence_index is None:
        return posteriors.max(dim=1).values.argmax(dim=-1)
    top = posteriors.argmax(dim=-1)  # (clips, windows)
    all_silence = (top == silence_index).all(dim=1)
    masked = posteriors.clone()
    masked[..., silence_index] = -1.0
    best = masked.max(dim=1).values.argmax(dim=-1)
    return torch.where(all_silence, torch.full_like(best, silence_index), best)


@torch.no_grad()
def predict(model: Callable[[torch.Tensor], torch.Tensor], waveforms: np.ndarray, input_samples: int,
            protocol: str, *, hop_samples: int = 1600, silence_index: int | None = None,
            batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """Class predictions for clips ``waveforms`` (clips, samples; int16 or float) under ``protocol``."""
    n, clip_samples = waveforms.shape
    if protocol == "window":
        starts = loudest_window_starts(waveforms, input_samples)[:, None]
    elif protocol == "center":
        starts = np.full((n, 1), (clip_samples - input_samples) // 2)
    elif protocol == "stream":
        starts = np.tile(np.asarray(window_starts(clip_samples, input_samples, hop_samples)), (n, 1))
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")
    n_windows = starts.shape[1]
    index = starts.reshape(n, n_windows, 1) + np.arange(input_samples).reshape(1, 1, -1)
    out = []
    for lo in range(0, n, max(1, batch_size // n_windows)):
        hi = min(n, lo + max(1, batch_size // n_windows))
        windows = np.take_along_axis(waveforms[lo:hi, None, :], index[lo:hi], axis=2)
        x = torch.from_numpy(windows.reshape(-1, input_samples)).to(device)
        post = torch.softmax(model(x).float(), dim=-1).reshape(hi - lo, n_windows, -1).cpu()
        out.append(stream_decision(post, silence_index) if protocol == "stream" else post[:, 0].argmax(-1))
    return torch.cat(out).numpy()


def accuracy(model, waveforms: np.ndarray, labels: np.ndarray, input_samples: int, protocol: str, **kwargs) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((predict(model, waveforms, input_samples, protocol, **kwargs) == labels).mean())
