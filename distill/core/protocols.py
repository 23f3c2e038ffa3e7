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

from distill.names import PROTOCOLS
from distill.core.crops import cut_crops



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


def protocol_starts(waveforms: np.ndarray, input_samples: int, protocol: str, hop_samples: int = 1600) -> np.ndarray:
    """(clips, windows) start offsets of the windows a protocol shows the model."""
    n, clip_samples = waveforms.shape
    if protocol == "window":
        return loudest_window_starts(waveforms, input_samples)[:, None]
    if protocol == "center":
        return np.full((n, 1), (clip_samples - input_samples) // 2)
    if protocol == "stream":
        return np.tile(np.asarray(window_starts(clip_samples, input_samples, hop_samples)), (n, 1))
    raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOLS}")


@torch.no_grad()
def window_posteriors(model: Callable[[torch.Tensor], torch.Tensor], waveforms: np.ndarray, input_samples: int,
                      starts: np.ndarray, *, batch_size: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
    """Softmax posteriors (clips, windows, classes) of the windows at ``starts`` (clips, windows),
    ``batch_size`` windows per forward pass whatever the number of windows per clip."""
    out = [torch.softmax(model(x.to(device)).float(), dim=-1).cpu()
           for x in window_batches(waveforms, input_samples, starts, batch_size)]
    return torch.cat(out).reshape(*starts.shape, -1)


def window_batches(waveforms: np.ndarray, input_samples: int, starts: np.ndarray, batch_size: int):
    """The windows at ``starts`` (clips, windows), clip by clip, ``batch_size`` to a tensor."""
    n, n_windows = starts.shape
    rows, offsets = np.repeat(np.arange(n), n_windows), starts.reshape(-1)
    for lo in range(0, len(offsets), batch_size):
        yield torch.from_numpy(cut_crops(waveforms, offsets[lo:lo + batch_size], input_samples, rows[lo:lo + batch_size]))


def predict(model: Callable[[torch.Tensor], torch.Tensor], waveforms: np.ndarray, input_samples: int,
            protocol: str, *, hop_samples: int = 1600, silence_index: int | None = None,
            batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """Class predictions for clips ``waveforms`` (clips, samples; int16 or float) under ``protocol``."""
    starts = protocol_starts(waveforms, input_samples, protocol, hop_samples)
    post = window_posteriors(model, waveforms, input_samples, starts, batch_size=batch_size, device=device)
    return decide(post, protocol, silence_index)


def decide(posteriors: torch.Tensor, protocol: str, silence_index: int | None) -> np.ndarray:
    """One class per clip from its windows' posteriors (clips, windows, classes) under ``protocol``."""
    return (stream_decision(posteriors, silence_index) if protocol == "stream" else posteriors[:, 0].argmax(-1)).numpy()

