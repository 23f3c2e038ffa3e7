"""A keyword spotter on a stream: one decision every hop (100 ms), each on the last ``input_samples``
of audio, equal to the network run on that window.

``StreamingSpotter`` keeps the window's audio and the mel power of its frames between hops. A hop
computes the log-mel frames of its new audio only, plus the few at the window's two ends whose
reflect padding moved with the window (at 500 ms and a 100 ms hop: 14 of 51 frames); every other
frame is the previous window's, shifted. The per-window normalisation and the network then run on
the whole window, as they must to give the windowed model's answer:

- the features are normalised by the window's own mean and deviation (``utterance``/``band``), so
  every frame of every layer changes when the window moves;
- the convolutions pad each window with zeros in time, so the edges' reach grows one column a
  layer from both ends: at 500 ms res8's six convolutions after the pooling reach all of its 12
  time columns;
- res8's pooling takes 4 frames a column and a 100 ms hop moves 10: consecutive windows' columns
  do not line up.

So a network whose layers keep ring buffers of past frames (Google's kws_streaming) computes
something else than these networks do on a window: it needs one trained for it (causal time
padding, a hop that is a multiple of the pooling's, no per-window normalisation). What is shared
exactly between windows is the front end's work; docs/benchmarks.md ("Latency per decision")
gives what that saves per hop.
"""

from __future__ import annotations

import torch

from distill.core.features import FoldedLogMel, log_and_normalize
from distill.core.models import KeywordSpotter


class StreamingSpotter:
    """``spotter.step(chunk)`` with ``chunk`` ``(batch, hop_samples)`` of new audio (float, or int16
    read as LogMel reads it) → posteriors ``(batch, classes)`` of the last ``input_samples``, or
    None until that much audio has arrived. ``reset()`` starts a new stream."""

    def __init__(self, model: KeywordSpotter, input_samples: int, hop_samples: int):
        self.front = FoldedLogMel(model.features)
        self.net = model.net.eval()
        frame_hop = self.front.hop
        if hop_samples % frame_hop:
            raise ValueError(f"hop of {hop_samples} samples: must be whole feature frames of {frame_hop}")
        if hop_samples >= input_samples:
            raise ValueError(f"hop of {hop_samples} samples: shorter than the window ({input_samples})")
        self.n, self.hop = input_samples, hop_samples
        shift, frames = hop_samples // frame_hop, input_samples // frame_hop + 1
        taps = 2 * self.front.half + 1

        def inside(f: int) -> bool:  # all of frame f's taps on the window's own audio, no reflection
            return frame_hop * f - self.front.left >= 0 and frame_hop * f + taps - 1 - self.front.left <= input_samples - 1

        kept = [f for f in range(frames - shift) if inside(f) and inside(f + shift)]
        self.kept = range(kept[0], kept[-1] + 1) if kept else range(0)  # new frame f = old frame f + shift
        self.shift, self.frames = shift, frames
        self.reset()

    def reset(self) -> None:
        self.audio: torch.Tensor | None = None  # the window's samples (fewer until the first window is full)
        self.mel: torch.Tensor | None = None  # (batch, frames, n_mels) of the window in ``audio``

    def computed_frames(self) -> int:
        """Frames whose mel power a hop computes (after the first window)."""
        return self.frames - len(self.kept)

    def _frames(self, padded: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Frames [lo, hi) of the reflect-padded window ``(batch, hi - lo, blocks · hop)``."""
        h, width = self.front.hop, self.front.blocks * self.front.hop
        return padded[:, h * lo:h * (hi - 1) + width].unfold(1, width, h)

    @torch.inference_mode()
    def step(self, chunk: torch.Tensor) -> torch.Tensor | None:
        if chunk.dtype == torch.int16:
            chunk = chunk.float() / 32768.0
        if chunk.dim() == 1:
            chunk = chunk.unsqueeze(0)
        if chunk.shape[1] != self.hop:
            raise ValueError(f"a chunk of {chunk.shape[1]} samples: this stream moves {self.hop} at a time")
        full = self.audio is not None and self.audio.shape[1] == self.n
        self.audio = chunk if self.audio is None else torch.cat([self.audio[:, -(self.n - self.hop):], chunk], dim=1)
        if self.audio.shape[1] < self.n:
            return None
        f = self.front
        padded = torch.nn.functional.pad(self.audio.unsqueeze(1), (f.left, f.right), mode="reflect").squeeze(1)
        if not full or self.mel is None or not len(self.kept):
            self.mel = f.mel(self._frames(padded, 0, self.frames))
        else:  # the frames before and after the kept ones, through the front end at once
            lo, hi = self.kept.start, self.kept.stop
            new = f.mel(torch.cat([self._frames(padded, 0, lo), self._frames(padded, hi, self.frames)], dim=1))
            self.mel = torch.cat([new[:, :lo], self.mel[:, lo + self.shift:hi + self.shift], new[:, lo:]], dim=1)
        features = log_and_normalize(self.mel.transpose(1, 2), f.cfg.normalize)
        return torch.softmax(self.net(features), dim=-1)
