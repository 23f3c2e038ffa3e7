"""``train.keep: average`` through a real chain (local Ray, SQLite MLflow): the stage's model is
the mean of its last ``average_epochs`` epochs' weights, batch-norm statistics included, and
its validation accuracy is the averaged model's. The same chain's teacher has its own network
(``teacher_model``), wider than its student's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from conftest import write_sc_layout
from distill.core.checkpoint import WEIGHTS, load_model_dir
from distill.runtime.execution.train import TRAIN_STATE

pytestmark = pytest.mark.integration
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def test_the_kept_model_is_the_mean_of_the_last_epochs(tmp_path: Path) -> None:
    speakers = [f"{i:08x}" for i in range(8)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "model": {"name": "tiny", "options": {"channels": 4}},
        "teacher_model": {"name": "tiny", "options": {"channels": 12}},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 1, "baselines": []},
        "train": {"epochs": 1, "teacher_epochs": 3, "batch_size": 16, "keep": "average", "average_epochs": 2,
                  "cpus_per_worker": 1, "keep_all_checkpoints": True},  # the witness: every epoch's trained weights
        "ray": {"num_cpus": 2}, "storage": {"root": str(tmp_path / "runs")}}))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "c.yaml", "--tracking-uri", uri],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[teacher] epoch 3/3" in proc.stdout and "averaged weights: val_acc" in proc.stdout

    (run_dir,) = (tmp_path / "runs").glob("pld-*")
    stage = run_dir / "stages" / "teacher"
    model, spec = load_model_dir(stage / "model")
    assert spec.extra["averaged_epochs"] == 2 and spec.extra["epoch"] == 2
    assert (spec.model, spec.options) == ("tiny", {"channels": 12})  # the teacher's own network
    _, student = load_model_dir(run_dir / "stages" / "student_500ms" / "model")
    assert (student.model, student.options) == ("tiny", {"channels": 4})
    # each epoch's checkpoint keeps the trained (not averaged) weights in its train state
    states = {}
    for d in (stage / "train").rglob(TRAIN_STATE):
        state = torch.load(d, weights_only=True)
        states[state["epoch"]] = state["model"]
    assert sorted(states) == [0, 1, 2]
    kept = torch.load(stage / "model" / WEIGHTS, weights_only=True)
    for name, value in kept.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[1][name] + states[2][name]) / 2, msg=name)
    assert not torch.equal(kept["net.conv1.weight"], states[2]["net.conv1.weight"])  # not just the last epoch

    client = MlflowClient(uri)
    teacher = client.search_runs([client.get_experiment_by_name("pld").experiment_id],
                                 filter_string="tags.`pld.stage` = 'teacher'")[0]
    assert teacher.data.metrics["best_val_acc"] == pytest.approx(spec.extra["val_acc"])
    assert teacher.data.metrics["best_epoch"] == 2
    assert [m.step for m in client.get_metric_history(teacher.info.run_id, "val_acc")] == [0, 1, 2]

    # The teacher scoring its validation split after every second epoch and the last only: the
    # same weights to the bit (nothing trains on it), the same kept score, fewer curve points.
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "c.yaml", "--tracking-uri", uri,
                           "--set", f"storage.root={tmp_path / 'runs-fewer'}",
                           "--set", "stages.teacher.train.validate_every=2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = next(line for line in proc.stdout.splitlines() if "[teacher] epoch 1/3" in line)
    assert "val_acc" not in first and "[teacher] epoch 2/3" in proc.stdout
    (fewer_dir,) = (tmp_path / "runs-fewer").glob("pld-*")
    fewer = torch.load(fewer_dir / "stages" / "teacher" / "model" / WEIGHTS, weights_only=True)
    assert fewer.keys() == kept.keys() and all(torch.equal(fewer[k], kept[k]) for k in kept)
    assert load_model_dir(fewer_dir / "stages" / "teacher" / "model")[1].extra["val_acc"] == spec.extra["val_acc"]
    chain_id = proc.stdout.split("chain run id: ")[1].split()[0]
    (fewer_teacher,) = client.search_runs([client.get_experiment_by_name("pld").experiment_id],
                                          filter_string=f"tags.`pld.stage` = 'teacher' and "
                                                        f"tags.mlflow.parentRunId = '{chain_id}'")
    assert [m.step for m in client.get_metric_history(fewer_teacher.info.run_id, "val_acc")] == [1, 2]
    assert len(client.get_metric_history(fewer_teacher.info.run_id, "train_loss")) == 3


def test_a_res15_teacher_teaches_res8_narrow_students(tmp_path: Path) -> None:
    """Tang & Lin's deepest network as the teacher, their narrow one as every student: each
    stage trains and keeps its own architecture, and the report leaves the teacher out of the
    input-cost ratios (another network's cost is not the input's)."""
    speakers = [f"{i:08x}" for i in range(6)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "model": {"name": "res8_narrow"}, "teacher_model": {"name": "res15"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 1, "baselines": ["direct"]},
        "train": {"epochs": 1, "teacher_epochs": 1, "batch_size": 16}, "ray": {"num_cpus": 2},
        "storage": {"root": str(tmp_path / "runs")}}))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "c.yaml", "--tracking-uri", uri],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").glob("pld-*")
    models = {stage: load_model_dir(run_dir / "stages" / stage / "model")[1].model
              for stage in ("teacher", "student_500ms", "direct_500ms")}
    assert models == {"teacher": "res15", "student_500ms": "res8_narrow", "direct_500ms": "res8_narrow"}
    chain_id = proc.stdout.split("chain run id: ")[1].split()[0]
    report = subprocess.run([sys.executable, "-m", "distill.cli", "report", chain_id, "--out", str(tmp_path / "rep"),
                             "--tracking-uri", uri], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "the teacher is another network, res15, so it is left out" in (tmp_path / "rep" / "report.md").read_text()
