"""The training recipe of a stage, in plain PyTorch: the optimizer and its one-cycle schedule,
one training epoch (augmentation, the hard, soft or mixed-label loss, precision), validation,
weight averaging, and the state a checkpoint holds to continue.

This is the one training loop. ``runtime/execution/train.py`` runs it under Ray Train and adds only what
Ray adds (a dataset shard, the all-reduce of counts, reports, checkpoints and restarts);
``benchmarks/throughput.py`` runs it without Ray to measure what Ray costs.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_swa_avg_fn

from distill.core.augment import (AugmentConfig, NoiseBank, RoomBank, augment_waveforms, batch_generator,
                                  frequency_warps, mix_inputs, mixups, spectrogram_masks,
                                  style_mixes)
from distill.core.labels import LabelSpec, student_loss
from distill.core.models import autocast
from distill.core.protocols import decide, protocol_starts, window_batches

class TrainConfig(Protocol):
    """What the loop reads of a stage's training settings: the config's ``train`` section (with
    the stage's own settings over it) has these. Core does not import the config."""
    optimizer: str  # sgd or adamw
    lr: float
    momentum: float
    weight_decay: float
    precision: str  # fp32, bf16 or fp16
    keep: str  # best or average
    augment: AugmentConfig


class StageSpec(Protocol):
    """What the loop reads of a stage (``stages.StageSpec``): the seed of its augmentation and
    the labels its loss reads."""
    seed: int
    labels: LabelSpec


def parameter_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """The optimizer's groups: one at ``lr``, or the network's own (an ensemble's members, each
    at its ``lr_scale``)."""
    net = getattr(getattr(model, "module", model), "net", None)  # a KeywordSpotter's network, DDP-wrapped or not
    if hasattr(net, "parameter_groups"):
        return net.parameter_groups(lr)
    return [{"params": list(model.parameters()), "lr": lr}]


def configure_optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay), or SGD with Nesterov momentum and L2 (Honk's recipe)."""
    groups = parameter_groups(model, train.lr)
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum, nesterov=True,
                               weight_decay=train.weight_decay)
    return torch.optim.AdamW(groups, lr=train.lr, weight_decay=train.weight_decay)


def configure_schedule(optimizer: torch.optim.Optimizer, train: TrainConfig,
                       total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """One cycle over the stage: 15 % warm-up to each group's learning rate (``train.lr``), then
    cosine decay. SGD keeps the momentum it is given; AdamW's beta1 follows the cycle."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                               total_steps=total_steps + 1, pct_start=0.15,
                                               cycle_momentum=train.optimizer != "sgd")


@dataclass
class Fit:
    """What a stage's training carries from epoch to epoch. ``model`` is what the steps call
    (DDP-wrapped on several workers), ``net`` the network itself."""
    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.OneCycleLR
    scaler: torch.amp.GradScaler
    averaged: AveragedModel | None  # keep: average
    history: list[dict] = field(default_factory=list)
    start_epoch: int = 0


def start_fit(model: torch.nn.Module, train: TrainConfig, *, epochs: int, steps_per_epoch: int,
              device: torch.device) -> Fit:
    net = model.module if hasattr(model, "module") else model
    optimizer = configure_optimizer(model, train)
    # fp16 gradients underflow without scaling; bf16 has fp32's range and needs none
    scaler = torch.amp.GradScaler(device.type, enabled=train.precision == "fp16")
    schedule = configure_schedule(optimizer, train, epochs * steps_per_epoch)
    # keep: average: the last average_epochs epochs' weights, batch-norm statistics included
    # avg_fn: one tensor at a time on every device. Without it, CUDA takes torch's _foreach path,
    # which refuses the integer buffers (batch norm's num_batches_tracked) from the second update.
    averaged = AveragedModel(net, use_buffers=True, avg_fn=get_swa_avg_fn()) if train.keep == "average" else None
    return Fit(model, net, optimizer, schedule, scaler, averaged)


def steps_per_epoch(rows: int, world: int, batch_size: int) -> int:
    return max(1, math.ceil(rows / world / batch_size))


def fit_state(fit: Fit, epoch: int) -> dict:
    """What a checkpoint holds to continue after ``epoch``: the trained (not averaged) weights,
    optimizer, schedule, history and the running average."""
    return {"model": fit.net.state_dict(), "optimizer": fit.optimizer.state_dict(),
            "schedule": fit.schedule.state_dict(), "epoch": epoch, "history": fit.history,
            **({"averaged": fit.averaged.state_dict()} if fit.averaged is not None else {})}


def load_fit_state(fit: Fit, state: dict) -> None:
    """Continue from ``fit_state``'s dict: the next epoch is the one after the saved one."""
    fit.net.load_state_dict(state["model"])
    fit.optimizer.load_state_dict(state["optimizer"])
    fit.schedule.load_state_dict(state["schedule"])
    fit.start_epoch, fit.history = state["epoch"] + 1, state["history"]
    if fit.averaged is not None and "averaged" in state:
        fit.averaged.load_state_dict(state["averaged"])


@dataclass(frozen=True)
class Augmentation:
    """What ``train.augment`` mixes in, on the training device, and the features' geometry
    SpecAugment masks. ``noise``/``rooms``: None when the augmentation is off."""
    noise: NoiseBank | None
    rooms: RoomBank | None
    sample_rate: int
    hop_ms: float
    n_mels: int


def train_epoch(fit: Fit, batches: Iterable[dict[str, torch.Tensor]], stage: StageSpec, train: TrainConfig,
                augmentation: Augmentation, *, epoch: int, rank: int, device: torch.device) -> tuple[float, int]:
    """One pass over ``batches`` (dicts of ``waveform``, ``teacher_label_index``,
    ``teacher_probs``, ``source_label_index`` on ``device``); returns (summed loss, samples).
    Augmentation draws from a generator private to (seed, epoch, rank, batch): a restart
    draws the same."""
    fit.model.train()
    total_loss, seen = 0.0, 0
    for step, batch in enumerate(batches):
        waves, mask, warp, mix, mixup = batch["waveform"], None, None, None, None
        if train.augment.active:  # on the worker's device, inside the step: no extra pass over the data
            g = batch_generator(stage.seed, epoch, rank, step)
            waves = augment_waveforms(waves, train.augment, augmentation.noise, augmentation.sample_rate, g,
                                      augmentation.rooms)
            mask = spectrogram_masks((len(waves), 1, augmentation.n_mels, fit.net.features.frames(waves.shape[1])),
                                     train.augment, augmentation.hop_ms, g)
            warp = frequency_warps(len(waves), train.augment, g)
            mix = style_mixes(len(waves), train.augment, g)
            mixup = mixups(len(waves), train.augment, g)
            if mixup is not None:
                waves = mix_inputs(waves, *mixup)
        with autocast(device, train.precision):
            logits = fit.model(waves, mask, warp, mix)
        loss = batch_loss(logits.float(), batch, stage.labels, mixup)
        fit.optimizer.zero_grad(set_to_none=True)
        fit.scaler.scale(loss).backward()
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
        if fit.schedule.last_epoch < fit.schedule.total_steps - 1:
            fit.schedule.step()
        total_loss += loss.item() * len(waves)
        seen += len(waves)
    fit.model.eval()
    return total_loss, seen


def batch_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], labels: LabelSpec,
               mixup: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The stage's loss on a batch. With mixup (partner, own weight): each input's loss against
    its own labels and against its partner's, weighted as its waveform was. Logits of several
    members stacked (members, batch, classes; an ensemble in training): the sum of each's loss,
    so that each member learns as it would alone."""
    if logits.dim() == 3:
        return sum(batch_loss(member, batch, labels, mixup) for member in logits)

    def loss(of: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
        pick = (lambda t: t) if of is None else (lambda t: None if t is None else t[of])
        return student_loss(logits, mode=labels.mode, hard=pick(batch["teacher_label_index"]),
                            soft=pick(batch["teacher_probs"]), temperature=labels.temperature,
                            original=pick(batch["source_label_index"]), original_weight=labels.original_weight,
                            reduction=reduction)
    if mixup is None:
        return loss()
    partner, weight = (t.to(logits.device) for t in mixup)
    return (weight * loss(reduction="none") + (1 - weight) * loss(partner, "none")).mean()


def kept_model(fit: Fit, epoch: int, epochs: int, average_epochs: int) -> torch.nn.Module:
    """After ``epoch``: the network the stage would keep now. With averaging, the epoch enters
    the average when it is one of the last ``average_epochs``, and after the last epoch the
    average is kept; otherwise the trained network."""
    if fit.averaged is None:
        return fit.net
    if epoch >= epochs - min(average_epochs, epochs):
        fit.averaged.update_parameters(fit.net)
    return fit.averaged.module.eval() if epoch == epochs - 1 else fit.net


def scored_epoch(epoch: int, epochs: int, validate_every: int) -> bool:
    """Whether the validation split is scored after ``epoch`` (0-based): every ``validate_every``-th
    epoch and always the last, whose score the stage's model carries."""
    return (epoch + 1) % validate_every == 0 or epoch == epochs - 1


# Validation features past this size are computed again each epoch instead of kept (Speech
# Commands' validation split at 500 ms, stream protocol, is about half of it).
VALIDATION_CACHE_BYTES = 1 << 30


class Validation:
    """A stage's validation split, scored every epoch under the stream protocol with true labels.

    The front end has no weights, so the windows' features are the same every epoch: they are
    computed once, by the first ``counts`` call, and kept on ``device``; each epoch then runs only
    the network. The counts are the ones ``predict`` gives, to the bit."""

    def __init__(self, clips: tuple[np.ndarray, np.ndarray], *, input_samples: int, hop_samples: int,
                 silence_index: int | None, batch_size: int, device: torch.device, precision: str):
        self.waves, self.labels = clips
        self.input_samples, self.batch_size, self.silence_index = input_samples, batch_size, silence_index
        self.device, self.precision = device, precision
        self.starts = protocol_starts(self.waves, input_samples, "stream", hop_samples) if len(self.labels) else None
        self._features: list[torch.Tensor] | None = None

    def _feature_batches(self, net: torch.nn.Module) -> Iterable[torch.Tensor]:
        if self._features is not None:
            return self._features
        batches = (net.net_input(x.to(self.device))
                   for x in window_batches(self.waves, self.input_samples, self.starts, self.batch_size))
        first = next(iter(batches))
        if first.element_size() * first[0].numel() * self.starts.size > VALIDATION_CACHE_BYTES:
            return itertools.chain([first], batches)  # too large to keep: this epoch's, computed as it goes
        self._features = [first, *batches]
        return self._features

    @torch.no_grad()
    def counts(self, net: torch.nn.Module) -> torch.Tensor:
        """(correct, clips) of ``net`` (a ``KeywordSpotter``): counts, so several workers' sum to
        the split's."""
        if not len(self.labels):
            return torch.zeros(2, dtype=torch.float64)
        with autocast(self.device, self.precision):
            post = [torch.softmax(net.net(f).float(), dim=-1).cpu() for f in self._feature_batches(net)]
        pred = decide(torch.cat(post).reshape(*self.starts.shape, -1), "stream", self.silence_index)
        return torch.tensor([float((pred == self.labels).sum()), float(len(pred))], dtype=torch.float64)
