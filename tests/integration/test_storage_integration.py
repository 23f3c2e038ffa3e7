"""A whole chain with `storage.root: s3://…` on a local Ray keeps every output in the bucket (moto's S3 server on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from mlflow import MlflowClient

from distill.runtime import storage
from distill.runtime.manifest import verify


@pytest.mark.integration
def test_a_chain_with_an_s3_storage_root_keeps_every_output_in_the_bucket(tmp_path, s3):
    from distill.data.synth import synthesize_corpus

    corpus = tmp_path / "corpus"
    synthesize_corpus(corpus, seed=3, speakers=8, unknown_words=("bed", "cat"), workers=2, progress=False)
    root = storage.join(s3["bucket"], "runs")
    cfg = tmp_path / "s3.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "s3chain", "data": {"name": "speech_commands", "path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 1, "baselines": ["direct"]},
        "train": {"epochs": 1, "batch_size": 32}, "storage": {"root": root}, "ray": {"num_cpus": 2}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **s3["env"], "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    client = MlflowClient(uri)
    parent = next(r for r in client.search_runs([client.get_experiment_by_name("pld").experiment_id])
                  if r.data.tags.get("pld.kind") == "chain")
    run_dir = parent.data.tags["pld.run_dir"]
    assert run_dir == storage.join(root, f"s3chain-{parent.info.run_id}")
    files = storage.list_files(run_dir)
    for stage in ("teacher", "student_500ms", "direct_500ms"):
        assert f"stages/{stage}/manifest.json" in files and f"stages/{stage}/stage.json" in files, stage
        assert f"stages/{stage}/model/model.pt" in files, stage
        assert any(f.startswith(f"stages/{stage}/data/") and f.endswith(".parquet") for f in files), stage
        assert any(f.startswith(f"stages/{stage}/train/") and "checkpoint_" in f for f in files), stage  # Ray Train
        verify(storage.join(run_dir, "stages", stage))  # sealed, and the bucket holds what the seal says
    assert {"source/manifest.json", "source/quarantine.csv", "config.json", "driver.json"} <= set(files)
    assert any(f.startswith("source/data/split=train/") for f in files)
    assert not (tmp_path / "pld-runs").exists()  # nothing went to the driver's disk
    # a second `pld run` of the same config finds the finished chain complete and starts a new one;
    # `pld resume` reads its records from the bucket and reuses every stage
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "resume", parent.info.run_id], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("finished earlier") == 3
