"""The `pld` command against a real local Ray: a config the cluster cannot place fails before any stage."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_unplaceable_resources_fail_before_any_stage(tmp_path, sc_root):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{path: {sc_root}}}\nray: {{num_cpus: 1}}\nrelabel: {{cpus_per_actor: 1}}\n")
    proc = run_cli("run", str(cfg), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "relabel.actors × relabel.cpus_per_actor" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "pld-runs").exists()  # nothing was written
