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

from distill.core.features import FoldedLogMel, float_waveform, log_and_normalize
from distill.core.models import KeywordSpotter


def hop_chunk(chunk: torch.Tensor, hop: int) -> torch.Tensor:
    """A hop's new audio as ``(batch, hop)`` float (int16 read as LogMel reads it), or a ValueError."""
    chunk = float_waveform(chunk)
    if chunk.dim() == 1:
        chunk = chunk.unsqueeze(0)
    if chunk.shape[1] != hop:
        raise ValueError(f"a chunk of {chunk.shape[1]} samples: this stream moves {hop} at a time")
    return chunk


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
        chunk = hop_chunk(chunk, self.hop)
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
        features = log_and_normalize(self.mel.transpose(1, 2), f.cfg.normalize, f.smoothing)
        return torch.softmax(self.net(features), dim=-1)


class CausalStream:
    """A ``CausalRes8`` on a stream, as kws_streaming runs its streaming models: every layer keeps
    what its next output needs of its past (the front end the audio of a frame's taps, each
    causal convolution its last two input columns, the pooling the frames of an unfinished
    column, the output the last ``columns`` columns of the final layer), so a hop computes only
    its new frames and columns. ``step(chunk)`` with ``chunk`` ``(batch, hop_samples)`` →
    posteriors ``(batch, classes)`` of the last window, or None until a window of columns exists.

    Its answer after any hop equals the network's ``forward`` on the features of all the audio
    so far (their frames whose taps the audio holds) with the window's columns averaged: the same
    function, computed once per frame instead of once per window."""

    def __init__(self, model: KeywordSpotter, input_samples: int, hop_samples: int):
        from distill.core.models import CausalRes8

        net = model.net
        if not isinstance(net, CausalRes8):
            raise ValueError(f"{type(net).__name__} is not a streaming network: choose res8_causal or "
                             "res8_narrow_causal (StreamingSpotter runs the windowed ones)")
        if model.features.cfg.normalize != "none":
            raise ValueError(f"features.normalize is {model.features.cfg.normalize!r}: a streaming network reads "
                             "features no window's statistics changed; train it with features.normalize: none")
        self.front = FoldedLogMel(model.features)
        self.net = net.eval()
        self.pool_frames = net.pool.kernel_size[1]
        if hop_samples % (self.front.hop * self.pool_frames):
            raise ValueError(f"hop of {hop_samples} samples: must be whole pooled columns of "
                             f"{self.front.hop * self.pool_frames} samples")
        self.columns = model.features.frames(input_samples) // self.pool_frames  # the window's, as trained
        self.hop = hop_samples
        self.reset()

    def reset(self) -> None:
        self.audio: torch.Tensor | None = None  # reflect-padded stream from the next frame's first tap
        self.pending: torch.Tensor | None = None  # conv0 outputs of the unfinished column
        self.states: list[torch.Tensor] | None = None  # each causal convolution's last two input columns
        self.window: torch.Tensor | None = None  # the last layer's columns, averaged over frequency

    @torch.inference_mode()
    def step(self, chunk: torch.Tensor) -> torch.Tensor | None:
        chunk = hop_chunk(chunk, self.hop)
        f, net = self.front, self.net
        if self.audio is None:  # the stream's start is reflected as the windowed front end reflects it
            self.audio = torch.nn.functional.pad(chunk.unsqueeze(1), (f.left, 0), mode="reflect").squeeze(1)
        else:
            self.audio = torch.cat([self.audio, chunk], dim=1)
        width = f.blocks * f.hop
        n = (self.audio.shape[1] - width) // f.hop + 1 if self.audio.shape[1] >= width else 0
        if n <= 0:
            return None
        frames = self.audio[:, :f.hop * (n - 1) + width].unfold(1, width, f.hop)
        self.audio = self.audio[:, f.hop * n:]
        x = log_and_normalize(f.mel(frames).transpose(1, 2), "none", f.smoothing)  # (batch, 1, mels, n)
        x = net.norm(x)
        batch = x.shape[0]
        if self.states is None:  # zeros: what the causal padding puts before the stream
            self.states = [x.new_zeros(batch, 1, x.shape[2], 2)]
        x, self.states[0] = _causal(net.conv0, self.states[0], x)
        x = torch.relu(x)
        x = x if self.pending is None else torch.cat([self.pending, x], dim=3)
        whole = x.shape[3] // self.pool_frames * self.pool_frames
        self.pending = x[..., whole:]
        if not whole:
            return self._answer()
        x = net.pool(x[..., :whole])
        if len(self.states) == 1:
            self.states += [x.new_zeros(batch, x.shape[1], x.shape[2], 2) for _ in net.convs]
        x, self.states[1:] = net.residual_stack(x, self.states[1:])
        new = x.mean(dim=2)  # (batch, channels, new columns)
        self.window = new if self.window is None else torch.cat([self.window, new], dim=2)[..., -self.columns:]
        return self._answer()

    def _answer(self) -> torch.Tensor | None:
        if self.window is None or self.window.shape[2] < self.columns:
            return None
        return torch.softmax(self.net.output(self.window.mean(dim=2)), dim=-1)


def _causal(conv: torch.nn.Conv2d, state: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """conv0's new columns, causal, and its state after them: the input's last two columns (those
    before ``x`` come from ``state``); the convolutions after it: ``CausalRes8.residual_stack``."""
    joined = torch.cat([state, x], dim=3)
    return conv(joined), joined[..., -2:]


class CausalStep(torch.nn.Module):
    """One steady-state hop of ``CausalStream`` as a module of tensors in and out, the form an
    ONNX file takes (``core.stream_export.export_stream_step``): ``forward(chunk, *state)`` →
    ``(posteriors, *new_state)``, every state a fixed shape but the batch (``state_shapes``).
    The state is the stream's: the audio of the frames to come, conv0's last two input frames,
    the frames of the unfinished column, each convolution's last two input columns, and the last
    window's columns. From all-zero state (``zero_state``) its answers equal ``CausalStream``'s
    once the zeros have left the network's reach (``warmup_hops``)."""

    def __init__(self, model: KeywordSpotter, input_samples: int, hop_samples: int):
        super().__init__()
        probe = CausalStream(model, input_samples, hop_samples)  # the shapes a warm stream's state has
        self.front, self.net = probe.front, probe.net
        self.frames_per_hop = hop_samples // self.front.hop
        self.columns, self.pool_frames = probe.columns, probe.pool_frames
        chunk = torch.zeros(1, hop_samples)
        while probe.step(chunk) is None:
            pass
        probe.step(chunk)
        self.tail, self.pending = probe.audio.shape[1], probe.pending.shape[3]
        channels, mels, bands = self.net.output.in_features, probe.states[0].shape[2], probe.states[1].shape[2]
        self.state_shapes = [(self.tail,), (1, mels, 2), (channels, mels, self.pending),
                             *[(channels, bands, 2)] * len(self.net.convs), (channels, self.columns)]
        self.hop = hop_samples

    def zero_state(self, batch: int = 1) -> list[torch.Tensor]:
        return [torch.zeros(batch, *shape) for shape in self.state_shapes]

    def warmup_hops(self) -> int:
        """Hops after which nothing of the starting state reaches the answer: the window's
        columns and, behind each, the receptive field of the layers and the buffered frames."""
        reach_columns = self.columns + 2 * len(self.net.convs) + 1
        reach_frames = reach_columns * self.pool_frames + 2 + self.pending + -(-self.tail // self.front.hop)
        return -(-reach_frames // self.frames_per_hop) + 1

    def forward(self, chunk: torch.Tensor, tail: torch.Tensor, conv0: torch.Tensor, pending: torch.Tensor,
                *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f, net, n = self.front, self.net, self.frames_per_hop
        audio = torch.cat([tail, chunk], dim=1)
        blocks = audio[:, :f.hop * (n - 1 + f.blocks)].reshape(-1, n - 1 + f.blocks, f.hop)  # a constant shape
        frames = torch.cat([blocks[:, i:i + n] for i in range(f.blocks)], dim=2)  # frame i: blocks i .. i + blocks - 1
        x = net.norm(log_and_normalize(f.mel(frames).transpose(1, 2), "none", f.smoothing))
        x, conv0 = _causal(net.conv0, conv0, x)
        x = torch.cat([pending, torch.relu(x)], dim=3)
        whole = (self.pending + n) // self.pool_frames * self.pool_frames  # a constant, not the graph's arithmetic
        x, pending = torch.split(x, [whole, self.pending + n - whole], dim=3)
        x, states = net.residual_stack(net.pool(x), list(rest[:-1]))
        window = torch.cat([rest[-1], x.mean(dim=2)], dim=2)[..., -self.columns:]
        posteriors = torch.softmax(net.output(window.mean(dim=2)), dim=-1)
        return (posteriors, audio[:, f.hop * n:], conv0, pending, *states, window)
