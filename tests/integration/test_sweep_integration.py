"""`pld sweep`: a grid of chains as Ray Tune trials under one MLflow sweep run; a crashed
trial does not take the sweep down."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from mlflow import MlflowClient

from conftest import write_sc_layout

pytestmark = pytest.mark.integration
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def test_a_grid_of_chains_runs_as_tune_trials_under_one_sweep_run(tmp_path):
    speakers = [f"{i:08x}" for i in range(8)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed"], speakers, val={speakers[0]}, test={speakers[1]})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "sw", "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 1, "baselines": []}, "train": {"epochs": 1, "batch_size": 32},
        "storage": {"root": str(tmp_path / "runs")}, "ray": {"num_cpus": 2}}))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    # 2 × 2 points; a negative channel count passes the config but breaks the network at build time
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "sweep", str(cfg),
                           "--grid", "labels.temperature=[1, 4]", "--grid", "model.options=[{}, {channels: -1}]",
                           "--max-concurrent", "2", "--tracking-uri", uri],
                          cwd=tmp_path, env={**os.environ}, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pld")
    (sweep,) = client.search_runs([exp.experiment_id], filter_string="tags.`pld.kind` = 'sweep'")
    chains = client.search_runs([exp.experiment_id], filter_string="tags.`pld.kind` = 'chain'")
    assert all(c.data.tags["mlflow.parentRunId"] == sweep.info.run_id for c in chains)
    finished = [c for c in chains if c.info.status == "FINISHED"]
    assert sorted(c.data.params["labels.temperature"] for c in finished) == ["1.0", "4.0"]
    assert all("model.options.channels" not in c.data.params for c in finished)  # the crashed points failed
    assert sweep.data.metrics["trials_ok"] == 2 and sweep.data.metrics["trials_failed"] == 2
    assert sweep.data.tags["pld.best_chain_run_id"] in {c.info.run_id for c in finished}
    rows = proc.stdout[proc.stdout.index("point  "):].split("\n\n")[0].splitlines()[2:]
    assert len(rows) == 4 and sum(" ok " in r for r in rows) == 2 and sum(r.endswith(" failed") for r in rows) == 2
    assert "best (final student, stream protocol): point" in proc.stdout
    assert "Failed to fetch metrics" not in proc.stdout + proc.stderr  # Tune's result files are off, deliberately
