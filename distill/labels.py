"""Teacher labels and the student loss — the heart of label distillation, in plain PyTorch.

``hard`` labels are the teacher's argmax (the paper's reading); ``soft`` labels are its
probabilities at a temperature, learned with the temperature-scaled KL divergence of
Hinton et al. (2015). Both are stored, so one distilled dataset serves either loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

LabelMode = Literal["hard", "soft"]


@dataclass
class TeacherLabels:
    label: torch.Tensor  # (batch,) int64 argmax class
    probs: torch.Tensor  # (batch, classes) float32, softmax(logits / temperature)
    confidence: torch.Tensor  # (batch,) float32, max of probs


def teacher_labels(logits: torch.Tensor, temperature: float = 1.0) -> TeacherLabels:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    confidence, label = probs.max(dim=-1)
    return TeacherLabels(label=label, probs=probs, confidence=confidence)


def student_loss(logits: torch.Tensor, *, mode: LabelMode, hard: torch.Tensor | None = None,
                 soft: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Mean loss of a student batch.

    hard: cross-entropy against the class indices ``hard``.
    soft: ``T² · KL(soft ‖ softmax(logits / T))``; the T² keeps gradient scale comparable
    across temperatures.
    """
    if mode == "hard":
        if hard is None:
            raise ValueError("hard-label loss needs class indices")
        return F.cross_entropy(logits, hard)
    if mode == "soft":
        if soft is None:
            raise ValueError("soft-label loss needs teacher probabilities")
        log_p = F.log_softmax(logits / temperature, dim=-1)
        return F.kl_div(log_p, soft, reduction="batchmean") * temperature**2
    raise ValueError(f"unknown label mode {mode!r}; use 'hard' or 'soft'")
