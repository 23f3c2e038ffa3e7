"""The whole chain through the `pld` CLI on a tiny synthetic corpus, with a real local Ray
and a real (SQLite) MLflow store: run structure, contracted tags, Parquet schema and rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient

from distill.data.synth import synthesize_corpus

pytestmark = pytest.mark.integration
PROVENANCE = {"clip_id", "offset", "length", "source_label", "teacher_label", "teacher_probs", "teacher_confidence",
              "teacher_run_id", "waveform"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    corpus = root / "corpus"
    synthesize_corpus(corpus, seed=5, speakers=12, unknown_words=("bed", "bird", "cat", "dog"), workers=2,
                      progress=False)
    config = {
        "name": "it", "seed": 1,
        "data": {"name": "speech_commands", "path": str(corpus)},
        "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 750, 500], "crops_per_clip": 2},
        "train": {"epochs": 2, "batch_size": 32},
        "storage": {"root": str(root / "runs")},
        "ray": {"num_cpus": 2},
    }
    cfg_path = root / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(cfg_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return dict(root=root, corpus=corpus, stdout=proc.stdout, client=MlflowClient(uri))


def runs_of(chain):
    client = chain["client"]
    exp = client.get_experiment_by_name("pld")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pld.kind") == "chain"]
    assert len(parents) == 1
    parent = parents[0]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parent, children


def test_run_structure_and_contracted_tags(chain):
    parent, children = runs_of(chain)
    assert list(sorted(children)) == sorted(["teacher", "student_1000ms", "student_750ms", "student_500ms",
                                             "direct_500ms", "one_shot_500ms"])
    expect = {  # name: (kind, method, input_ms, teacher stage)
        "teacher": ("teacher", "pld", "1000", None), "student_1000ms": ("student", "pld", "1000", "teacher"),
        "student_750ms": ("student", "pld", "750", "student_1000ms"),
        "student_500ms": ("student", "pld", "500", "student_750ms"),
        "direct_500ms": ("baseline", "direct", "500", None), "one_shot_500ms": ("baseline", "one_shot", "500", "teacher"),
    }
    for name, (kind, method, input_ms, teacher) in expect.items():
        tags = children[name].data.tags
        assert (tags["pld.kind"], tags["pld.method"], tags["pld.input_ms"]) == (kind, method, input_ms), name
        assert tags["pld.teacher_run_id"] == (children[teacher].info.run_id if teacher else ""), name
        assert children[name].info.status == "FINISHED"
    assert parent.info.status == "FINISHED"


def test_each_stage_logs_params_metrics_model_and_dataset(chain):
    parent, children = runs_of(chain)
    client = chain["client"]
    for name, run in children.items():
        metrics = run.data.metrics
        for key in ("test_acc_window", "test_acc_stream", "test_acc_center"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key)
        assert metrics["macs"] > 0
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2  # one per epoch
        assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 2
        assert run.data.params["input_ms"] == run.data.tags["pld.input_ms"]
        assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == f"{name}-crops"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert {"checkpoint/model.pt", "checkpoint/model.json"} <= artifacts
        assert client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "config.yaml"} <= parent_artifacts
    summary = Path(client.download_artifacts(parent.info.run_id, "summary.md")).read_text()
    assert "one_shot_500ms" in summary and "acc_stream" in summary


def test_distilled_parquet_schema_rows_and_provenance(chain):
    parent, children = runs_of(chain)
    run_dir = Path(parent.data.tags["pld.run_dir"])
    train_clips = pq.read_table(run_dir / "source" / "data" / "split=train").num_rows
    tables = {}
    for name, run in children.items():
        table = pq.read_table(run_dir / "stages" / name / "data")
        assert PROVENANCE <= set(table.column_names), name
        assert table.num_rows == 2 * train_clips, name  # crops_per_clip × training clips
        tables[name] = table.to_pandas()
    student = tables["student_750ms"]
    assert set(student.teacher_run_id) == {children["student_1000ms"].info.run_id}
    assert (student.length == 12000).all() and student.offset.between(0, 4000).all()
    assert set(tables["direct_500ms"].teacher_run_id) == {""}
    assert (tables["direct_500ms"].teacher_label == tables["direct_500ms"].source_label).all()
    # the baselines train on the very crops of the final student
    key = lambda df: sorted(zip(df.clip_id, df.offset))  # noqa: E731
    assert key(tables["direct_500ms"]) == key(tables["one_shot_500ms"]) == key(tables["student_500ms"])


def test_cli_prints_the_summary_table(chain):
    parent, _ = runs_of(chain)
    out = chain["stdout"]
    header = next(line for line in out.splitlines() if line.startswith("stage "))
    for col in ("method", "input_ms", "teacher", "acc_window", "acc_stream", "acc_center", "macs"):
        assert col in header
    assert f"chain run id: {parent.info.run_id}" in out
    assert "[student_750ms] epoch 2/2" in out
