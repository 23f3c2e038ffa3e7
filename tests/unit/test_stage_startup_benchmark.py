"""benchmarks/stage_startup.py's reading of Ray's worker logs: the seconds each new process spent
importing (``-X importtime`` lines) and the actor or task it ran."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("stage_startup", Path(__file__).resolve().parents[2] / "benchmarks" / "stage_startup.py")
startup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(startup)

ERR = """import time: self [us] | cumulative | imported package
import time:       120 |        120 |   _io
import time:    250000 |     250120 | torch
some warning that is not an import line
import time:      1880 |       1880 |     ray.train
"""


def test_import_seconds_sum_the_self_times_and_skip_other_lines():
    assert startup.import_seconds(ERR) == pytest.approx(0.252)
    assert startup.import_seconds("no imports here\n") == 0.0


def test_a_process_is_named_by_its_actor_or_else_its_task():
    assert startup.process_name(":job_id:01000000\n:actor_name:RayTrainWorker\nhello") == "RayTrainWorker"
    assert startup.process_name(":job_id:01000000 :task_name:ReadRange :task_name:ReadRange") == "ReadRange"
    assert startup.process_name("") is None


def test_the_profile_takes_only_new_processes_named_and_slowest_first(tmp_path):
    def worker(pid, out, err):
        (tmp_path / f"worker-ab{pid}-01000000-{pid}.out").write_text(out)
        (tmp_path / f"worker-ab{pid}-01000000-{pid}.err").write_text(err)

    worker(11, ":actor_name:TrainController", "import time:   2000000 |   2000000 | torch\n")
    worker(12, ":actor_name:RayTrainWorker", "import time:   3000000 |   3000000 | torch\n")
    worker(13, "", "import time:   500000 |   500000 | ray\n")  # started, never given work
    worker(10, ":actor_name:Old", "import time:   9000000 |   9000000 | torch\n")  # an earlier fit's
    rows = startup.import_profile(tmp_path, before={"worker-ab10-01000000-10.err"})
    assert [(r["process"], r["pid"], r["import_s"]) for r in rows] == [
        ("RayTrainWorker", 12, 3.0), ("TrainController", 11, 2.0), ("(idle pooled worker)", 13, 0.5)]
