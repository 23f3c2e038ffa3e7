"""Seeded crop sampling: where in each clip the shorter input windows of a stage come from.

Offsets depend only on (seed, clip_id, crop length), never on batch boundaries or worker
order, so a relabel stage partitioned any way over a cluster yields the same crops — and the
``direct`` and ``one_shot`` baselines see exactly the crops of the final PLD student.
"""

from __future__ import annotations

import hashlib

import numpy as np


def num_samples(ms: float, sample_rate: int) -> int:
    """Number of samples in ``ms`` milliseconds at ``sample_rate`` (rounded to the nearest)."""
    return int(round(ms * sample_rate / 1000.0))


def clip_rng(seed: int, clip_id: str, crop_samples: int) -> np.random.Generator:
    """A generator private to one (seed, clip, crop length)."""
    digest = hashlib.blake2b(f"{clip_id}\x00{crop_samples}".encode(), digest_size=8).digest()
    return np.random.default_rng([seed & 0xFFFFFFFF, int.from_bytes(digest, "little")])


def sample_crop_offsets(clip_id: str, clip_samples: int, crop_samples: int, k: int, seed: int) -> np.ndarray:
    """``k`` start offsets (in samples), uniform over every position where the crop fits.

    A crop as long as the clip has one position; it is returned ``k`` times (the relabel
    stage asks for one: a stage at the clip's length trains on the clips themselves).
    """
    if crop_samples <= 0 or crop_samples > clip_samples:
        raise ValueError(f"crop of {crop_samples} samples does not fit a clip of {clip_samples} samples")
    if k < 1:
        raise ValueError(f"crops per clip must be ≥ 1, got {k}")
    rng = clip_rng(seed, clip_id, crop_samples)
    return rng.integers(0, clip_samples - crop_samples + 1, size=k, dtype=np.int64)


def sliding_crop_offsets(clip_samples: int, crop_samples: int, stride_samples: int) -> np.ndarray:
    """Every ``stride_samples``-th position, the last crop flush with the clip's end (no audio
    left unseen); a crop as long as the clip has one position."""
    if crop_samples <= 0 or crop_samples > clip_samples:
        raise ValueError(f"crop of {crop_samples} samples does not fit a clip of {clip_samples} samples")
    if stride_samples < 1:
        raise ValueError(f"crop stride must be ≥ 1 sample, got {stride_samples}")
    last = clip_samples - crop_samples
    offsets = np.arange(0, last + 1, stride_samples, dtype=np.int64)
    return offsets if offsets[-1] == last else np.append(offsets, last)


def pad_to(crops: np.ndarray, samples: int, position: str, seed: int, keys: list[str] | None = None) -> np.ndarray:
    """Crops (n, L) zero-padded to (n, ``samples``) — how a teacher trained on longer inputs
    sees them under ``teacher_view: pad``. ``position`` is ``center`` or ``random``; random
    starts come from ``clip_rng`` of each crop's key, so they do not depend on batching."""
    n, length = crops.shape
    if length > samples:
        raise ValueError(f"a crop of {length} samples does not fit a teacher input of {samples} samples")
    if position == "center":
        starts = np.full(n, (samples - length) // 2, dtype=np.int64)
    elif position == "random":
        if keys is None or len(keys) != n:
            raise ValueError("random pad positions need one key per crop")
        starts = np.array([clip_rng(seed, key, samples).integers(0, samples - length + 1) for key in keys], dtype=np.int64)
    else:
        raise ValueError(f"unknown pad position {position!r}; use 'center' or 'random'")
    out = np.zeros((n, samples), dtype=crops.dtype)
    out[np.arange(n)[:, None], starts[:, None] + np.arange(length)[None, :]] = crops
    return out


def cut_crops(waveforms: np.ndarray, offsets: np.ndarray, crop_samples: int,
              rows: np.ndarray | None = None) -> np.ndarray:
    """Crop ``j`` is ``waveforms[rows[j], offsets[j] : offsets[j] + crop_samples]`` (``rows``
    defaults to 0, 1, 2, …), gathered in one indexing step without copying whole clips."""
    rows = np.arange(len(offsets)) if rows is None else rows
    return waveforms[rows[:, None], offsets[:, None] + np.arange(crop_samples)[None, :]]


def crop_batch(batch: dict[str, np.ndarray], crop_samples: int, k: int, seed: int,
               stride_samples: int | None = None) -> dict[str, np.ndarray]:
    """Clips → crops (rows of the distilled dataset, still unlabelled by a teacher): ``k``
    random ones per clip, or with ``stride_samples`` every position of a sliding window."""
    waves = batch["waveform"]
    n, clip_samples = waves.shape
    if stride_samples:
        offsets = np.tile(sliding_crop_offsets(clip_samples, crop_samples, stride_samples), (n, 1))
        k = offsets.shape[1]
    else:
        offsets = np.stack([sample_crop_offsets(str(c), clip_samples, crop_samples, k, seed) for c in batch["clip_id"]])
    rows = np.repeat(np.arange(n), k)
    flat = offsets.reshape(-1)
    crops = cut_crops(waves, flat, crop_samples, rows)
    return {
        "clip_id": batch["clip_id"][rows],
        "crop_index": np.tile(np.arange(k, dtype=np.int32), n),
        "offset": flat,
        "length": np.full(n * k, crop_samples, dtype=np.int64),
        "source_label": batch["label"][rows],
        "source_label_index": batch["label_index"][rows],
        "speaker": batch["speaker"][rows],
        "waveform": crops,
    }
