"""``ensemble``: several networks that answer as one, a teacher's network.

Why: no one network here hears every engine. A network on the platform's log-mel learns the
corpus's words well; one on a speech embedding learned from human speech hears engines no
training clip uses (docs/benchmarks.md). Their posteriors averaged are better than either on
the validation parts, so the teacher that labels the students' crops can be both.

- Each member is a registered network behind its own front end (a ``KeywordSpotter``), built
  with the chain's ``features``.
- Trained, each member learns on its own loss, as it would alone: in training ``forward``
  returns the members' logits stacked (members, batch, classes), and the loss is their sum
  (``core.fit.batch_loss``). The weights then change no member's training, only the answer.
- Evaluated, it answers with ``combine``: ``mean`` (the default), ``log Σ wᵢ softmax(zᵢ)``,
  logits whose softmax is their weighted mean; or ``product``, the weighted geometric mean of the
  members' posteriors renormalised (log-linear pooling, ``Σ wᵢ log softmax(zᵢ)``), where a class
  any member rules out stays out. The product is the better classifier, the mean the better
  teacher: its students score higher (docs/benchmarks.md).
- ``unknown_offset`` is added to the ``_unknown_`` class's log-posterior in the answer, which is
  then renormalised: the prior of "no keyword", the filler class's operating point. Other engines
  say short words (up, on, off) less clearly than the training speech, and the teacher falls back
  to ``_unknown_``; a negative offset asks for more evidence before it does (docs/benchmarks.md).
- ``speeds``: the member answers each input played at each of these speeds (tempo and pitch
  together, ``core.augment.change_speed``), its posteriors averaged, before the members are
  combined. Test-time views of the input: a different engine's voice sits at another pitch and
  tempo than the training speech, and the average over nearby ones depends less on where. Only
  the answer: training sees each input once. ``[1.0]`` (the default) is the input as it is.
- ``lr_scale`` gives a member its own learning rate (a multiple of ``train.lr``; a head on a
  frozen embedding learns at a tenth of what a network learning from scratch can take).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from distill.core.augment import change_speed
from distill.core.features import FeatureConfig
from distill.names import UNKNOWN

MEMBER_KEYS = {"name", "options", "weight", "lr_scale"}
COMBINE = ("mean", "product")  # how the members' posteriors make one answer (the module doc)
# what a config without ``combine`` gets, and records: the mean. The product scores higher alone
# (10 of 12 validation comparisons over four trained ensembles), but the students it labels scored
# lower on 7 of 9 (the demo's chain; docs/benchmarks.md), and a teacher is there to label.
CONFIG_COMBINE = "mean"
# the house ensemble: the quickstart's network and the speech embedding, half and half
DEFAULT_MEMBERS = ({"name": "res8_narrow", "weight": 0.5}, {"name": "speech_embedding", "weight": 0.5, "lr_scale": 0.1})


def check_members(members: Any) -> list[dict]:
    """``members`` as a list of dicts with a registered ``name``, or a ValueError naming the entry."""
    from distill.core.models import MODELS

    if not isinstance(members, (list, tuple)) or len(members) < 2:
        raise ValueError(f"ensemble: members must be a list of at least two networks, got {members!r}")
    out = []
    for i, m in enumerate(members):
        where = f"ensemble: members[{i}]"
        if not isinstance(m, dict) or "name" not in m:
            raise ValueError(f"{where}: a mapping with a network's name (and options, weight, lr_scale), got {m!r}")
        unknown = set(m) - MEMBER_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(MEMBER_KEYS)}")
        if m["name"] == "ensemble":
            raise ValueError(f"{where}: an ensemble cannot hold an ensemble; list its networks here instead")
        if m["name"] not in MODELS:
            raise ValueError(f"{where}: unknown model {m['name']!r}; registered: {', '.join(MODELS.names())}")
        for key in ("weight", "lr_scale"):
            value = m.get(key, 1.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isinf(value):
                raise ValueError(f"{where}.{key}: a positive number, got {value!r}")
        if not isinstance(m.get("options", {}), dict):
            raise ValueError(f"{where}.options: a mapping of the network's builder options, got {m['options']!r}")
        out.append(dict(m))
    return out


class Ensemble(nn.Module):
    """Members' posteriors combined with normalised ``weight`` (see the module doc)."""

    takes_waveform = True  # each member has its own front end
    exportable = False  # a teacher's network: it labels crops on the cluster and is not deployed
    exportable_note = ("an ensemble is a teacher's network, which labels crops and is not deployed; "
                       "export a student, or train a member alone to deploy it")

    def __init__(self, n_classes: int, members: list[dict], features: FeatureConfig, combine: str = "mean",
                 unknown_offset: float = 0.0, labels: list[str] | None = None, speeds: Any = (1.0,)):
        super().__init__()
        check_combine(combine)
        check_unknown_offset(unknown_offset)
        self.speeds = check_speeds(speeds)
        # the class the offset moves; None when there is no offset, so a label set without _unknown_ is fine
        self.unknown_index = None
        if unknown_offset:
            if labels is None or UNKNOWN not in labels:
                raise ValueError(f"ensemble: unknown_offset {unknown_offset} moves the {UNKNOWN} class, which this "
                                 f"model's labels {labels} lack; set unknown_offset to 0 for this dataset")
            self.unknown_index = labels.index(UNKNOWN)
        self.unknown_offset = float(unknown_offset)
        from distill.core.models import build_model

        members = check_members(members)
        self.members = nn.ModuleList(build_model(m["name"], n_classes, m.get("options"), features) for m in members)
        total = sum(float(m.get("weight", 1.0)) for m in members)
        # not a buffer: the weights are the model's options (model.json), never its trained state
        self.weights = [float(m.get("weight", 1.0)) / total for m in members]
        self.lr_scales = [float(m.get("lr_scale", 1.0)) for m in members]
        self.combine = combine

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([self.answer(member, waveform) for member in self.members])
        if self.training:
            return logits  # (members, batch, classes): each member's loss apart
        return offset_class(mixture_logits(logits, self.weights, self.combine), self.unknown_index, self.unknown_offset)

    def answer(self, member: nn.Module, waveform: torch.Tensor) -> torch.Tensor:
        """A member's logits, or with several ``speeds`` its log-posteriors averaged over them."""
        if self.training or self.speeds == [1.0]:
            return member(waveform).float()
        posts = [torch.softmax(member(played_at(waveform, s)).float(), -1) for s in self.speeds]
        return torch.stack(posts).mean(0).clamp_min(1e-30).log()  # a softmax's zeros are underflow, not certainty

    def parameter_groups(self, lr: float) -> list[dict]:
        """One optimizer group per member, at ``lr`` times its ``lr_scale``."""
        return [{"params": list(member.parameters()), "lr": lr * scale}
                for member, scale in zip(self.members, self.lr_scales)]


def check_combine(combine: Any) -> str:
    if combine not in COMBINE:
        raise ValueError(f"ensemble: combine must be one of {', '.join(COMBINE)}, got {combine!r}")
    return combine


def check_unknown_offset(offset: Any) -> float:
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
        raise ValueError(f"ensemble: unknown_offset must be a finite number (a log-posterior offset), got {offset!r}")
    return float(offset)


def played_at(waveform: torch.Tensor, speed: float) -> torch.Tensor:
    """Each input ``(batch, samples)`` played at ``speed`` (the same length), as ``speeds`` hears it."""
    return waveform if speed == 1.0 else change_speed(waveform, torch.full((waveform.shape[0],), speed))


def check_speeds(speeds: Any) -> list[float]:
    if (not isinstance(speeds, (list, tuple)) or not speeds
            or any(isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf for s in speeds)):
        raise ValueError(f"ensemble: speeds must be a list of positive playback speeds (1.0: as recorded), "
                         f"got {speeds!r}")
    return [float(s) for s in speeds]


def offset_class(log_posteriors: torch.Tensor, index: int | None, offset: float) -> torch.Tensor:
    """Log-posteriors (..., classes) with ``offset`` added to class ``index``, renormalised
    (unchanged when ``index`` is None or the offset is 0)."""
    if index is None or not offset:
        return log_posteriors
    shift = torch.zeros(log_posteriors.shape[-1], dtype=log_posteriors.dtype, device=log_posteriors.device)
    shift[index] = offset
    return torch.log_softmax(log_posteriors + shift, dim=-1)


def mixture_logits(logits: torch.Tensor, weights: list[float], combine: str = "mean") -> torch.Tensor:
    """(members, ..., classes) -> the ensemble's log-posteriors (..., classes): ``mean``,
    log Σ wᵢ softmax(zᵢ); ``product``, log softmax(Σ wᵢ log softmax(zᵢ))."""
    w = torch.tensor(weights, dtype=logits.dtype, device=logits.device).view(-1, *[1] * (logits.dim() - 1))
    log_posts = torch.log_softmax(logits, dim=-1)
    if check_combine(combine) == "product":
        return torch.log_softmax((w * log_posts).sum(0), dim=-1)
    return torch.logsumexp(log_posts + w.log(), dim=0)
