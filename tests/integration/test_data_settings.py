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


def test_the_relabel_labels_on_every_cpu_while_its_read_runs(local_ray, tmp_path, monkeypatch):
    # Ray Data reserves every running operator one task's CPUs. The relabel's read is an operator
    # of its own when it splits a file among read tasks, so on 2 CPUs it held one of them while
    # the teacher labelled on the other alone (docs/design-notes.md: no per-operator reservation).
    # The relabel's dataset runs without the reservation; the process's default stays as it was.
    import ray.data
    import torch

    from conftest import write_sc_layout
    from distill.config import RelabelConfig, load_config
    from distill.core.checkpoint import ModelSpec, save_model_dir
    from distill.data.base import build_source_index
    from distill.runtime.execution.relabel import Teacher, relabel_crops
    from distill.runtime.execution.source import write_source_dataset
    from distill.stages import StageSpec

    speakers = [f"{i:08x}" for i in range(6)]
    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed"]
    corpus = write_sc_layout(tmp_path / "corpus", words, speakers)
    cfg = load_config(None, {"data.path": str(corpus)})
    configure_data()
    index = build_source_index(cfg.data)
    write_source_dataset(index, cfg.data, tmp_path / "source")
    torch.manual_seed(0)
    spec = ModelSpec(model="res8_narrow", options={}, labels=index.labels, input_ms=1000,
                     features=cfg.features.model_dump())
    save_model_dir(tmp_path / "teacher", spec.build(), spec)

    reserved = []
    write = ray.data.Dataset.write_parquet

    def spy(self, *args, **kwargs):
        reserved.append(self.context.op_resource_reservation_enabled)
        return write(self, *args, **kwargs)

    monkeypatch.setattr(ray.data.Dataset, "write_parquet", spy)
    stage = StageSpec("student_500ms", "student", "pld", 500, "teacher", 1, crops_per_clip=2, seed=0)
    manifest = relabel_crops(tmp_path / "source", tmp_path / "stage", stage, RelabelConfig(batch_size=16),
                             Teacher(str(tmp_path / "teacher"), "teacher-run"))
    assert manifest["rows"] == manifest["crops"] > 0
    assert reserved == [False]
    assert ray.data.DataContext.get_current().op_resource_reservation_enabled
