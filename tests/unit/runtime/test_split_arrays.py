"""Reading a source split on the driver: whole (evaluation) or a few thousand clips at a time (the
teacher's fit on its own training clips), the same clips in the same order either way."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.runtime.execution.source import iter_split_arrays, load_split_arrays


def test_a_split_read_in_batches_is_the_split_read_whole(tmp_path):
    rng = np.random.default_rng(0)
    part = tmp_path / "data" / "split=train"
    part.mkdir(parents=True)
    for i, rows in enumerate((5, 7)):  # two files, as the source stage writes a split in blocks
        waves = rng.integers(-3000, 3000, (rows, 160), dtype=np.int16)
        pq.write_table(pa.table({"clip_id": [f"c{i}-{r}" for r in range(rows)], "waveform": list(waves),
                                 "label_index": rng.integers(0, 12, rows)}), part / f"part-{i:05d}.parquet")
    waves, labels = load_split_arrays(tmp_path, "train")
    batches = list(iter_split_arrays(tmp_path, "train", clips=3))
    assert max(len(b) for _, b in batches) == 3 and sum(len(b) for _, b in batches) == 12
    assert np.array_equal(np.concatenate([w for w, _ in batches]), waves)
    assert np.array_equal(np.concatenate([b for _, b in batches]), labels)
    assert all(w.dtype == np.int16 and w.shape[1] == 160 for w, _ in batches)
