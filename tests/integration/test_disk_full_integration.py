"""A storage root that fills up mid-chain (a tmpfs mounted by the test, CI runs as root, filled up
the moment the student starts): one clear error naming the stage, the root, the space left and
the resume command; nothing half-written is taken for finished; and once space is freed,
`pld resume` finishes the chain, reusing the teacher."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import write_sc_layout
from distill.runtime.infra.manifest import is_sealed
from distill.runtime.infra.resume import RECORD

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


@pytest.fixture
def small_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(root)], capture_output=True, text=True)
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

    # the teacher fits; the moment the student starts, the root is filled to its last byte
    proc = subprocess.Popen([sys.executable, "-u", "-m", "distill.cli", "run", "c.yaml", "--tracking-uri", uri],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "== [2/2] student_500ms" in line:
            filler = small_root / "filler"
            with open(filler, "wb") as fh:
                try:
                    while True:
                        fh.write(b"\0" * (1 << 20))
                        fh.flush()
                except OSError:
                    pass
            break
    out, err = proc.communicate(timeout=900)
    out = "".join(seen) + out
    assert proc.returncode == 2, out[-2000:] + err[-2000:]
    error = err.strip().splitlines()[-1]
    assert error.startswith("pld: error: stage student_500ms, ") and "Traceback" not in err, err[-3000:]
    assert f"no space left on device under storage.root {small_root}" in error
    run_id = re.search(r"pld resume ([0-9a-f]{32})", error).group(1)
    run_dir = next(small_root.glob(f"*-{run_id}"))
    assert is_sealed(run_dir / "stages" / "teacher") and (run_dir / "stages" / "teacher" / RECORD).exists()
    assert not is_sealed(run_dir / "stages" / "student_500ms")  # nothing half-written passes for finished
    assert not (run_dir / "stages" / "student_500ms" / RECORD).exists()

    still_full = pld("resume", run_id, "--tracking-uri", uri, cwd=tmp_path)
    assert still_full.returncode == 2 and "Traceback" not in still_full.stderr
    assert f"storage.root {small_root}" in still_full.stderr

    os.unlink(small_root / "filler")
    done = pld("resume", run_id, "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"chain run id: {run_id}" in done.stdout
    assert "teacher: finished earlier" in done.stdout  # not recomputed
    assert is_sealed(run_dir / "stages" / "student_500ms")
