"""Two chains at once, with different configs, on one real `mlflow server` and one storage root,
started together: both finish, their runs and directories never mix, and `pld compare` of the
two works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from mlflow import MlflowClient

from conftest import MlflowServer, write_sc_layout

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def test_two_chains_at_once_share_a_server_and_a_root_without_mixing(tmp_path):
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    for name, seed in (("left", 0), ("right", 1)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
            "name": name, "seed": seed, "data": {"path": str(corpus)}, "model": {"name": "tiny"},
            "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 2, "baselines": []},
            "train": {"epochs": 2, "batch_size": 16}, "ray": {"num_cpus": 2},
            "storage": {"root": str(tmp_path / "shared-root")}}))
    server = MlflowServer(tmp_path)
    server.start()
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "distill.cli", "run", f"{name}.yaml", "--tracking-uri",
                                   server.uri], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name in ("left", "right")]
        outputs = [p.communicate(timeout=1200) for p in procs]
        for p, (out, err) in zip(procs, outputs):
            assert p.returncode == 0, out[-2000:] + err[-2000:]

        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name("pld")
        chains = {r.info.run_name: r for r in client.search_runs([exp.experiment_id], "tags.`pld.kind` = 'chain'")}
        assert set(chains) == {"left", "right"}
        dirs = {name: Path(r.data.tags["pld.run_dir"]) for name, r in chains.items()}
        assert dirs["left"] != dirs["right"] and all(d.parent == tmp_path / "shared-root" for d in dirs.values())
        for name, run in chains.items():
            assert run.data.params["seed"] == ("0" if name == "left" else "1")
            children = {c.info.run_name: c for c in client.search_runs(
                [exp.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")}
            assert set(children) == {"teacher", "student_500ms"}
            # the student was taught by its own chain's teacher, and its dataset says so
            teacher_id = children["teacher"].info.run_id
            assert children["student_500ms"].data.tags["pld.teacher_run_id"] == teacher_id
            manifest = (dirs[name] / "stages" / "student_500ms" / "manifest.json").read_text()
            assert teacher_id in manifest and all(c.info.status == "FINISHED" for c in children.values())

        compare = subprocess.run([sys.executable, "-m", "distill.cli", "compare", chains["left"].info.run_id,
                                  chains["right"].info.run_id, "--tracking-uri", server.uri],
                                 capture_output=True, text=True, timeout=300)
        assert compare.returncode == 0, compare.stderr[-2000:]
        assert any(line.split()[:1] == ["seed"] for line in compare.stdout.splitlines())  # the config they differ in
        assert any(line.startswith("student_500ms") for line in compare.stdout.splitlines())
    finally:
        server.stop()
