"""Helper of test_faults_integration (not collected by pytest): relabel on an existing cluster
and SIGKILL the worker running the teacher task mid-way. Run as its own driver process so that a
Ray core abort in the driver (seen with Ray 2.60 when a streaming task's worker dies, see the
test) cannot take the test session down. Prints one JSON line: what was killed and the rows."""

import json
import os
import signal
import sys
import threading
import time

import ray
from ray.util.state import list_tasks

from distill.config import RelabelConfig
from distill.core.labels import LabelSpec
from distill.runtime.execution.relabel import Teacher, relabel_crops
from distill.stages import StageSpec

root, out, address = sys.argv[1:4]
ray.init(address=address, log_to_driver=False, logging_level="ERROR")
box, killed = {}, []


def work():
    stage = StageSpec("student_750ms", "student", "pld", 750, "teacher", 1, crops_per_clip=4, seed=0, labels=LabelSpec())
    box["manifest"] = relabel_crops(f"{root}/source", out, stage, RelabelConfig(batch_size=32, actors=1, cpus_per_actor=1),
                                    Teacher(f"{root}/teacher", "teacher-run"))


thread = threading.Thread(target=work)
thread.start()
deadline = time.time() + 120
while thread.is_alive() and not killed and time.time() < deadline:
    for task in list_tasks(address=address, filters=[("state", "=", "RUNNING")], raise_on_missing_output=False):
        if "label_with_teacher" in task.name or "TeacherLabeler" in task.name:
            os.kill(task.worker_pid, signal.SIGKILL)
            killed.append([task.name, task.worker_pid])
            break
    time.sleep(0.05)
thread.join(timeout=300)
print(json.dumps({"killed": killed, "rows": box["manifest"]["rows"]}))
