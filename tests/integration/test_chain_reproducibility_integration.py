"""Whole-chain reproducibility: two fresh chains with the same config and seed on one CPU worker
give identical distilled datasets in every stage (crop references, labels, probabilities, row
order) over identical source bytes, and identical test metrics. (Single steps are tested in test_faults_integration.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml
from mlflow import MlflowClient

from conftest import write_sc_layout

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
TIMING = ("seconds", "latency_us")  # wall-clock figures: not results


def test_two_fresh_chains_with_one_seed_are_identical(tmp_path):
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "seed": 3, "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 750], "crops_per_clip": 2, "baselines": ["direct"]},
        "labels": {"mode": "soft", "temperature": 2.0, "original_weight": 0.5},
        "train": {"epochs": 1, "batch_size": 32, "num_workers": 1, "cpus_per_worker": 1},
        "ray": {"num_cpus": 2}, "storage": {"root": str(tmp_path / "runs")}}))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "c.yaml", "--new", "--tracking-uri", uri],
                              cwd=tmp_path, capture_output=True, text=True, timeout=1200)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("pld")
    chains = sorted(client.search_runs([exp.experiment_id], filter_string="tags.`pld.kind` = 'chain'"),
                    key=lambda r: r.info.start_time)
    assert len(chains) == 2
    stages = []
    for chain in chains:
        children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{chain.info.run_id}'")
        stages.append({r.info.run_name: r for r in children})
    assert set(stages[0]) == set(stages[1]) == {"teacher", "student_750ms", "direct_750ms"}
    for name in stages[0]:
        a, b = (s[name].data.metrics for s in stages)
        results = {k for k in a if not k.endswith(TIMING) and k not in ("ray_start_seconds",)}
        assert {k: a[k] for k in results} == {k: b[k] for k in results}, name
        assert "test_acc_stream" in results and "best_val_acc" in results
        data = [pq.read_table(Path(c.data.tags["pld.run_dir"]) / "stages" / name / "data") for c in chains]
        columns = ["clip_id", "crop_index", "offset", "length", "teacher_label_index", "teacher_probs"]
        assert data[0].select(columns).equals(data[1].select(columns)), name  # every value, in row order
    # the rows reference crops of the source's training clips: the same clips, so the same training inputs
    clips = [pq.read_table(Path(c.data.tags["pld.run_dir"]) / "source" / "data" / "split=train",
                           columns=["clip_id", "waveform"]) for c in chains]
    assert clips[0].equals(clips[1])
