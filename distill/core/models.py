"""Keyword-spotting networks. Every model accepts any input length (global average pooling),
which is what lets one architecture serve each crop length of the PLD chain.

``res8`` follows Tang & Lin 2018, "Deep Residual Learning for Small-Footprint Keyword
Spotting": a 3×3 conv, a 4×3 average pool, three residual blocks of two 3×3 convs with
non-affine batch norm, global average pooling and a linear layer. ``res8_narrow`` is the
paper's 19-map variant. ``res15`` is the paper's most accurate network: no pooling, six residual
blocks and a 13th convolution, the i-th dilated 2^⌊i/3⌋ (45 maps, 238K parameters as in the paper
and in its authors' Honk; about 25× res8's MACs: a GPU's model).
``speech_embedding`` is a small head on a frozen speech embedding learned from human speech
(distill.core.speech_embedding): it takes the waveform, not the log-mel, and is a teacher's
network, not a student's. ``moonshine`` is the same kind of head on the frozen encoder of Moonshine,
a speech recogniser trained on human speech (distill.core.moonshine), run in onnxruntime: a
teacher's network, not exported. ``ensemble`` averages several networks' posteriors, each trained on its
own loss (distill.core.ensemble): a teacher's network. ``tiny`` exists for fast tests.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distill.core.augment import mix_styles
from distill.core.features import FeatureConfig, LogMel, float_waveform
from distill.core.registry import Registry

MODELS: Registry = Registry("model", plugins="pld.models")  # a package adds its own: registry.py


class Res8(nn.Module):
    """Tang & Lin's residual network: res8 (pool, 6 layers) and, with ``pool=None`` and
    ``dilate=True``, res15 (13 layers, the i-th dilated 2^⌊i/3⌋, padding kept to the dilation)."""

    def __init__(self, n_classes: int, channels: int = 45, pool: tuple[int, int] | None = (3, 4), n_layers: int = 6,
                 dilate: bool = False):
        super().__init__()
        # Features arrive as (batch, 1, mels, frames): the paper's 4×3 (time × freq) pool is (3, 4) here.
        self.conv0 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.pool = nn.AvgPool2d(pool) if pool else nn.Identity()
        dilation = [2 ** (i // 3) if dilate else 1 for i in range(n_layers)]
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=d, dilation=d, bias=False)
                                   for d in dilation)
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels, affine=False) for _ in range(n_layers))
        self.output = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv0(x)))
        residual = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns), start=1):
            y = F.relu(conv(x))
            if i % 2 == 0:  # every second layer closes a residual block
                y = y + residual
                residual = y
            x = bn(y)
        return self.output(x.mean(dim=(2, 3)))


class CausalRes8(nn.Module):
    """res8 made to stream, as Google's kws_streaming makes its models: every convolution pads
    time on the left only (causal), the pooling's time stride (5 frames) divides a 100 ms hop
    (10 frames), and the input is normalised by a batch norm, fixed after training, instead of by
    each window's own statistics (so ``features.normalize: none``). On a crop it is a windowed
    model like the others; ``core.streaming.CausalStream`` runs it on a stream, each hop computing
    only its new frames and columns, with the same answer as ``forward`` on all the audio so far
    with ``columns`` (the window's) averaged."""

    def __init__(self, n_classes: int, channels: int = 45, pool: tuple[int, int] = (3, 5), n_layers: int = 6):
        super().__init__()
        self.norm = nn.BatchNorm2d(1)  # one affine map of the log-mel after training: frame by frame
        self.conv0 = nn.Conv2d(1, channels, 3, padding=(1, 0), bias=False)  # time padded on the left, in forward
        self.pool = nn.AvgPool2d(pool)
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=(1, 0), bias=False)
                                   for _ in range(n_layers))
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels, affine=False) for _ in range(n_layers))
        self.output = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor, columns: int | None = None) -> torch.Tensor:
        """Features ``(batch, 1, mels, frames)`` → logits of the average of the last ``columns``
        time columns of the last layer (None: all of them, as in training)."""
        x = self.pool(F.relu(self.conv0(F.pad(self.norm(x), (2, 0)))))
        x, _ = self.residual_stack(x, [x.new_zeros(*x.shape[:3], 2)] * len(self.convs))
        x = x if columns is None else x[..., -columns:]
        return self.output(x.mean(dim=(2, 3)))

    def residual_stack(self, x: torch.Tensor, states: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The convolutions after the pooling on new columns ``x``, each causal: ``states`` holds
        each one's last two input columns before ``x`` (zeros: the causal padding at the start).
        Returns the last layer's columns and each convolution's state after ``x``."""
        residual, after = x, []
        for i, (conv, bn, state) in enumerate(zip(self.convs, self.bns, states), start=1):
            joined = torch.cat([state, x], dim=3)
            after.append(x if x.shape[3] == 2 else joined[..., -2:])  # a hop's two columns: no copy
            y = F.relu(conv(joined))
            if i % 2 == 0:  # every second layer closes a residual block
                y = y + residual
                residual = y
            x = bn(y)
        return x, after


class Tiny(nn.Module):
    """Two convolutions; enough to learn the synthetic corpus a little, fast enough for tests."""

    def __init__(self, n_classes: int, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, 2 * channels, 3, padding=1)
        self.output = nn.Linear(2 * channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        return self.output(x.mean(dim=(2, 3)))


@MODELS.register("res8")
def build_res8(n_classes: int, channels: int = 45) -> nn.Module:
    return Res8(n_classes, channels=channels)


@MODELS.register("res8_narrow")
def build_res8_narrow(n_classes: int, channels: int = 19) -> nn.Module:
    return Res8(n_classes, channels=channels)


@MODELS.register("res8_causal")
def build_res8_causal(n_classes: int, channels: int = 45) -> nn.Module:
    return CausalRes8(n_classes, channels=channels)


@MODELS.register("res8_narrow_causal")
def build_res8_narrow_causal(n_classes: int, channels: int = 19) -> nn.Module:
    return CausalRes8(n_classes, channels=channels)


@MODELS.register("res15")
def build_res15(n_classes: int, channels: int = 45) -> nn.Module:
    return Res8(n_classes, channels=channels, pool=None, n_layers=13, dilate=True)


@MODELS.register("speech_embedding")
def build_speech_embedding(n_classes: int, **options: Any) -> nn.Module:
    """Options: width, dropout, pad_ms, input_gain_db (distill.core.speech_embedding)."""
    from distill.core.speech_embedding import SpeechEmbeddingSpotter  # reads openWakeWord's files: only when asked
    return SpeechEmbeddingSpotter(n_classes, **options)


build_speech_embedding.takes_waveform = True  # known before it is built: the config refuses log-mel augmentations


@MODELS.register("moonshine")
def build_moonshine(n_classes: int, **options: Any) -> nn.Module:
    """Options: width, dropout, pad_ms (distill.core.moonshine)."""
    from distill.core.moonshine import MoonshineSpotter  # finds moonshine-cpp's encoder file: only when asked
    return MoonshineSpotter(n_classes, **options)


build_moonshine.takes_waveform = True
build_moonshine.exportable = False  # its encoder is an onnxruntime file (MoonshineSpotter.exportable_note)


@MODELS.register("ensemble")
def build_ensemble(n_classes: int, features: FeatureConfig, members: list[dict] | None = None,
                   combine: str = "mean", unknown_offset: float = 0.0, labels: list[str] | None = None,
                   speeds: list[float] | None = None) -> nn.Module:
    """Options: members, each {name, options, weight, lr_scale}; combine: mean or product;
    unknown_offset: added to the _unknown_ class's log-posterior; speeds: the playback speeds each
    member's answer is averaged over (distill.core.ensemble)."""
    from distill.core.ensemble import DEFAULT_MEMBERS, Ensemble
    return Ensemble(n_classes, [dict(m) for m in (members or DEFAULT_MEMBERS)], features, combine, unknown_offset,
                    labels, [1.0] if speeds is None else speeds)


build_ensemble.takes_waveform = True  # every member reads the waveform through its own front end
build_ensemble.takes_features = True  # build_model hands it the chain's features, for its members
build_ensemble.takes_labels = True  # and the model's labels, to find the class unknown_offset moves
build_ensemble.exportable = False  # a teacher's network (Ensemble.exportable_note says why)


def _check_ensemble_options(options: dict[str, Any]) -> None:
    from distill.core.ensemble import check_combine, check_members, check_speeds, check_unknown_offset
    unknown = set(options) - {"members", "combine", "unknown_offset", "speeds"}
    if unknown:
        raise ValueError(f"ensemble: unknown options {sorted(unknown)}; it takes members, combine, unknown_offset "
                         "and speeds")
    if "members" in options:
        check_members(options["members"])
    if "combine" in options:
        check_combine(options["combine"])
    if "unknown_offset" in options:
        check_unknown_offset(options["unknown_offset"])
    if "speeds" in options:
        check_speeds(options["speeds"])


build_ensemble.check_options = _check_ensemble_options  # the config checks them before any work starts


def _ensemble_option_defaults() -> dict[str, Any]:
    from distill.core.ensemble import CONFIG_COMBINE
    return {"combine": CONFIG_COMBINE, "unknown_offset": 0.0, "speeds": [1.0]}


build_ensemble.option_defaults = _ensemble_option_defaults  # written into the config: its runs record the rule


@MODELS.register("tiny")
def build_tiny(n_classes: int, channels: int = 8) -> nn.Module:
    return Tiny(n_classes, channels=channels)


class KeywordSpotter(nn.Module):
    """Waveform ``(batch, samples)`` → logits: the front end and the network as one module,
    so a checkpoint, an MLflow model and an evaluation all see the same thing."""

    def __init__(self, net: nn.Module, features: FeatureConfig):
        super().__init__()
        self.features = LogMel(features)
        self.net = net

    def forward(self, waveform: torch.Tensor, feature_mask: torch.Tensor | None = None,
                frequency_warp: torch.Tensor | None = None,
                style_mix: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``feature_mask`` (training only: SpecAugment) is True where a log-mel value is set to 0,
        the per-input mean; ``frequency_warp`` (training only) a warp factor per input;
        ``style_mix`` (training only: Freq-MixStyle) each input's partner and own weight. All go
        through ``forward`` so that a DDP-wrapped model sees them."""
        if takes_waveform(self.net):
            if feature_mask is not None or frequency_warp is not None or style_mix is not None:
                raise ValueError(f"{type(self.net).__name__} takes the waveform: SpecAugment, the frequency warp "
                                 "and Freq-MixStyle act on the log-mel it does not use; turn them off "
                                 "(train.augment.spec_*_masks, warp_prob, mixstyle_prob)")
            return self.net(float_waveform(waveform))  # its own front end reads float in [-1, 1], as LogMel does
        feats = self.features(waveform, frequency_warp)
        if style_mix is not None:
            feats = mix_styles(feats, *style_mix)
        if feature_mask is not None:
            feats = feats.masked_fill(feature_mask.to(feats.device), 0.0)
        return self.net(feats)

    def net_input(self, waveform: torch.Tensor) -> torch.Tensor:
        """What the network reads: the log-mel of ``waveform``, or the waveform for a net that takes it."""
        return float_waveform(waveform) if takes_waveform(self.net) else self.features(waveform)


def takes_waveform(net: nn.Module) -> bool:
    """A network with its own front end (``takes_waveform = True``) is handed the waveform."""
    return bool(getattr(net, "takes_waveform", False))


def build_model(name: str, n_classes: int, options: dict[str, Any] | None = None,
                features: FeatureConfig | None = None, labels: list[str] | None = None) -> KeywordSpotter:
    """Build a registered network behind the log-mel front end (``labels``: the class names, for a
    network that needs them)."""
    builder = MODELS.get(name)
    features = features or FeatureConfig()
    if getattr(builder, "takes_features", False):  # an ensemble builds its members' front ends
        options = {**(options or {}), "features": features}
    if getattr(builder, "takes_labels", False):
        options = {**(options or {}), "labels": labels}
    try:
        net = builder(n_classes, **(options or {}))
    except TypeError as exc:
        raise ValueError(f"model {name!r}: bad options {options!r}: {exc}") from None
    return KeywordSpotter(net, features)


def count_macs(model: KeywordSpotter, input_samples: int) -> int:
    """Multiply-accumulates of the network for one decision on ``input_samples`` of audio,
    counted by ``torch.utils.flop_counter`` (FLOPs / 2). The log-mel front end is excluded,
    as in the KWS literature, since it is shared by every model."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad():
        feats = model.net_input(torch.zeros(1, input_samples))
        counter = FlopCounterMode(display=False)
        with counter:
            model.net(feats)
    model.train(was_training)
    return counter.get_total_flops() // 2


def latency_per_decision(model: KeywordSpotter, input_samples: int, repeats: int = 50, warmup: int = 10) -> float:
    """Median wall time (seconds) of one decision — front end and network, batch 1, one CPU
    thread — over ``repeats`` runs after ``warmup`` runs. One thread so that figures taken
    in different processes (a driver, a worker given two CPUs) compare."""
    import statistics
    import time

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    was_training = model.training
    model.eval()
    x = torch.zeros(1, input_samples).normal_(0, 1000, generator=torch.Generator().manual_seed(0))
    times = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                t = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return statistics.median(times)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device | str, precision: str):
    """The forward pass at ``precision`` (fp32: a no-op). bf16 runs on CPUs and GPUs; fp16 is for
    GPUs, where training pairs it with a gradient scaler."""
    dtype = PRECISIONS[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype is not None)
