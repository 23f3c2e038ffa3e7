"""Ray Data settings the platform's throughput depends on, checked against a real local Ray."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill.runtime.infra.session import configure_data
from distill.runtime.execution.source import read_split


def test_reads_make_a_few_blocks_per_cpu_not_hundreds_of_tiny_ones(local_ray, tmp_path):
    # ~26 MB of clips in 8 files. Ray's default floor of 200 read blocks (down to 1 MiB each)
    # cut this into 24 blocks of ~33 clips: per-block scheduling and object-store hops then
    # cost more than the relabeling itself (docs/design-notes.md: read blocks).
    split = tmp_path / "source" / "data" / "split=train"
    split.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in range(8):
        waves = rng.integers(-3000, 3000, size=(100, 16000), dtype=np.int16)
        table = pa.table({"clip_id": [f"{f}-{i}" for i in range(100)],
                          "waveform": pa.FixedSizeListArray.from_arrays(pa.array(waves.reshape(-1)), 16000)})
        pq.write_table(table, split / f"part-{f}.parquet")
    configure_data()
    blocks = read_split(tmp_path / "source", "train").materialize()
    assert blocks.count() == 800
    assert 2 <= blocks.num_blocks() <= 2 * 2 + 2, blocks.num_blocks()  # about two per CPU of the cluster
