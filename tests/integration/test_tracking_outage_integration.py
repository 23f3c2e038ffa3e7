"""A real `mlflow server` (SQLite backend, on 127.0.0.1) stopped for 30 s in the middle of a stage
and started again on the same port: the chain finishes and its runs hold every param, metric
(every epoch), tag, artifact and dataset input that an undisturbed run of the same config logs.
Past the client's retry budget, the chain stops with one line naming the tracking URI, and
`pld resume` finishes it later without recomputing the finished stage."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import MlflowServer, write_sc_layout

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
OUTAGE_S = 30


@pytest.fixture
def setup(tmp_path):
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 2, "baselines": []},
        "train": {"epochs": 4, "batch_size": 16}, "ray": {"num_cpus": 2},
        "storage": {"root": str(tmp_path / "runs")}}))
    server = MlflowServer(tmp_path)
    server.start()
    yield tmp_path, server
    server.stop()


def chain(cwd: Path, uri: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-u", "-m", "distill.cli", *extra, "--tracking-uri", uri], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, text: str, seen: list[str]) -> None:
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} never printed; output: {''.join(seen)[-3000:]}")


def logged(client: MlflowClient, chain_run_id: str) -> dict:
    """Per stage: param, metric, tag, artifact and input keys, and each epoch metric's steps."""
    run = client.get_run(chain_run_id)
    out = {}
    for child in client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{chain_run_id}'"):
        if child.data.tags.get("pld.superseded") == "true":  # a stage run the failed session left, retired on resume
            continue
        def artifacts(path=None):
            return sorted(a.path for f in client.list_artifacts(child.info.run_id, path)
                          for a in ([f] if not f.is_dir else [f, *[type(f)(p, False, 0) for p in artifacts(f.path)]]))
        out[child.info.run_name] = {
            "params": sorted(child.data.params), "metrics": sorted(child.data.metrics),
            "tags": sorted(t for t in child.data.tags if not t.startswith("mlflow.")),
            "artifacts": sorted(artifacts()), "inputs": len(child.inputs.dataset_inputs),
            "epochs": {k: len(client.get_metric_history(child.info.run_id, k)) for k in ("train_loss", "val_acc")},
            "status": child.info.status}
    return out


def test_a_30_s_tracking_outage_mid_stage_loses_nothing(setup):
    root, server = setup
    client = MlflowClient(server.uri)
    calm = chain(root, server.uri, "run", "c.yaml")
    out, err = calm.communicate(timeout=900)
    assert calm.returncode == 0, out[-2000:] + err[-2000:]

    seen: list[str] = []
    stormy = chain(root, server.uri, "run", "c.yaml", "--new")
    wait_for_line(stormy, "[student_500ms] epoch 1/", seen)  # three more epochs to log: stop the server
    server.stop()
    down = time.time() * 1000
    time.sleep(OUTAGE_S)
    server.start()
    up = time.time() * 1000
    out, err = stormy.communicate(timeout=900)
    assert stormy.returncode == 0, "".join(seen)[-2000:] + out[-2000:] + err[-2000:]

    exp = client.get_experiment_by_name("pld")
    chains = sorted(client.search_runs([exp.experiment_id], "tags.`pld.kind` = 'chain'"), key=lambda r: r.info.start_time)
    before, after = (logged(client, c.info.run_id) for c in chains)
    assert set(before) == set(after) == {"teacher", "student_500ms"}
    for stage in before:
        assert after[stage] == before[stage], stage  # every key, every epoch, every artifact
        assert after[stage]["epochs"] == {"train_loss": 4, "val_acc": 4} and after[stage]["status"] == "FINISHED"
    assert set(client.get_run(chains[1].info.run_id).data.params) == set(client.get_run(chains[0].info.run_id).data.params)
    # the outage hit the student: an epoch's points were stamped (when sent) while the server was
    # down, or one epoch's send held the driver from before the outage to after it; all landed
    (student,) = [r for r in client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{chains[1].info.run_id}'")
                  if r.info.run_name == "student_500ms" and r.data.tags.get("pld.superseded") != "true"]
    stamps = sorted(m.timestamp for m in client.get_metric_history(student.info.run_id, "train_loss"))
    assert len(stamps) == 4 and stamps[0] < up and stamps[-1] >= down, (down, up, stamps)


def test_past_the_retry_budget_the_chain_stops_naming_the_server_and_resume_finishes_it(setup):
    root, server = setup
    seen: list[str] = []
    short = chain(root, server.uri, "run", "c.yaml", "--set", "tracking.max_retries=1",
                  "--set", "tracking.backoff_factor=1")
    wait_for_line(short, "== [2/2] student_500ms", seen)
    server.stop()
    out, err = short.communicate(timeout=600)
    assert short.returncode == 2, out[-2000:] + err[-2000:]
    error = err.strip().splitlines()[-1]
    assert error.startswith("pld: error: ") and f"the tracking server {server.uri} did not answer" in error
    assert "Traceback" not in err
    run_id = next(line.split("chain run ")[1].rstrip(")\n") for line in seen if "chain run " in line)
    assert f"pld resume {run_id}" in error

    server.start()
    resumed = chain(root, server.uri, "resume", run_id)
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, out[-2000:] + err[-2000:]
    assert "teacher: finished earlier" in out  # not recomputed
    stages = logged(MlflowClient(server.uri), run_id)
    assert set(stages) == {"teacher", "student_500ms"}  # one current run per stage
    assert stages["student_500ms"]["status"] == "FINISHED" and stages["student_500ms"]["epochs"]["val_acc"] == 4
