"""Keyword-spotting false alarms: how often a model fires on audio that holds no keyword.

A deployed spotter slides over an endless stream and fires when a keyword's posterior
crosses a threshold. Accuracy on 1 s clips does not say how often that happens on speech
that is not a keyword, and a short-input model sees less context per decision, so it may
fire more. Two figures, at thresholds chosen on the model's own scores:

- false accepts per hour at the threshold that keeps 90 % recall on keyword clips;
- recall at the threshold that allows 1 false accept per hour.

Negative audio: the test split's ``_silence_`` and ``_unknown_`` clips joined into one long
stream, scanned with the stream protocol's hop. A false accept is a run of consecutive
windows whose top keyword posterior is at or above the threshold (a detector fires once per
run). Positive audio: each keyword clip scanned on its own; it is recalled when its own
keyword's posterior reaches the threshold in some window. Plain PyTorch and NumPy.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from distill.core.protocols import window_posteriors, window_starts
from distill.names import SILENCE, UNKNOWN

TARGET_RECALL = 0.9
FA_BUDGET_PER_HOUR = 1.0
NEGATIVE_CLASSES = (SILENCE, UNKNOWN)  # the clips joined into the negative stream


def count_events(scores: np.ndarray, thresholds: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each threshold, the number of maximal runs of consecutive ``scores`` ≥ threshold.
    ``chunk`` thresholds at a time: a (thresholds × windows) mask of a long stream would not fit."""
    scores, thresholds = np.asarray(scores), np.asarray(thresholds)
    counts = []
    for lo in range(0, len(thresholds), chunk):
        above = scores[None, :] >= thresholds[lo:lo + chunk, None]  # (chunk, windows)
        onsets = above[:, 1:] & ~above[:, :-1]
        counts.append(above[:, 0].astype(np.int64) + onsets.sum(axis=1))
    return np.concatenate(counts) if counts else np.zeros(0, np.int64)


def false_alarm_metrics(negative_scores: np.ndarray, negative_seconds: float, positive_scores: np.ndarray,
                        target_recall: float = TARGET_RECALL, fa_budget: float = FA_BUDGET_PER_HOUR) -> dict[str, float]:
    """False accepts per hour at ``target_recall`` and recall at ``fa_budget`` false accepts per hour.

    ``negative_scores``: per window of the negative stream (in time order), the highest keyword
    posterior; ``positive_scores``: per keyword clip, the highest posterior of its own keyword.
    """
    neg = np.asarray(negative_scores, dtype=np.float64)
    pos = np.sort(np.asarray(positive_scores, dtype=np.float64))[::-1]
    if negative_seconds <= 0 or not len(neg) or not len(pos):
        raise ValueError("false-alarm metrics need negative audio and keyword clips")
    hours = negative_seconds / 3600
    # the highest threshold that still recalls target_recall of the keyword clips
    at_recall = pos[max(0, math.ceil(target_recall * len(pos)) - 1)]
    fa_at_recall = float(count_events(neg, np.array([at_recall]))[0] / hours)
    # the lowest threshold from which on the stream stays within the budget: events only change
    # at the negative scores, and the count is not monotone (raising it can split a run in two)
    candidates = np.unique(np.concatenate([np.nextafter(neg, np.inf), [0.0]]))
    fa = count_events(neg, candidates) / hours
    over = np.nonzero(fa > fa_budget)[0]
    at_budget = candidates[over[-1] + 1] if len(over) else candidates[0]
    return {"threshold_at_recall": float(at_recall), "fa_per_hour_at_recall": fa_at_recall,
            "threshold_at_fa_budget": float(at_budget), "recall_at_fa_budget": float((pos >= at_budget).mean()),
            "negative_hours": hours, "keyword_clips": len(pos)}


def operating_points(negative_scores: np.ndarray, negative_seconds: float, positive_scores: np.ndarray,
                     max_points: int = 64) -> list[dict[str, float]]:
    """Thresholds a deployment may choose by false alarms: for each, the false accepts per hour
    on the negative stream at that threshold *or any higher one* (the count is not monotone:
    raising a threshold can split a run in two) and the recall of the keyword clips. Ascending
    thresholds, falling false alarms; thinned to ``max_points`` (the extremes kept)."""
    neg = np.asarray(negative_scores, dtype=np.float64)
    pos = np.asarray(positive_scores, dtype=np.float64)
    hours = negative_seconds / 3600
    candidates = np.unique(np.concatenate([np.nextafter(neg, np.inf), [0.0]]))
    envelope = np.maximum.accumulate((count_events(neg, candidates) / hours)[::-1])[::-1]
    changes = np.flatnonzero(np.diff(envelope, prepend=np.inf) != 0)  # where the envelope steps down
    keep = changes[np.unique(np.linspace(0, len(changes) - 1, min(max_points, len(changes))).round().astype(int))]
    return [{"threshold": float(candidates[i]), "fa_per_hour": float(envelope[i]),
             "recall": float((pos >= candidates[i]).mean())} for i in keep]


def threshold_for(points: list[dict[str, float]], max_fa_per_hour: float) -> dict[str, float]:
    """The lowest threshold of ``operating_points`` whose false accepts per hour stay within the
    budget (the highest recall that does); the last point when none is low enough."""
    within = [p for p in points if p["fa_per_hour"] <= max_fa_per_hour]
    return within[0] if within else points[-1]


@torch.no_grad()
def keyword_spotting_metrics(model, spec, waveforms: np.ndarray, labels: np.ndarray, hop_samples: int, *,
                             batch_size: int = 256, device: str | torch.device = "cpu",
                             stream_posteriors: torch.Tensor | None = None) -> dict[str, float] | None:
    """The false-alarm figures of ``model`` on test clips ``waveforms`` with class indices
    ``labels``; ``spec`` (a ``ModelSpec``) gives the class names, the input length and the
    sample rate. The ``NEGATIVE_CLASSES`` make the negative stream. None when the split has no
    negative or no keyword clips. ``stream_posteriors``: the clips' posteriors under the stream
    protocol (same hop) if the caller has them already."""
    class_names, input_samples = list(spec.labels), spec.input_samples
    negative_idx = [class_names.index(c) for c in NEGATIVE_CLASSES if c in class_names]
    keyword_idx = [i for i in range(len(class_names)) if i not in negative_idx]
    is_negative = np.isin(labels, negative_idx)
    if not is_negative.any() or is_negative.all() or not keyword_idx:
        return None
    stream = waveforms[is_negative].reshape(1, -1)
    starts = np.asarray(window_starts(stream.shape[1], input_samples, hop_samples))[None, :]
    post = window_posteriors(model, stream, input_samples, starts, batch_size=batch_size, device=device)[0]
    negative_scores = post[:, keyword_idx].max(dim=-1).values.numpy()

    clips, targets = waveforms[~is_negative], labels[~is_negative]
    if stream_posteriors is None:
        starts = np.tile(np.asarray(window_starts(clips.shape[1], input_samples, hop_samples)), (len(clips), 1))
        post = window_posteriors(model, clips, input_samples, starts, batch_size=batch_size, device=device)
    else:
        post = stream_posteriors[torch.from_numpy(~is_negative)]
    positive_scores = post[torch.arange(len(clips)), :, torch.as_tensor(targets)].max(dim=-1).values.numpy()
    seconds = stream.shape[1] / spec.features["sample_rate"]
    return {**false_alarm_metrics(negative_scores, seconds, positive_scores),
            "operating_points": operating_points(negative_scores, seconds, positive_scores)}
