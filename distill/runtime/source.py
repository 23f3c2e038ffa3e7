"""Source dataset: a dataset's clip index decoded into Arrow with Ray Data and kept as
Parquet partitioned by split (``<dir>/data/split=train/…``, manifest in ``<dir>/manifest.json``),
so every later stage reads only the split it needs. Columns: clip_id, path, start, label, label_index, speaker, split, waveform
(int16, one row per clip)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import ray.data

from distill.data.audio import decode_clip
from distill.data.base import DatasetOptions, SourceIndex
from distill.features import num_samples

MANIFEST = "manifest.json"


def _decode_batch(batch: pd.DataFrame, clip_samples: int, sample_rate: int, labels: list[str]) -> dict:
    waves = np.stack([decode_clip(p, int(s), clip_samples, sample_rate) for p, s in zip(batch["path"], batch["start"])])
    lookup = {name: i for i, name in enumerate(labels)}
    return {
        "clip_id": batch["clip_id"].to_numpy(dtype=object),
        "path": batch["path"].to_numpy(dtype=object),
        "start": batch["start"].to_numpy(dtype=np.int64),
        "label": batch["label"].to_numpy(dtype=object),
        "label_index": np.array([lookup[x] for x in batch["label"]], dtype=np.int64),
        "speaker": batch["speaker"].to_numpy(dtype=object),
        "split": batch["split"].to_numpy(dtype=object),
        "waveform": waves,
    }


def write_source_dataset(index: SourceIndex, options: DatasetOptions, out_dir: str | Path) -> dict:
    """Decode every clip of ``index`` with Ray Data into Parquet under ``out_dir``; returns the manifest."""
    out_dir = Path(out_dir)
    clip_samples = num_samples(options.clip_ms, options.sample_rate)
    n = len(index.clips)
    table = pa.Table.from_pandas(index.clips, preserve_index=False)
    # Blocks of ≤ 200 clips so decoding spreads over every CPU of the cluster.
    ds = ray.data.from_arrow([table.slice(i, 200) for i in range(0, max(n, 1), 200)])
    ds = ds.map_batches(_decode_batch, batch_format="pandas", batch_size=200,
                        fn_kwargs=dict(clip_samples=clip_samples, sample_rate=options.sample_rate, labels=index.labels))
    ds.write_parquet(str(out_dir / "data"), partition_cols=["split"])
    manifest = {
        "dataset": options.model_dump(mode="json"),
        "labels": index.labels,
        "clip_samples": clip_samples,
        "rows": {str(k): int(v) for k, v in index.clips["split"].value_counts().sort_index().items()},
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))  # written last: the data is whole
    return manifest


def read_split(source_dir: str | Path, split: str) -> ray.data.Dataset:
    path = Path(source_dir) / "data" / f"split={split}"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: the source dataset has no {split!r} split")
    return ray.data.read_parquet(str(path))


def load_split_arrays(source_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(waveforms, label indices) of a whole split, for evaluation on the driver's cluster."""
    rows = read_split(source_dir, split).select_columns(["waveform", "label_index"]).take_all()
    if not rows:
        return np.zeros((0, 0), np.int16), np.zeros(0, np.int64)
    return np.stack([r["waveform"] for r in rows]), np.array([r["label_index"] for r in rows], dtype=np.int64)
