"""Source dataset: a dataset's clip index decoded into Arrow with Ray Data and kept as
Parquet partitioned by split (``<dir>/data/split=train/…``), so every later stage reads only
the split it needs. Columns: clip_id, path, start, label, label_index, speaker, split,
applied (the policies that fitted the file: resampled, downmixed, padded, cropped), waveform
(int16, one row per clip).

Files that cannot become clips are not dropped: decoding routes them to a quarantine
partition, which ends up as ``<dir>/quarantine.csv`` (path and reason per file); the
manifest, written last, counts them and every policy applied.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data

from distill.names import MANIFEST, QUARANTINE
from distill.data.audio import ClipPolicy, load_clip
from distill.data.base import QUARANTINE_COLUMNS, DatasetOptions, SourceIndex
from distill.data.check import check_bad_fraction, quarantine_reasons
from distill.core.features import num_samples
from distill.runtime.infra import storage

_QUARANTINE_SPLIT = "_quarantine_"  # partition prefix of rows that did not decode; removed after the write


def _decode_batch(batch: pd.DataFrame, clip_samples: int, sample_rate: int, labels: list[str], policy: dict) -> dict:
    rules = ClipPolicy.model_validate(policy)
    loaded = [load_clip(p, int(s), clip_samples, sample_rate, rules, key=c)
              for p, s, c in zip(batch["path"], batch["start"], batch["clip_id"])]
    zeros = np.zeros(clip_samples, np.int16)
    lookup = {name: i for i, name in enumerate(labels)}
    ok = [c.waveform is not None for c in loaded]
    return {
        "clip_id": batch["clip_id"].to_numpy(dtype=object),
        "path": batch["path"].to_numpy(dtype=object),
        "start": np.array([c.start if good else s for c, good, s in zip(loaded, ok, batch["start"])], dtype=np.int64),
        "label": batch["label"].to_numpy(dtype=object),
        "label_index": np.array([lookup[x] for x in batch["label"]], dtype=np.int64),
        "speaker": batch["speaker"].to_numpy(dtype=object),
        "split": np.array([s if good else _QUARANTINE_SPLIT + s for s, good in zip(batch["split"], ok)], dtype=object),
        # the policies applied, or for a quarantined file the reason it was
        "applied": np.array([",".join(c.applied) if good else c.problem for c, good in zip(loaded, ok)], dtype=object),
        "waveform": np.stack([c.waveform if good else zeros for c, good in zip(loaded, ok)]),
    }


def _collect_quarantine(data_dir: str) -> pd.DataFrame:
    frames = []
    for part in storage.list_dirs(data_dir):
        if not part.startswith(f"split={_QUARANTINE_SPLIT}"):
            continue
        fs, path = storage.filesystem(storage.join(data_dir, part))
        table = pq.read_table(path, filesystem=fs, columns=["clip_id", "path", "label", "applied"]).to_pandas()
        frames.append(table.rename(columns={"applied": "problem"}).assign(
            split=part.removeprefix(f"split={_QUARANTINE_SPLIT}")))
        storage.remove_tree(storage.join(data_dir, part))
    if not frames:
        return pd.DataFrame(columns=QUARANTINE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[QUARANTINE_COLUMNS].sort_values("clip_id", ignore_index=True)


def write_source_dataset(index: SourceIndex, options: DatasetOptions, out_dir: str | Path) -> dict:
    """Decode every clip of ``index`` with Ray Data into Parquet under ``out_dir`` (a local
    directory or a storage URI); returns the manifest. Raises ``DataError`` (after writing the
    quarantine table) when more than ``data.max_bad_fraction`` of the files cannot be read."""
    data_dir = storage.join(out_dir, "data")
    storage.remove_tree(data_dir)  # Ray's writer adds files to a directory: never mix two runs' rows
    clip_samples = num_samples(options.clip_ms, options.sample_rate)
    n = len(index.clips) + len(index.rejected)
    table = pa.Table.from_pandas(index.clips, preserve_index=False)
    # Blocks of ≤ 200 clips so decoding spreads over every CPU of the cluster.
    ds = ray.data.from_arrow([table.slice(i, 200) for i in range(0, max(len(index.clips), 1), 200)])
    ds = ds.map_batches(_decode_batch, batch_format="pandas", batch_size=200,
                        fn_kwargs=dict(clip_samples=clip_samples, sample_rate=options.sample_rate, labels=index.labels,
                                       policy=options.policy.model_dump()))
    ds.write_parquet(data_dir, partition_cols=["split"])

    quarantine = pd.concat([_collect_quarantine(data_dir), index.rejected[QUARANTINE_COLUMNS]], ignore_index=True)
    storage.write_text(storage.join(out_dir, QUARANTINE), quarantine.to_csv(index=False))
    if storage.list_dirs(data_dir):
        fs, path = storage.filesystem(data_dir)
        good = pq.read_table(path, filesystem=fs, columns=["split", "applied"]).to_pandas()
    else:
        good = pd.DataFrame(columns=["split", "applied"])
    applied = Counter(p for joined in good["applied"] for p in str(joined).split(",") if p)
    check_bad_fraction(len(quarantine), n, options, storage.join(out_dir, QUARANTINE))
    manifest = {
        "dataset": options.model_dump(mode="json"),
        "labels": index.labels,
        "clip_samples": clip_samples,
        "rows": {str(k): int(v) for k, v in good["split"].astype(str).value_counts().sort_index().items()},
        "files": n,
        "quarantined": len(quarantine),
        "quarantine_reasons": quarantine_reasons(quarantine),
        "policy_applied": dict(sorted(applied.items())),
    }
    storage.write_text(storage.join(out_dir, MANIFEST), json.dumps(manifest, indent=2))  # last: the data is whole
    return manifest


def _split_dir(source_dir: str | Path, split: str) -> str:
    path = storage.join(source_dir, "data", f"split={split}")
    if not storage.is_dir(path):
        raise FileNotFoundError(f"{path}: the source dataset has no {split!r} split")
    return path


def read_split(source_dir: str | Path, split: str) -> ray.data.Dataset:
    return ray.data.read_parquet(_split_dir(source_dir, split))


def load_split_arrays(source_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(waveforms, label indices) of a whole split, for evaluation on the driver."""
    _, waves, labels = load_split_clips(source_dir, split)
    return waves, labels


def _waveforms(column) -> np.ndarray:
    """A waveform column (Arrow lists of int16 samples) as one ``(clips, samples)`` int16 array."""
    return np.stack(column.to_numpy(zero_copy_only=False)).astype(np.int16, copy=False)


def iter_split_arrays(source_dir: str | Path, split: str, clips: int = 4096):
    """(waveforms, label indices) of a split, ``clips`` at a time, in the split's order: what a
    pass over a whole training split holds in memory is one batch of it, at any size."""
    import pyarrow.dataset as ds

    fs, path = storage.filesystem(_split_dir(source_dir, split))
    for batch in ds.dataset(path, filesystem=fs, format="parquet").to_batches(
            columns=["waveform", "label_index"], batch_size=clips):
        if batch.num_rows:
            yield _waveforms(batch.column("waveform")), batch.column("label_index").to_numpy().astype(np.int64)


def load_split_clips(source_dir: str | Path, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(clip ids, waveforms, label indices) of a whole split: ``load_split_arrays`` with each
    clip's id, in the same order (``pld study`` records predictions clip by clip)."""
    fs, path = storage.filesystem(_split_dir(source_dir, split))
    table = pq.read_table(path, filesystem=fs, columns=["clip_id", "waveform", "label_index"])
    if table.num_rows == 0:
        return [], np.zeros((0, 0), np.int16), np.zeros(0, np.int64)
    return ([str(c) for c in table.column("clip_id").to_pylist()], _waveforms(table.column("waveform")),
            table.column("label_index").to_numpy().astype(np.int64))
