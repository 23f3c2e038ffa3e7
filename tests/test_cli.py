"""`pld` command-line behaviour that needs no cluster."""

import subprocess
import sys

from distill.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_the_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0 and "run" in proc.stdout and "data" in proc.stdout


def test_bad_config_is_one_clear_error_before_any_work(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("chain:\n  lengths_ms: [500, 900]\n")
    assert main(["run", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "chain.lengths_ms" in err and "strictly decreasing" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_set_overrides_are_validated(tmp_path, capsys):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("name: x\n")
    assert main(["run", str(cfg), "--set", "train.epochs=zero"]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["run", str(cfg), "--set", "noequals"]) != 0


def test_missing_dataset_names_the_fix(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{path: {tmp_path / 'nowhere'}}}\nray: {{num_cpus: 1}}\n")
    proc = run_cli("run", str(cfg), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "pld data synth" in proc.stderr and "Traceback" not in proc.stderr


def test_unplaceable_resources_fail_before_any_stage(tmp_path, sc_root):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{path: {sc_root}}}\nray: {{num_cpus: 1}}\nrelabel: {{cpus_per_actor: 1}}\n")
    proc = run_cli("run", str(cfg), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "relabel.actors × relabel.cpus_per_actor" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "pld-runs").exists()  # nothing was written
