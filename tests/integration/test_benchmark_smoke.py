"""CI smoke test of `benchmarks/gpu_check.sh --dry-run`, the GPU check's steps on CPUs, which run
`benchmarks/throughput.py --quick`: it runs end to end (real Ray, real MLflow) and writes every
key of its JSON, well-formed, and the files the GPU check promises. The numbers themselves are the
benchmark's business, not a timed test's."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from distill.config import ChainConfig

from conftest import REPO

pytestmark = pytest.mark.integration
ROOT = REPO


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_the_gpu_check_dry_run_writes_every_file_and_key(tmp_path):
    folder = tmp_path / "gpu-check"
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(folder)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    log = folder / "throughput.txt"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    assert sorted(p.name for p in folder.iterdir()) == ["env.txt", "quickstart.log", "steps.log", "throughput.json",
                                                        "throughput.txt"]
    assert "all steps passed" in (folder / "steps.log").read_text()
    assert "[student_500ms] epoch 1/1" in (folder / "quickstart.log").read_text()
    assert "dry run: no GPU asked for" in (folder / "env.txt").read_text()
    r = json.loads((folder / "throughput.json").read_text())
    assert r["device"] == "cpu"
    stdout = (folder / "throughput.txt").read_text()

    for key in ("relabel_ratio", "train_ratio", "quickstart_s"):
        assert _positive(r[key]), (key, r[key])
    lengths = {str(ms) for ms in ChainConfig().lengths_ms}
    for key in ("macs_ratio", "latency_ratio", "macs_ratio_res8", "latency_ratio_res8", "onnx_latency_ratio",
                "onnx_int8_latency_ratio"):
        assert set(r[key]) == lengths, (key, r[key])
        assert all(_positive(v) for v in r[key].values()), (key, r[key])
        assert r[key]["1000"] == 1.0
    assert {(s["data"], s["cpus"]) for s in r["scaling"]} == {("1x", 2), ("2x", 2), ("4x", 2), ("1x", 1)}
    assert all(_positive(s["platform_s"]) and _positive(s["plain_s"]) for s in r["scaling"])
    qs = r["quickstart"]
    assert all(_positive(qs[k]) for k in ("synthesis_s", "run_s", "ray_start_s", "source_s"))
    assert [s["stage"] for s in qs["stages"]] == ["teacher", "student_500ms"]
    assert all(_positive(s[k]) for s in qs["stages"] for k in ("relabel", "train", "eval"))
    for line in ("relabel crops/s", "train samples/s", "scaling", "input efficiency", "under onnxruntime", "quickstart:"):
        assert line in stdout, line
