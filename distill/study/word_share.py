"""Where the labels go wrong: each relabelled crop's label against the share of its word it holds.

A synthesized corpus knows where each clip's word lies (``synth_manifest.csv``: speech_start_ms,
speech_end_ms), so the share of the word inside a crop is known. A stage's distilled dataset
holds every crop's offset and the label it learns (its teacher's, or for direct learning the
clip's own). Binned by share, the labels say what a student is taught about a crop that holds
all of its word, and about one that holds almost none of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from distill.names import SILENCE, UNKNOWN

MANIFEST = "synth_manifest.csv"
BINS = 10  # shares [0, 0.1), [0.1, 0.2), ..., [0.9, 1.0]
OUTCOMES = ("word", "silence", "unknown", "other")  # the clip's own label, _silence_, _unknown_, another word
MOST, LITTLE = 0.8, 0.2  # "holds most of the word" (share >= MOST) and "little of it" (share < LITTLE)


def word_bounds(corpus: str | Path) -> pd.DataFrame | None:
    """clip_id -> (start, end) of the word in ms, from the corpus's synth manifest (None: not a
    synthesized corpus)."""
    path = Path(corpus) / MANIFEST
    if not path.is_file():
        return None
    frame = pd.read_csv(path, usecols=["path", "speech_start_ms", "speech_end_ms"])
    return frame.rename(columns={"path": "clip_id"}).set_index("clip_id")


def crop_shares(crops: pd.DataFrame, bounds: pd.DataFrame, sample_rate: int) -> pd.Series:
    """Share of its clip's word inside each crop (``offset``, ``length`` in samples); NaN for a
    clip the manifest does not know (the silence clips, cut from noise)."""
    joined = crops[["clip_id", "offset", "length"]].join(bounds, on="clip_id")
    start_ms = joined["offset"] * 1000.0 / sample_rate
    end_ms = (joined["offset"] + joined["length"]) * 1000.0 / sample_rate
    overlap = (np.minimum(end_ms, joined["speech_end_ms"]) - np.maximum(start_ms, joined["speech_start_ms"])).clip(lower=0)
    word = (joined["speech_end_ms"] - joined["speech_start_ms"]).where(lambda w: w > 0)
    return (overlap / word).clip(upper=1.0)


def share_table(crops: pd.DataFrame, bounds: pd.DataFrame, sample_rate: int) -> dict:
    """Counts per share bin of each outcome of a stage's labels: {"edges": [...], outcome: [...]}
    for the crops of word clips (the clip's label is a keyword or _unknown_)."""
    share = crop_shares(crops, bounds, sample_rate)
    keep = share.notna() & (crops["source_label"] != SILENCE)
    share, source, label = share[keep], crops.loc[keep, "source_label"], crops.loc[keep, "teacher_label"]
    outcome = np.select([label == source, label == SILENCE, label == UNKNOWN], OUTCOMES[:3], OUTCOMES[3])
    bins = np.minimum((share.to_numpy() * BINS).astype(int), BINS - 1)
    table = {"edges": [i / BINS for i in range(BINS + 1)]}
    for name in OUTCOMES:
        table[name] = np.bincount(bins[outcome == name], minlength=BINS).astype(int).tolist()
    return table


def summary(table: dict) -> dict[str, float | None]:
    """Of the crops holding most of their word, the share that keep its label; of those holding
    little of it, the share called silence or unknown."""
    counts = {k: np.asarray(table[k], float) for k in OUTCOMES}
    total = sum(counts.values())
    most, little = slice(int(MOST * BINS), BINS), slice(0, int(LITTLE * BINS))
    n_most, n_little = total[most].sum(), total[little].sum()
    return {"most_keep_word": float(counts["word"][most].sum() / n_most) if n_most else None,
            "little_to_silence_or_unknown": (float((counts["silence"] + counts["unknown"])[little].sum() / n_little)
                                             if n_little else None),
            "crops_most": int(n_most), "crops_little": int(n_little)}


def stage_share_table(data_dir: str, bounds: pd.DataFrame, sample_rate: int) -> dict:
    """``share_table`` of a stage's distilled dataset (its Parquet directory, local or a storage URI)."""
    import pyarrow.parquet as pq

    from distill.runtime.infra import storage

    fs, path = storage.filesystem(data_dir)
    crops = pq.read_table(path, filesystem=fs, columns=["clip_id", "offset", "length", "source_label",
                                             "teacher_label"]).to_pandas()
    return share_table(crops, bounds, sample_rate)
