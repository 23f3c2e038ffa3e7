"""Teacher labels and the student loss — the heart of label distillation, in plain PyTorch.

``hard`` labels are the teacher's argmax (the paper's reading); ``soft`` labels are its
probabilities at a temperature, learned with the temperature-scaled KL divergence of
Hinton et al. (2015). Both are stored, so one distilled dataset serves either loss. Either
can be mixed with the clip's original label (``original_weight``), and crops the teacher is
unsure of can be dropped (``keep_confident``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

LabelMode = Literal["hard", "soft"]


@dataclass
class TeacherLabels:
    label: torch.Tensor  # (batch,) int64 argmax class
    probs: torch.Tensor  # (batch, classes) float32, softmax(logits / temperature)
    confidence: torch.Tensor  # (batch,) float32, the top probability at temperature 1


def teacher_labels(logits: torch.Tensor, temperature: float = 1.0) -> TeacherLabels:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float()
    # Confidence at temperature 1: a threshold on it means the same whatever temperature the
    # soft labels use (argmax is the same at every temperature).
    confidence, label = torch.softmax(logits, dim=-1).max(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    return TeacherLabels(label=label, probs=probs, confidence=confidence)


def keep_confident(confidence: np.ndarray, min_confidence: float) -> np.ndarray:
    """Mask of the crops to keep: the teacher's confidence is at least ``min_confidence``."""
    if not 0 <= min_confidence < 1:
        raise ValueError(f"min_confidence must be in [0, 1), got {min_confidence}")
    return np.asarray(confidence) >= min_confidence


def student_loss(logits: torch.Tensor, *, mode: LabelMode, hard: torch.Tensor | None = None,
                 soft: torch.Tensor | None = None, temperature: float = 1.0, original: torch.Tensor | None = None,
                 original_weight: float = 0.0, reduction: Literal["mean", "none"] = "mean") -> torch.Tensor:
    """Mean loss of a student batch (``reduction="none"``: each input's, ``(batch,)``).

    hard: cross-entropy against the class indices ``hard``.
    soft: ``T² · KL(soft ‖ softmax(logits / T))``; the T² keeps gradient scale comparable
    across temperatures.
    With ``original_weight`` w > 0: ``(1 - w) · that + w · cross-entropy(original)``, the
    clip's own label class indices ``original``.
    """
    if not 0 <= original_weight <= 1:
        raise ValueError(f"original_weight must be in [0, 1], got {original_weight}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if original_weight > 0:
        if original is None:
            raise ValueError("mixing in the original label needs its class indices")
        teacher = (student_loss(logits, mode=mode, hard=hard, soft=soft, temperature=temperature, reduction=reduction)
                   if original_weight < 1 else 0)
        return (1 - original_weight) * teacher + original_weight * F.cross_entropy(logits, original, reduction=reduction)
    if mode == "hard":
        if hard is None:
            raise ValueError("hard-label loss needs class indices")
        return F.cross_entropy(logits, hard, reduction=reduction)
    if mode == "soft":
        if soft is None:
            raise ValueError("soft-label loss needs teacher probabilities")
        log_p = F.log_softmax(logits / temperature, dim=-1)
        if reduction == "none":
            return F.kl_div(log_p, soft, reduction="none").sum(dim=-1) * temperature**2
        return F.kl_div(log_p, soft, reduction="batchmean") * temperature**2
    raise ValueError(f"unknown label mode {mode!r}; use 'hard' or 'soft'")


@dataclass(frozen=True)
class LabelSpec:
    """A stage's labels under one set of names: how its teacher reads a crop shorter than its
    own input, which of the teacher's labels are kept, and how the stage's loss reads them. The
    config's ``labels:`` section (and ``chain.teacher_view``) resolved for one stage; a stage on
    the clips' own labels has the defaults: one-hot labels, the hard loss, nothing mixed in."""
    view: str = "native"  # native: the crop as it is; pad: zero-padded to the teacher's input length
    pad_position: str = "center"  # pad: center, or random (seeded per crop by the stage's seed)
    min_confidence: float = 0.0  # crops labelled with less confidence are dropped
    mode: str = "hard"  # the loss: hard (the teacher's argmax) or soft (its probabilities at temperature)
    temperature: float = 1.0  # the teacher's softmax temperature, and the soft loss's
    original_weight: float = 0.0  # weight of the clip's own label beside the teacher's


def label_stats(source: np.ndarray, teacher: np.ndarray, labels: list[str]) -> dict:
    """What relabeling did to the data, from each crop's clip label and teacher label (class
    indices): the share of crops whose teacher label is the clip's own, and the shares of crops
    of other classes the teacher turned into silence or unknown (the word is not in the crop,
    or not recognisably)."""
    from distill.names import SILENCE, UNKNOWN

    out = {"agreement": float((source == teacher).mean()) if len(source) else float("nan")}
    for name, key in ((SILENCE, "to_silence"), (UNKNOWN, "to_unknown")):
        if name in labels:
            i = labels.index(name)
            other = source != i
            out[key] = float((teacher[other] == i).mean()) if other.any() else 0.0
    return out
