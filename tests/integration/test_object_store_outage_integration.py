"""A chain with `storage.root: s3://…` (moto's S3 server on 127.0.0.1) keeps every output in the
bucket, and survives the object store going away for 20 s, once while a stage relabels and once
while it trains. moto keeps its buckets in memory,
so the outage is injected at its endpoint: a forwarder in front of it stops listening and resets
its connections (`conftest.Gate`). A step that cannot reach the store stops the chain with one
line naming the store and the resume command; the training restarts (train.max_failures)
may carry a training step through. Either way `pld resume` finishes the chain, and nothing the
outage cut short is ever taken for finished: the sealed manifests and stage records catch it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import Gate, write_sc_layout
from distill.runtime.infra import storage
from distill.runtime.infra.manifest import IntegrityError, is_sealed, verify
from distill.runtime.infra.resume import finished_stage

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
OUTAGE_S = 20
STAGES = ("teacher", "student_500ms")


def chain(cwd: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", "-m", "distill.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_with_outage(proc: subprocess.Popen, gate: Gate, when: str) -> tuple[int, str, str]:
    """Close the gate for OUTAGE_S once ``when`` is printed; the exit code, stdout and stderr."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if when in line:
            gate.close()
            time.sleep(OUTAGE_S)
            gate.open()
            break
    else:
        raise AssertionError(f"{when!r} never printed: {''.join(seen)[-3000:]} {proc.stderr.read()[-3000:]}")
    out, err = proc.communicate(timeout=900)
    return proc.returncode, "".join(seen) + out, err


def assert_clean_stop(err: str, run_id: str, root: str) -> None:
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("pld: error: stage ") and f"the object store of storage.root {root} did not answer" in last
    assert f"pld resume {run_id}" in last


@pytest.mark.integration
def test_an_s3_chain_keeps_its_outputs_in_the_bucket_and_loses_nothing_to_store_outages(tmp_path, s3):
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    root = storage.join(s3["bucket"], "outage")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 2, "baselines": []},
        "train": {"epochs": 3, "batch_size": 16}, "ray": {"num_cpus": 2}, "storage": {"root": root}}))
    gate = Gate(s3["port"])
    gate.open()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, **s3["env"], "AWS_ENDPOINT_URL": f"http://127.0.0.1:{gate.port}", "MLFLOW_TRACKING_URI": uri}
    try:
        # 1. the store goes away as the student starts relabelling: a clean stop
        code, out, err = run_with_outage(chain(tmp_path, env, "run", "c.yaml"), gate, "== [2/2] student_500ms")
        run_id = next(line.split("chain run ")[1].split(")")[0] for line in out.splitlines() if "chain run " in line)
        assert code == 2, out[-2000:] + err[-3000:]
        assert_clean_stop(err, run_id, root)
        run_dir = storage.join(root, f"pld-{run_id}")
        student = storage.join(run_dir, "stages", "student_500ms")
        assert not is_sealed(student) and not storage.exists(storage.join(student, "stage.json"))

        # 2. resumed; the store goes away again while the student trains
        code, out, err = run_with_outage(chain(tmp_path, env, "resume", run_id), gate, "[student_500ms] epoch 1/3")
        assert "teacher: finished earlier" in out, out[-3000:]
        # the outage hit the training: it restarted (and says so), or it stopped cleanly
        assert code != 0 or "training failed (" in out, out[-3000:] + err[-3000:]
        if code != 0:  # past the training's restarts: the same clean stop, and a second resume
            assert_clean_stop(err, run_id, root)
            assert finished_stage(storage.join(run_dir, "stages", "student_500ms"), MlflowClient(uri)) is None
            resumed = chain(tmp_path, env, "resume", run_id)
            out, err = resumed.communicate(timeout=900)
            assert resumed.returncode == 0, out[-2000:] + err[-3000:]
            assert out.count("finished earlier") == 1

        # 3. every stage is whole: sealed data that matches its hash, a model that matches its record,
        # a FINISHED run with every epoch
        client = MlflowClient(uri)
        for stage in STAGES:
            stage_dir = storage.join(run_dir, "stages", stage)
            verify(stage_dir)
            record = finished_stage(stage_dir, client)
            assert record is not None, stage
            steps = [m.step for m in client.get_metric_history(record["run_id"], "val_acc")]
            # every epoch's point, those a restart restored from a checkpoint included (an epoch a
            # restart trained again is logged again at its step)
            assert sorted(set(steps)) == [0, 1, 2] and max(steps) == 2, (stage, steps)

        # every output is in the bucket, none on the driver's disk; a resume of the finished chain
        # reads its records from the bucket and reuses every stage
        files = storage.list_files(run_dir)
        for stage in STAGES:
            assert {f"stages/{stage}/manifest.json", f"stages/{stage}/stage.json", f"stages/{stage}/model/model.pt"} <= set(files)
            assert any(f.startswith(f"stages/{stage}/data/") and f.endswith(".parquet") for f in files), stage
            # each epoch's checkpoint, written by the local runner (one CPU worker on one node)
            assert f"stages/{stage}/train/{stage}-local/epoch-0002/COMPLETE" in files, stage
        assert {"source/manifest.json", "source/quarantine.csv", "config.json", "driver.json"} <= set(files)
        assert any(f.startswith("source/data/split=train/") for f in files)
        assert not (tmp_path / "pld-runs").exists()
        done = chain(tmp_path, env, "resume", run_id)
        out, err = done.communicate(timeout=600)
        assert done.returncode == 0 and out.count("finished earlier") == 2 and "epoch" not in out, err[-3000:]

        # 4. what an outage can leave half-written is refused: a data file missing from a sealed dataset,
        # a model file missing from a finished stage
        data_dir = storage.join(run_dir, "stages", "student_500ms", "data")
        fs, path = storage.filesystem(storage.join(data_dir, storage.list_files(data_dir)[0]))
        fs.delete_file(path)
        with pytest.raises(IntegrityError, match="changed after the manifest"):
            verify(storage.join(run_dir, "stages", "student_500ms"))
        model_dir = storage.join(run_dir, "stages", "teacher", "model")
        fs, path = storage.filesystem(storage.join(model_dir, "model.pt"))
        fs.delete_file(path)
        assert finished_stage(storage.join(run_dir, "stages", "teacher"), client) is None
    finally:
        gate.close()
