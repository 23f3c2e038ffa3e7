"""Ingestion on a real local Ray: the source stage quarantines what it cannot decode (the same
rules as `pld data check`), and a dataset registered outside the package — here, in this test
module, the way a user's own module would — runs through the whole chain."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from pydantic import Field

from conftest import tone, write_malformed, write_sc_layout
from distill.config import load_config
from distill.data.audio import WHOLE_FILE
from distill.data.base import DatasetOptions, SourceIndex, build_source_index, parse_dataset_options, register_dataset
from distill.data.check import DataError, scan
from distill.runtime.execution.chain import run_chain
from distill.runtime.infra.session import Services
from distill.runtime.execution.source import QUARANTINE, write_source_dataset

pytestmark = pytest.mark.integration


class CsvListOptions(DatasetOptions):
    """A user's corpus described by a CSV of path,label,split — not a layout pld knows."""

    name: Literal["csv_list"] = "csv_list"
    labels: list[str] = Field(min_length=1)


@register_dataset("csv_list", CsvListOptions)
def build_csv_list(opts: CsvListOptions) -> SourceIndex:
    table = pd.read_csv(opts.path)
    return SourceIndex(clips=pd.DataFrame({"clip_id": table.path, "path": table.path, "start": WHOLE_FILE,
                                           "label": table.label, "speaker": "", "split": table.split}),
                       labels=opts.labels)


def test_source_stage_quarantines_counts_and_stops_above_the_threshold(local_ray, tmp_path):
    root = tmp_path / "dirty"
    for label, (seconds, rate, channels) in {"yes": (1.0, 16000, 1), "no": (1.5, 44100, 2)}.items():
        (root / label).mkdir(parents=True)
        for k in range(15):
            sf.write(root / label / f"ok{k}.wav", tone(seconds, rate, 300, channels), rate)
    expected = write_malformed(root / "no")
    options = parse_dataset_options({"name": "folder", "path": str(root), "max_bad_fraction": 0.5})
    index = build_source_index(options)
    manifest = write_source_dataset(index, options, tmp_path / "source")

    quarantine = pd.read_csv(tmp_path / "source" / QUARANTINE, keep_default_na=False)
    assert dict(zip(quarantine.clip_id, quarantine.problem)) == {
        r.clip_id: r.problem for r in scan(index, options).quarantine.itertuples()}  # same rules as pld data check
    assert set(quarantine.clip_id) == {f"no/{name}" for name in expected}
    assert manifest["files"] == 30 + len(expected) and manifest["quarantined"] == len(expected)
    assert sum(manifest["rows"].values()) == 30  # every good file, nothing else
    assert manifest["policy_applied"] == {"cropped": 15, "downmixed": 15, "resampled": 15}
    assert sorted(p.name for p in (tmp_path / "source" / "data").iterdir()) == [
        f"split={s}" for s in sorted(manifest["rows"])]  # the quarantine partition is gone
    table = pq.read_table(tmp_path / "source" / "data").to_pandas()
    assert set(table.applied[table.label == "no"]) == {"resampled,downmixed,cropped"}

    strict = parse_dataset_options({"name": "folder", "path": str(root)})
    with pytest.raises(DataError, match="above data.max_bad_fraction"):
        write_source_dataset(build_source_index(strict), strict, tmp_path / "strict")
    assert len(pd.read_csv(tmp_path / "strict" / QUARANTINE)) == len(expected)  # the evidence stays
    assert not (tmp_path / "strict" / "manifest.json").exists()  # never marked complete


def test_a_dataset_registered_outside_the_package_runs_through_the_chain(local_ray, tmp_path):
    words = ["yes", "no", "up"]
    corpus = write_sc_layout(tmp_path / "corpus", words, [f"{i:08x}" for i in range(8)])
    rows = [(str(p), p.parent.name, "validation" if p.name.startswith("00000000") else
             "test" if p.name.startswith("00000001") else "train") for p in sorted(corpus.glob("*/*.wav")) if p.parent.name in words]
    write_malformed(tmp_path / "bad")
    rows += [(str(tmp_path / "bad" / "truncated_half.wav"), "yes", "train"),
             (str(tmp_path / "bad" / "song.mp3"), "no", "train")]
    pd.DataFrame(rows, columns=["path", "label", "split"]).to_csv(tmp_path / "clips.csv", index=False)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(f"""
name: plugin
data: {{name: csv_list, path: {tmp_path / 'clips.csv'}, labels: {words}, max_bad_fraction: 0.1}}
model: {{name: tiny}}
chain: {{lengths_ms: [1000, 500], crops_per_clip: 1, baselines: []}}
train: {{epochs: 1, batch_size: 16}}
storage: {{root: {tmp_path / 'runs'}}}
""")
    lines: list[str] = []
    result = run_chain(load_config(cfg_path), Services(tracking=f"sqlite:///{tmp_path / 'm.db'}"), say=lines.append)
    assert [r["stage"] for r in result.rows] == ["teacher", "student_500ms"]
    assert any("24 of 26 files decoded; 2 quarantined" in line for line in lines)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["source_quarantined"] == 2
    assert parent.data.params["data.name"] == "csv_list"
    logged = Path(client.download_artifacts(result.parent_run_id, QUARANTINE, str(tmp_path / "dl")))
    assert set(pd.read_csv(logged).problem.str.split(":").str[0]) == {"truncated", "unsupported format '.mp3'; use WAV, FLAC or OGG"}
