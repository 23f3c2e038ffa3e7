"""The chain on a real two-node Ray cluster with a real MLflow tracking server, submitted the
Ray way: `ray start --head` + `ray start --address` (one CPU each, on this machine), `mlflow
server` on 127.0.0.1 with a SQLite backend, and `ray job submit -- python -m distill.cli run`.
Everything started here is stopped by pid, also when the test fails."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import wait_http, write_sc_layout

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pids_mentioning(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (this test's Ray temp dir): exactly what it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def kill_processes(marker: str) -> None:
    """SIGKILL what ``pids_mentioning(marker)`` finds, three times over: a raylet may start a worker
    while we kill (and respawns nothing once the GCS is gone)."""
    for _ in range(3):
        for pid in pids_mentioning(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(1)


def ray_cli(env: dict, *args: str) -> str:
    proc = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"ray {' '.join(args[:2])} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def state(env: dict, address: str, kind: str, *filters: str) -> list[dict]:
    """Ray's state API through its CLI (a subprocess: the token and address stay out of this process)."""
    out = ray_cli(env, "list", kind, "--address", address, "--format", "json", "--limit", "10000", "--detail",
                  *[x for f in filters for x in ("--filter", f)])
    return [] if out.strip() == "No resource in the cluster" else json.loads(out)  # the CLI's word for none


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("cluster")
    # A short temp dir: Ray's socket paths must stay under the OS limit; its name marks our processes.
    temp = Path(tempfile.mkdtemp(prefix="rayit", dir="/tmp"))
    gcs, dash = free_port(), free_port()
    # Token authentication, as a real cluster should run: every node, the job client and the
    # state queries present the same shared secret.
    (temp / "token").write_text(secrets.token_hex(32))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(temp / "token")}
    # One temp dir per node, as on two machines: nodes sharing one would share (and garbage-collect)
    # each other's unpacked job working directories.
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    mlflow_port = free_port()
    server = None
    try:
        ray_cli(env, "start", "--head", "--port", str(gcs), "--node-ip-address", "127.0.0.1",
                        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash), "--include-dashboard", "true",
                        "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                        "--metrics-export-port", str(free_port()), "--temp-dir", str(temp / "head"), *common)
        ray_cli(env, "start", "--address", f"127.0.0.1:{gcs}", "--node-ip-address", "127.0.0.1",
                "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
                "--temp-dir", str(temp / "worker"), *common)
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", (tmp_path / "server-artifacts").as_uri()],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", 180, what="mlflow server")  # a loaded 2-core machine has taken over 90 s
        wait_http(f"http://127.0.0.1:{dash}/api/version", 60, what="the Ray dashboard",
                  headers={"Authorization": f"Bearer {(temp / 'token').read_text()}"})
        yield dict(gcs=f"127.0.0.1:{gcs}", dashboard=f"http://127.0.0.1:{dash}",
                   mlflow=f"http://127.0.0.1:{mlflow_port}", env=env)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        kill_processes(str(temp))
        assert not pids_mentioning(str(temp)), "Ray processes of the test cluster survived"
        shutil.rmtree(temp, ignore_errors=True)


def test_chain_runs_on_two_nodes_against_a_tracking_server(cluster, tmp_path):
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    storage = tmp_path / "shared-storage"
    (job_dir / "tiny.yaml").write_text(yaml.safe_dump({
        "name": "twonode", "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 4, "baselines": []},
        "train": {"epochs": 2, "batch_size": 32, "num_workers": 2, "cpus_per_worker": 1},
        "relabel": {"batch_size": 16, "cpus_per_actor": 1}, "storage": {"root": str(storage)}}))
    runtime_env = {"working_dir": str(job_dir), "env_vars": {"MLFLOW_TRACKING_URI": cluster["mlflow"]}}
    for _ in range(30):  # the job agent comes up a few seconds after the dashboard
        job = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"],
                              "--runtime-env-json", json.dumps(runtime_env), "--",
                              sys.executable, "-m", "distill.cli", "run", "tiny.yaml"],
                             env=cluster["env"], capture_output=True, text=True, timeout=1200)
        if "No available agent to submit job" not in job.stderr:
            break
        time.sleep(2)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-3000:]
    assert "chain run id:" in job.stdout

    client = MlflowClient(cluster["mlflow"])
    exp = client.get_experiment_by_name("pld")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.`pld.kind` = 'chain'")
    children = {r.data.tags["pld.stage"]: r for r in client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == {"teacher", "student_500ms"}
    assert children["student_500ms"].data.tags["pld.teacher_run_id"] == children["teacher"].info.run_id
    assert all(r.info.status == "FINISHED" and "test_acc_stream" in r.data.metrics for r in children.values())
    assert {r.data.tags["pld.train_runner"] for r in children.values()} == {"workers"}  # two nodes: a worker group
    assert {"checkpoint/model.pt", "checkpoint/model.json"} <= {
        a.path for a in client.list_artifacts(children["teacher"].info.run_id, "checkpoint")}  # via the server
    run_dir = Path(parent.data.tags["pld.run_dir"])
    assert run_dir.is_relative_to(storage) and (run_dir / "stages" / "student_500ms" / "manifest.json").is_file()

    env, address = cluster["env"], cluster["gcs"]
    nodes = {n["node_id"] for n in state(env, address, "nodes") if n["state"] == "ALIVE"}
    assert len(nodes) == 2
    trainers = state(env, address, "actors", "class_name=RayTrainWorker")
    assert {a["node_id"] for a in trainers} == nodes, "training ran on both nodes"
    relabel = [t for t in state(env, address, "tasks")
               if "label_with_teacher" in t["name"] or "TeacherLabeler" in t["name"]]
    assert relabel and {t["node_id"] for t in relabel} == nodes, "relabeling ran on both nodes"


def test_a_driver_with_the_token_runs_a_chain_on_both_nodes(cluster, tmp_path):
    """`pld run --address` (the driver on this machine, not a submitted job) with the cluster's token."""
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "name": "driver", "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 4, "baselines": []},
        "train": {"epochs": 2, "batch_size": 32, "num_workers": 2, "cpus_per_worker": 1},
        "relabel": {"batch_size": 16, "cpus_per_actor": 1}, "storage": {"root": str(tmp_path / "runs")}}))
    env, address = cluster["env"], cluster["gcs"]
    jobs_before = {j["job_id"] for j in state(env, address, "jobs")}
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "c.yaml", "--address", address,
                           "--tracking-uri", cluster["mlflow"]], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    (job,) = {j["job_id"] for j in state(env, address, "jobs")} - jobs_before  # this driver's job
    nodes = {n["node_id"] for n in state(env, address, "nodes") if n["state"] == "ALIVE"}
    trainers = state(env, address, "actors", "class_name=RayTrainWorker", f"job_id={job}")
    assert trainers and {a["node_id"] for a in trainers} == nodes, "training ran on both nodes"
    relabel = [t for t in state(env, address, "tasks", f"job_id={job}")
               if "label_with_teacher" in t["name"] or "TeacherLabeler" in t["name"]]
    assert relabel and {t["node_id"] for t in relabel} == nodes, "relabeling ran on both nodes"
    client = MlflowClient(cluster["mlflow"])
    chain_id = re.search(r"chain run id: (\w+)", proc.stdout).group(1)
    assert {r.data.tags["pld.stage"]: r.info.status for r in client.search_runs(
        [client.get_run(chain_id).info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{chain_id}'")} == {
        "teacher": "FINISHED", "student_500ms": "FINISHED"}


def test_a_worker_bigger_than_every_node_is_refused_before_any_work(cluster, tmp_path):
    """Two 1-CPU nodes have 2 CPUs together, but a 2-CPU training worker fits on neither: Ray
    would wait for it forever. The pre-flight check reasons per node, as Ray places bundles."""
    speakers = [f"{i:08x}" for i in range(4)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed"], speakers, val={speakers[0]}, test={speakers[1]})
    (tmp_path / "big.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "chain": {"lengths_ms": [1000, 500]},
        "train": {"cpus_per_worker": 2}, "storage": {"root": str(tmp_path / "runs")}}))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "big.yaml", "--address", cluster["gcs"],
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=tmp_path, env=cluster["env"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "a worker needs 2 CPU on one node" in proc.stderr and "largest node: 1 CPU" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()
    assert time.monotonic() - started < 120  # refused at once, not after a wait


def test_on_an_autoscaling_cluster_a_stage_waits_says_for_what_and_then_fails(cluster, tmp_path):
    """With ray.autoscaling the same 2-CPU worker passes the pre-flight check (a node may still
    come); the stage says what it waits for and what the cluster has, then fails after
    train.resource_wait_s with that message, instead of waiting forever."""
    speakers = [f"{i:08x}" for i in range(4)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed"], speakers, val={speakers[0]}, test={speakers[1]})
    (tmp_path / "grow.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "chain": {"lengths_ms": [1000, 500], "baselines": []}, "model": {"name": "tiny"},
        "train": {"cpus_per_worker": 2, "resource_wait_s": 20}, "ray": {"autoscaling": True},
        "storage": {"root": str(tmp_path / "runs")}}))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "grow.yaml", "--address", cluster["gcs"],
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=tmp_path, env=cluster["env"], capture_output=True, text=True, timeout=400)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ray.autoscaling: a worker needs 2 CPU on one node" in proc.stdout
    waiting = next(line for line in proc.stdout.splitlines() if "waiting for resources:" in line)
    assert "1 training worker(s) of 2 CPU each on one node" in waiting and "the cluster's nodes: 1 CPU; 1 CPU" in waiting
    assert "waiting up to 20 s (train.resource_wait_s)" in waiting
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("pld: error: stage teacher, train: waited 20 s (train.resource_wait_s) for 1 training worker")
    assert "pld resume " in error and "Traceback" not in proc.stderr
    assert elapsed < 240, elapsed  # gave up after the wait, not after Ray Train's retries


@pytest.mark.parametrize("token", ["no token", "a wrong token"])
def test_without_the_clusters_token_a_job_and_a_driver_are_refused_at_once(cluster, tmp_path, token):
    """Token authentication turns away `ray job submit` (Ray's own CLI: its message names
    RAY_AUTH_TOKEN) and `pld run --address` (one line saying what to set), neither left waiting."""
    env = {k: v for k, v in cluster["env"].items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either (a local ray.init writes one)
    if token == "a wrong token":
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    started = time.monotonic()
    job = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"], "--", "echo", "RAN"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode != 0 and "RAN" not in job.stdout
    assert ("Missing authentication token" if token == "no token" else "Invalid authentication token") in job.stderr
    assert "RAY_AUTH_TOKEN" in job.stderr.strip().splitlines()[-1]
    assert time.monotonic() - started < 60
    # pld submit: the same refusal in one line that says what to set
    submitted = subprocess.run([sys.executable, "-m", "distill.cli", "submit", "--address", cluster["dashboard"], "--",
                                "echo", "RAN"], env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 2 and "RAN" not in submitted.stdout and "Traceback" not in submitted.stderr
    assert submitted.stderr.strip().splitlines()[-1] == (
        f"pld: error: the Ray job server at {cluster['dashboard']} did not accept this submission: "
        + ("no token was given, and a cluster with token authentication refuses a submission without one"
           if token == "no token" else "it refused the token given (a wrong token, or a cluster of another Ray version)")
        + "; set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (a file holding the cluster's token) or RAY_AUTH_TOKEN")

    speakers = [f"{i:08x}" for i in range(4)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed"], speakers, val={speakers[0]}, test={speakers[1]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "chain": {"lengths_ms": [1000, 500]}, "storage": {"root": str(tmp_path / "runs")}}))
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "c.yaml", "--address", cluster["gcs"],
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error == (f"pld: error: the Ray cluster at {cluster['gcs']} answers but did not let this driver in: "
                     + ("no token was given, and a cluster with token authentication refuses a driver without one"
                        if token == "no token" else
                        "it refused the token given (a wrong token, or a cluster of another Ray version)")
                     + "; set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (a file holding the cluster's token) or "
                       "RAY_AUTH_TOKEN"), error
    assert "Traceback" not in proc.stderr and not (tmp_path / "runs").exists()
    assert "InvalidAuthToken" not in proc.stderr and "gcs_client" not in proc.stderr  # Ray's retry lines: --verbose
    assert time.monotonic() - started < 120  # Ray's own ~25 s of attempts, then this line


def test_pld_submit_runs_a_job_with_the_token_and_reports_a_failed_one_in_one_line(cluster):
    def pld_submit(*command):
        return subprocess.run([sys.executable, "-m", "distill.cli", "submit", "--address", cluster["dashboard"],
                               "--env", "GREETING=hello", "--", *command], env=cluster["env"], capture_output=True,
                              text=True, timeout=300)

    for _ in range(30):  # the job agent comes up a few seconds after the dashboard
        ok = pld_submit(sys.executable, "-c", "import os; print('RAN', os.environ['GREETING'])")
        if "No available agent to submit job" not in ok.stderr:
            break
        time.sleep(2)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "RAN hello" in ok.stdout and ok.stdout.strip().splitlines()[-1].endswith("succeeded")
    failed = pld_submit(sys.executable, "-c", "import sys; sys.exit(3)")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("pld: error: job ") and " failed" in line and "ray job logs --address" in line, line


def test_a_driver_nothing_answers_for_fails_at_once(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"data": {"path": str(tmp_path)}}))
    write_sc_layout(tmp_path, KEYWORDS + ["bed"], [f"{i:08x}" for i in range(4)], val={"00000000"}, test={"00000001"})
    port = free_port()  # nothing listens on it
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", "c.yaml", "--address", f"127.0.0.1:{port}",
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        f"pld: error: ray.address 127.0.0.1:{port}: no Ray cluster answers there; start it (ray start --head) or fix "
        "--address / ray.address / RAY_ADDRESS")
    assert time.monotonic() - started < 60  # Ray alone waits over two minutes
