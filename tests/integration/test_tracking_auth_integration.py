"""A real `mlflow server --app-name basic-auth` on 127.0.0.1 (users alice and bob; alice owns the
experiment `pld`): a chain without credentials, with a wrong password, or as a user without
permission stops before any work in one line that says what to set; alice's chain, with her
password in a file, the object store's secret key and a Ray token in its environment, survives a
tracking outage and leaves none of the three secrets in any record it writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.server.auth.client import AuthServiceClient

from conftest import MlflowServer, write_sc_layout

pytestmark = pytest.mark.integration
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
ADMIN_PW = "admin-pw-0a1b2c3d4e"
ALICE_PW = "alice-SECRET-pw-7f3a9c"  # recognizable: searched for in every record afterwards
BOB_PW = "bob-pw-0123456789"
AWS_SECRET = "AWS-SECRET-5b1e77d0"
RAY_TOKEN = "RAYTOKEN" + "c0ffee" * 8
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_PASSWORD_FILE",
                   "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI")


@contextmanager
def as_user(name: str, password: str):
    saved = {k: os.environ.pop(k, None) for k in CREDENTIAL_VARS}
    os.environ.update(MLFLOW_TRACKING_USERNAME=name, MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth-server")
    server = MlflowServer(root, admin_password=ADMIN_PW)
    server.start()
    try:
        with as_user("admin", ADMIN_PW):
            users = AuthServiceClient(server.uri)
            users.create_user("alice", ALICE_PW)
            users.create_user("bob", BOB_PW)
        with as_user("alice", ALICE_PW):
            MlflowClient(server.uri).create_experiment("pld")  # alice owns it; bob may only read it
        yield server
    finally:
        server.stop()


@pytest.fixture
def corpus(tmp_path):
    speakers = [f"{i:08x}" for i in range(8)]
    return write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed"], speakers, val={speakers[0]}, test={speakers[1]})


def base_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARS}
    return {**env, **extra}


def write_config(tmp_path: Path, corpus: Path, root: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 2, "baselines": []},
        "train": {"epochs": 3, "batch_size": 16}, "ray": {"num_cpus": 2}, "storage": {"root": root}}))
    return path


def chain_runs_in_pld(server) -> int:
    with as_user("admin", ADMIN_PW):
        client = MlflowClient(server.uri)
        return len(client.search_runs([client.get_experiment_by_name("pld").experiment_id]))


@pytest.mark.parametrize("who", ["no credentials", "a wrong password", "bob, who may only read"])
def test_a_refused_chain_stops_in_one_line_before_any_work(server, corpus, tmp_path, who):
    env = base_env(**{"no credentials": {}, "a wrong password": dict(
        MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD="wrong-Guess-123"),
        "bob, who may only read": dict(MLFLOW_TRACKING_USERNAME="bob", MLFLOW_TRACKING_PASSWORD=BOB_PW)}[who])
    cfg = write_config(tmp_path, corpus, str(tmp_path / "runs"))
    before = chain_runs_in_pld(server)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(cfg), "--tracking-uri", server.uri],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"pld: error: the tracking server {server.uri} (/api/2.0/mlflow/"), error
    if who == "bob, who may only read":
        assert "refused user 'bob' (HTTP 403, permission denied): ask the server's admin for EDIT permission" in error
    else:
        assert "refused the request (HTTP 401): " in error and "set MLFLOW_TRACKING_USERNAME and " in error
        assert ("no credentials were given" if who == "no credentials"
                else "user 'alice' with the password given was not accepted") in error
    assert "Traceback" not in proc.stderr and "wrong-Guess-123" not in proc.stdout + proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr  # refused before the cluster started
    assert not (tmp_path / "runs").exists() and chain_runs_in_pld(server) == before  # nothing written anywhere
    assert time.monotonic() - started < 60  # at once: a refusal is not retried like an outage


def hits(data: bytes) -> dict[str, int]:
    return {name: data.count(secret.encode()) for name, secret in
            (("tracking password", ALICE_PW), ("AWS secret key", AWS_SECRET), ("Ray token", RAY_TOKEN))}


def add(total: dict, counts: dict) -> None:
    for k, v in counts.items():
        total[k] = total.get(k, 0) + v


def test_a_chain_with_secrets_in_its_environment_survives_an_outage_and_records_none(server, corpus, tmp_path, s3):
    secret_file = tmp_path / "alice.password"
    secret_file.write_text(ALICE_PW + "\n")
    ray_temp = Path(tempfile.mkdtemp(prefix="raysec", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = base_env(**{**s3["env"], "AWS_SECRET_ACCESS_KEY": AWS_SECRET}, MLFLOW_TRACKING_USERNAME="alice",
                   MLFLOW_TRACKING_PASSWORD_FILE=str(secret_file), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN,
                   RAY_TMPDIR=str(ray_temp))
    root = f"{s3['bucket']}/secret-run"
    cfg = write_config(tmp_path, corpus, root)
    proc = None
    try:
        proc = subprocess.Popen([sys.executable, "-u", "-m", "distill.cli", "run", str(cfg), "--verbose",
                                 "--tracking-uri", server.uri], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "[student_500ms] epoch 1/3" in line:  # the student trains on and logs two more epochs: stop the server
                break
        server.stop()
        down = time.time() * 1000
        time.sleep(20)
        server.start()
        up = time.time() * 1000
        out, err = proc.communicate(timeout=900)
        console = "".join(seen) + out + err
        assert proc.returncode == 0, console[-4000:]

        with as_user("admin", ADMIN_PW):
            client = MlflowClient(server.uri)
            exp = client.get_experiment_by_name("pld")
            runs = client.search_runs([exp.experiment_id])
            (chain,) = [r for r in runs if r.data.tags.get("pld.kind") == "chain"]
            stages = {r.data.tags["pld.stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == chain.info.run_id}
            assert set(stages) == {"teacher", "student_500ms"} and chain.data.tags["mlflow.user"] == "alice"
            student = stages["student_500ms"]
            assert student.info.status == "FINISHED" and student.info.start_time < down
            # the outage hit the student: an epoch's points were stamped (when sent) while the server was
            # down, or one epoch's send held the driver from before the outage to after it; all landed
            logged = {m.step: m.timestamp for m in client.get_metric_history(student.info.run_id, "train_loss")}
            assert sorted(logged) == [0, 1, 2] and min(logged.values()) < up and max(logged.values()) >= down, (
                down, up, logged)

            found: dict[str, dict[str, int]] = {"console (--verbose)": hits(console.encode())}
            mlflow_hits: dict[str, int] = {}
            artifacts = tmp_path / "artifacts"
            for run in runs:
                add(mlflow_hits, hits(repr((run.data.params, run.data.tags, sorted(run.data.metrics),
                                            run.info.run_name, run.inputs)).encode()))
                local = Path(client.download_artifacts(run.info.run_id, "", str(artifacts / run.info.run_id)))
                for f in local.rglob("*"):
                    if f.is_file():
                        add(mlflow_hits, hits(f.read_bytes()))
            found["MLflow params, tags, metric names, inputs and artifacts"] = mlflow_hits
            assert sum(1 for _ in artifacts.rglob("*.pt")) >= 2  # the artifacts were there to search
        found["tracking server's store (server.db)"] = hits((server.root / "server.db").read_bytes())

        endpoint = s3["env"]["AWS_ENDPOINT_URL"].removeprefix("http://")
        fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="test", secret_key="test",
                               region="us-east-1")
        objects = [i for i in fs.get_file_info(pafs.FileSelector("pld-test/secret-run", recursive=True))
                   if i.type == pafs.FileType.File]
        storage_hits: dict[str, int] = {}
        for info in objects:
            with fs.open_input_stream(info.path) as f:
                add(storage_hits, hits(f.read()))
        names = {Path(i.path).name for i in objects}
        assert {"driver.json", "stage.json"} <= names, sorted(names)  # the driver's and stages' records were searched
        found["storage root (datasets, manifests, checkpoints, driver records)"] = storage_hits
        ray_hits: dict[str, int] = {}
        for f in ray_temp.rglob("*"):
            if f.is_file() and not f.is_socket():
                add(ray_hits, hits(f.read_bytes()))
        found["Ray's session directory (logs, runtime envs)"] = ray_hits
        print("\nsecret hits per place:", *(f"  {place}: {counts}" for place, counts in found.items()), sep="\n")
        assert all(n == 0 for counts in found.values() for n in counts.values()), found
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        shutil.rmtree(ray_temp, ignore_errors=True)
