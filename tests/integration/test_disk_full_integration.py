"""A storage root that fills up mid-chain (a 1 MiB tmpfs, mounted by the test: CI runs as root):
one clear error naming the root, the space left and the resume command; nothing half-written is
taken for finished; and once space is freed, `pld resume` finishes the chain, reusing the teacher."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from conftest import write_sc_layout
from distill.runtime.manifest import is_sealed
from distill.runtime.resume import RECORD

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


@pytest.fixture
def small_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def pld(*args, cwd):
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900)


def test_a_full_disk_stops_the_chain_clearly_and_resume_finishes_it(tmp_path, small_root):
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 4, "baselines": []},
        "train": {"epochs": 1, "batch_size": 32}, "ray": {"num_cpus": 2}, "storage": {"root": str(small_root)}}))
    uri = f"sqlite:///{tmp_path / 'm.db'}"

    full = pld("run", "c.yaml", "--tracking-uri", uri, cwd=tmp_path)
    assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-2000:]
    error = full.stderr.strip().splitlines()[-1]
    assert error.startswith("pld: error: stage ") and "Traceback" not in full.stderr
    assert f"no space left on device under storage.root {small_root}" in error
    run_id = re.search(r"pld resume ([0-9a-f]{32})", error).group(1)
    run_dir = next(small_root.glob(f"*-{run_id}"))
    failed = error.split("stage ")[1].split(",")[0]
    assert not is_sealed(run_dir / "stages" / failed)  # nothing half-written passes for finished
    assert not (run_dir / "stages" / failed / RECORD).exists()

    still_full = pld("resume", run_id, "--tracking-uri", uri, cwd=tmp_path)
    assert still_full.returncode == 2 and "Traceback" not in still_full.stderr
    assert f"storage.root {small_root}" in still_full.stderr

    subprocess.run(["mount", "-o", "remount,size=40m", str(small_root)], check=True)
    done = pld("resume", run_id, "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"chain run id: {run_id}" in done.stdout
    if failed != "teacher":
        assert "teacher: finished earlier" in done.stdout  # not recomputed
    assert is_sealed(run_dir / "stages" / "student_500ms")
