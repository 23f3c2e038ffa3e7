"""benchmarks/scale.py's memory sampling: a process's private bytes apart from the object-store
pages it maps, and the Ray workers found by their command line."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


spec = importlib.util.spec_from_file_location("scale", Path(__file__).resolve().parents[2] / "benchmarks" / "scale.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
MB = 1 << 20


# Measured in a fresh interpreter on pages mapped for the purpose: in a long pytest process the
# allocator may hand back 64 MB it already holds resident, and RssAnon then does not move (CI saw +2 MB).
MEASURE = """
import json, mmap, sys, tempfile
sys.path.insert(0, sys.argv[1])
import scale
MB = 1 << 20
before = scale.memory("self")
anon = mmap.mmap(-1, 64 * MB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
for at in range(0, 64 * MB, MB):  # written a megabyte at a time: 64 MB of new anonymous pages
    anon[at:at + MB] = b"\\1" * MB
grown = scale.memory("self")
with tempfile.NamedTemporaryFile(dir="/dev/shm") as f:
    f.truncate(64 * MB)
    with mmap.mmap(f.fileno(), 64 * MB) as mapped:
        for at in range(0, 64 * MB, MB):  # touched: resident, and shared, not private
            mapped[at:at + MB] = b"\\1" * MB
        mapped_in = scale.memory("self")
print(json.dumps([before, grown, mapped_in]))
"""


def test_private_bytes_grow_with_an_allocation_and_shared_ones_with_a_mapped_shm_file():
    out = subprocess.run([sys.executable, "-c", MEASURE, str(Path(bench.__file__).parent)], capture_output=True,
                         text=True, check=True)
    before, grown, mapped_in = json.loads(out.stdout)
    assert before["rss"] >= before["private"] > 0
    assert grown["private"] - before["private"] > 60 * MB
    assert mapped_in["shared"] - grown["shared"] > 60 * MB
    assert mapped_in["private"] - grown["private"] < 16 * MB
    assert mapped_in["rss"] - grown["rss"] > 60 * MB  # RSS counts both


def test_a_gone_process_reads_as_zeros():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    assert bench.memory(proc.stdout.strip()) == {"rss": 0, "private": 0, "shared": 0}


def test_ray_workers_are_found_by_their_command_line_with_their_task_name():
    # Ray names a worker's process after its task or actor; `exec -a` gives `sleep` such a name
    proc = subprocess.Popen(["bash", "-c", "exec -a ray::TrainWorker.run_train_fn sleep 30"])
    try:
        for _ in range(100):
            found = bench.ray_worker_pids()
            if str(proc.pid) in found:
                break
            time.sleep(0.05)
        assert found[str(proc.pid)] == "ray::TrainWorker.run_train_fn"
        assert str(os.getpid()) not in found
    finally:
        proc.kill()


def test_a_sampled_run_names_its_largest_worker_and_counts_its_own_bytes(tmp_path):
    """run_sampled on a command that starts a worker-named process holding 64 MB of its own."""
    hold = "import numpy as np, time; a = np.ones(64 * 2**20 // 8); time.sleep(2)"
    worker = shlex.join(["bash", "-c", f"exec -a ray::MapBatches {shlex.join([sys.executable, '-c', hold])}"])
    # another cluster's worker on the machine, larger, and not the run's: not counted
    big = "import numpy as np, time; a = np.ones(160 * 2**20 // 8); time.sleep(8)"
    foreign = subprocess.Popen(["bash", "-c", f"exec -a ray::IDLE {shlex.join([sys.executable, '-c', big])}"])
    try:
        time.sleep(1.5)
        peak = bench.run_sampled(["bash", "-c", f"{worker} & wait"], dict(os.environ), tmp_path,
                                 tmp_path / "console.log")
    finally:
        foreign.kill()
    assert peak["largest_worker"] == peak["largest_private_worker"] == "ray::MapBatches"
    assert peak["worker_private"] > 60 * MB and peak["worker_rss"] >= peak["worker_private"]
    assert peak["workers_private_sum"] >= peak["worker_private"] and peak["driver_rss"] > 0
    assert peak["workers_private_sum"] < 100 * MB  # the foreign worker's 160 MB are not in it
