"""A chain survives its driver: SIGKILL `pld run` in the middle of a later stage, run it again,
and it continues where it stopped — earlier stages (runs, datasets, models) reused, not
recomputed; the parent run continued, not duplicated; the final runs complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from conftest import write_sc_layout

pytestmark = pytest.mark.integration
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def files_of(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its inode and modification time: a recomputed file differs."""
    return {str(p.relative_to(path)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


def test_a_killed_driver_resumes_at_the_first_unfinished_stage(tmp_path):
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "resume", "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 750, 500], "crops_per_clip": 2, "baselines": []},
        "train": {"epochs": 3, "batch_size": 32, "cpus_per_worker": 1},
        "storage": {"root": str(tmp_path / "runs")}, "ray": {"num_cpus": 2}}))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "distill.cli", "run", str(cfg)]
    # its own session: the kill takes the driver and the local Ray it started, like a lost machine
    driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    seen, killed_at = [], None
    try:
        for line in driver.stdout:
            seen.append(line)
            if "[student_500ms] epoch 1/3" in line:  # mid-training of the last stage
                killed_at = line.strip()
                os.killpg(driver.pid, signal.SIGKILL)
                break
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    assert killed_at, "".join(seen)[-3000:]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("pld")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`pld.kind` = 'chain'")
    assert parent.info.status == "RUNNING"  # nobody closed it: the driver died
    run_dir = Path(parent.data.tags["pld.run_dir"])
    before = {name: files_of(run_dir / "stages" / name) for name in ("teacher", "student_750ms")}
    before["source"] = files_of(run_dir / "source" / "data")
    killed_dataset = files_of(run_dir / "stages" / "student_500ms" / "data")
    first = {r.data.tags["pld.stage"]: r for r in client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert first["teacher"].info.status == first["student_750ms"].info.status == "FINISHED"
    assert first["student_500ms"].info.status == "RUNNING"

    time.sleep(2)
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"resuming unfinished chain {parent.info.run_id}" in again.stdout
    assert "teacher: finished earlier" in again.stdout and "student_750ms: finished earlier" in again.stdout
    assert "relabel: reused the sealed dataset" in again.stdout  # student_500ms's crops were complete

    chains = client.search_runs([exp.experiment_id], filter_string="tags.`pld.kind` = 'chain'")
    assert [c.info.run_id for c in chains] == [parent.info.run_id]  # continued, not duplicated
    assert chains[0].info.status == "FINISHED"
    after = {name: files_of(run_dir / "stages" / name) for name in ("teacher", "student_750ms")}
    after["source"] = files_of(run_dir / "source" / "data")
    assert after == before  # not one file of the finished stages was rewritten
    assert files_of(run_dir / "stages" / "student_500ms" / "data") == killed_dataset
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    current = {r.data.tags["pld.stage"]: r for r in runs if r.data.tags.get("pld.superseded") != "true"}
    assert {k: r.info.run_id for k, r in current.items() if k != "student_500ms"} == {
        "teacher": first["teacher"].info.run_id, "student_750ms": first["student_750ms"].info.run_id}
    assert all(r.info.status == "FINISHED" for r in current.values())
    assert current["student_500ms"].info.run_id != first["student_500ms"].info.run_id
    old = client.get_run(first["student_500ms"].info.run_id)
    assert old.info.status == "KILLED" and old.data.tags["pld.superseded"] == "true"
    new = current["student_500ms"]
    assert new.data.tags["pld.teacher_run_id"] == first["student_750ms"].info.run_id
    assert {"test_acc_stream", "macs"} <= set(new.data.metrics)
    # the driver trains this stage (train.runner auto: one CPU worker, one node) and writes epoch
    # 1's checkpoint before it prints its line: the new run continues from it, says so, and still
    # carries the whole curve (epoch 1's point restored from the checkpoint)
    assert "[student_500ms] restarted after a failure; continuing from the checkpoint of epoch 1" in again.stdout
    assert "[student_500ms] epoch 1/3" not in again.stdout
    steps = [m.step for m in client.get_metric_history(new.info.run_id, "val_acc")]
    assert sorted(steps) == [0, 1, 2], steps
    first_epoch = torch.load(run_dir / "stages" / "student_500ms" / "train" / "student_500ms-local" / "epoch-0000" /
                             "train_state.pt", weights_only=True)["history"][0]
    restored = {m.step: m.value for m in client.get_metric_history(new.info.run_id, "val_acc")}[0]
    assert restored == pytest.approx(first_epoch["val_acc"])
    summary = Path(client.download_artifacts(parent.info.run_id, "summary.md", str(tmp_path))).read_text()
    assert all(name in summary for name in ("teacher", "student_750ms", "student_500ms"))

    # resuming a finished chain recomputes nothing
    done = subprocess.run([sys.executable, "-m", "distill.cli", "resume", parent.info.run_id], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("finished earlier") == 3 and "epoch" not in done.stdout
