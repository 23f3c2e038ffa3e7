"""A whole worker node lost in the middle of a stage's training, on a real two-node Ray cluster
(`ray start --head` + `ray start --address`, one CPU each, on this machine): the second node's
processes are killed by pid. The chain says at once that the node left, stops after
train.resource_wait_s in one line naming the lost node and the resume command (the node that
remains cannot hold two workers), and `pld resume` finishes it once a node is back, reusing the
teacher and the sealed dataset and continuing from the last epoch's checkpoint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import pytest
import yaml

from conftest import write_sc_layout
from test_cluster_integration import KEYWORDS, free_port, kill_processes, pids_mentioning, ray_cli

pytestmark = pytest.mark.integration
EPOCHS = 6
WAIT_S = 30


@pytest.fixture
def two_nodes():
    temp = Path(tempfile.mkdtemp(prefix="raylost", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    gcs = free_port()
    common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1"]

    def start_worker() -> None:
        ray_cli(env, "start", "--address", f"127.0.0.1:{gcs}", "--dashboard-agent-listen-port", str(free_port()),
                "--metrics-export-port", str(free_port()), "--temp-dir", str(temp / "worker"), *common)

    def start_head() -> None:
        ray_cli(env, "start", "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port()),
                "--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port()),
                "--temp-dir", str(temp / "head"), *common)

    try:
        try:
            start_head()
        except RuntimeError as first:  # a port picked free may be taken before Ray binds it: once more, new ports
            warnings.warn(f"the head node did not start; trying again on other ports: {first}")
            kill_processes(str(temp / "head"))
            gcs = free_port()
            start_head()
        start_worker()
        yield dict(address=f"127.0.0.1:{gcs}", env=env, start_worker=start_worker,
                   kill_worker=lambda: kill_processes(str(temp / "worker")))
    finally:
        kill_processes(str(temp))
        assert not pids_mentioning(str(temp)), "Ray processes of the test cluster survived"
        shutil.rmtree(temp, ignore_errors=True)


def test_a_node_lost_while_a_stage_trains_stops_the_chain_in_one_line_and_resume_finishes_it(two_nodes, tmp_path):
    speakers = [f"{i:08x}" for i in range(12)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 4, "baselines": []},
        "train": {"epochs": EPOCHS, "batch_size": 32, "num_workers": 2, "cpus_per_worker": 1,
                  "resource_wait_s": WAIT_S},
        "relabel": {"batch_size": 16, "cpus_per_actor": 1}, "storage": {"root": str(tmp_path / "runs")}}))
    command = [sys.executable, "-u", "-m", "distill.cli"]
    where = ["--address", two_nodes["address"], "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    proc = subprocess.Popen([*command, "run", "c.yaml", *where], cwd=tmp_path, env=two_nodes["env"], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    out, killed = [], None
    try:
        for line in proc.stdout:
            out.append(line)
            if killed is None and "[student_500ms] epoch 2/" in line:
                two_nodes["kill_worker"]()
                killed = time.monotonic()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text, err = "".join(out), "".join(stderr)
    assert killed is not None, text[-3000:] + err[-2000:]
    assert proc.returncode == 2, text[-3000:] + err[-2000:]
    assert re.search(r"node \S+ \(\w{8}\) left the cluster; Ray Train restarts the workers from the last epoch's "
                     rf"checkpoint once the cluster holds them again, waiting up to {WAIT_S} s", text), text[-3000:]
    error = err.strip().splitlines()[-1]
    assert re.match(rf"pld: error: stage student_500ms, train: node \S+ was lost; waited {WAIT_S} s "
                    r"\(train.resource_wait_s\) for 2 training worker\(s\) of 1 CPU each", error), error
    run_id = re.search(r"pld resume (\w+)$", error).group(1)
    assert "Traceback" not in err
    assert time.monotonic() - killed < WAIT_S + 90  # no hang: the wait, then the stop
    trained = max(int(m) for m in re.findall(r"\[student_500ms\] epoch (\d+)/", text))

    two_nodes["start_worker"]()
    resumed = subprocess.run([*command, "resume", run_id, *where], cwd=tmp_path, env=two_nodes["env"],
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    # what was recomputed: nothing of the teacher or the student's dataset, and only the student's
    # epochs after its last checkpoint
    assert "teacher: finished earlier" in resumed.stdout and "relabel: reused the sealed dataset" in resumed.stdout
    kept = int(re.search(r"continuing from the checkpoint of epoch (\d+)", resumed.stdout).group(1))
    assert 1 <= kept <= trained
    again = [int(m) for m in re.findall(r"\[student_500ms\] epoch (\d+)/", resumed.stdout)]
    assert again == list(range(kept + 1, EPOCHS + 1)), again
    print(f"\nlost node: the student had trained {trained} epoch(s); resume kept {kept} and trained "
          f"{len(again)} again; teacher and dataset reused")
