"""One driver per chain: ``claim_driver`` refuses to resume a chain whose driver still runs on
this host, and takes over a claim whose driver is gone, or whose host it cannot look at."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from distill.runtime.infra.resume import DRIVER, claim_driver

HOST = socket.gethostname()


def claimed_by(run_dir, pid, host=HOST) -> None:
    (run_dir / DRIVER).write_text(json.dumps({"pid": pid, "host": host, "run_id": "run-1"}))


def owner(run_dir) -> dict:
    return json.loads((run_dir / DRIVER).read_text())


@pytest.fixture
def live_pid():
    """The pid of another process on this host, alive until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid():
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    return proc.pid


def test_a_run_dir_without_a_driver_is_claimed_by_this_process(tmp_path):
    claim_driver(str(tmp_path), "run-1")
    assert owner(tmp_path) == {"pid": os.getpid(), "host": HOST, "run_id": "run-1"}


def test_a_live_driver_on_this_host_refuses_a_second_claim(tmp_path, live_pid):
    claimed_by(tmp_path, live_pid)
    with pytest.raises(ValueError) as refused:
        claim_driver(str(tmp_path), "run-1")
    message = str(refused.value)
    assert "chain run-1 is still running" in message and f"driver pid {live_pid} on this host" in message
    assert "--new" in message  # what to do: wait, stop it, or start a separate chain
    assert owner(tmp_path)["pid"] == live_pid  # the running driver keeps its claim


def test_a_dead_drivers_claim_is_taken_over(tmp_path, dead_pid):
    claimed_by(tmp_path, dead_pid)
    claim_driver(str(tmp_path), "run-1")
    assert owner(tmp_path) == {"pid": os.getpid(), "host": HOST, "run_id": "run-1"}


def test_a_claim_from_another_host_is_taken_over_even_if_its_pid_runs_here(tmp_path, live_pid):
    # a pid names a process only on its own host: this one cannot tell whether that driver runs,
    # so it does not refuse (the check is "on this machine"), and it must not read the pid as its own
    claimed_by(tmp_path, live_pid, host=HOST + "-elsewhere")
    claim_driver(str(tmp_path), "run-1")
    assert owner(tmp_path) == {"pid": os.getpid(), "host": HOST, "run_id": "run-1"}


def test_this_processs_own_claim_does_not_block_it(tmp_path):
    claimed_by(tmp_path, os.getpid())  # alive, on this host, but it is this driver
    claim_driver(str(tmp_path), "run-1")
    assert owner(tmp_path)["pid"] == os.getpid()


def test_an_unreadable_claim_is_taken_over(tmp_path):
    (tmp_path / DRIVER).write_text("{not json")  # damaged, or edited by hand
    claim_driver(str(tmp_path), "run-1")
    assert owner(tmp_path) == {"pid": os.getpid(), "host": HOST, "run_id": "run-1"}


@pytest.mark.parametrize("text", ['{"host": "%s"}', '[]', '{"host": "%s", "pid": "12"}', '{"host": "%s", "pid": 0}'])
def test_a_claim_without_a_usable_pid_is_taken_over(tmp_path, text):
    # pid 0 would signal this process group, which is alive: it must not read as a running driver
    (tmp_path / DRIVER).write_text(text.replace("%s", HOST))
    claim_driver(str(tmp_path), "run-1")
    assert owner(tmp_path) == {"pid": os.getpid(), "host": HOST, "run_id": "run-1"}
