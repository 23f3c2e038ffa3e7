"""The `pld` command: help, clear errors before any work, `--set`, `--dry-run`."""

from __future__ import annotations

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


def est_rows(plan_line: list[str]) -> str:
    """The est_rows column of a plan line's words: the one after the dataset directory."""
    return next(plan_line[i + 1] for i, word in enumerate(plan_line) if word.endswith("/data"))


def test_dry_run_prints_the_resolved_config_and_plan_and_starts_nothing(tmp_path, sc_root, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{path: {sc_root}}}\nchain: {{lengths_ms: [1000, 750, 500], crops_per_clip: 3}}\n")
    assert main(["run", str(cfg), "--dry-run", "--set", "train.epochs=4"]) == 0
    out = capsys.readouterr().out
    assert "# resolved config (fingerprint " in out and "epochs: 4" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("student_", "direct_", "one_shot_", "teacher "))}
    assert list(lines) == ["teacher", "student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]
    # 7 train speakers × (10 keywords + ceil(10 %) unknown + ceil(10 %) silence) clips × 3 crops; the teacher
    # trains on the clips themselves, one row each
    assert lines["student_750ms"][3:6] == ["750", "teacher", "4"] and est_rows(lines["student_750ms"]) == str(84 * 3)
    assert est_rows(lines["teacher"]) == str(84)
    assert " ".join(lines["student_750ms"]).endswith("hard T=1 clip weight 0") and lines["teacher"][-1] == "-"
    assert not (tmp_path / "pld-runs").exists() and not (tmp_path / "mlflow.db").exists()
    # sliding crops: every 100 ms, a 750 ms crop has 4 positions in 1 s (0, 100, 200 and 250, flush with the end)
    assert main(["run", str(cfg), "--dry-run", "--set", "chain.crop_placement=sliding"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: est_rows(line.split()) for line in out.splitlines() if line.startswith(("student_", "teacher "))}
    assert (rows["teacher"], rows["student_750ms"], rows["student_500ms"]) == (str(84), str(84 * 4), str(84 * 6))


def test_a_tracking_password_reaches_neither_the_console_nor_the_dry_run(tmp_path, sc_root, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{path: {sc_root}}}\ntracking: {{max_retries: 0, backoff_factor: 0}}\n")
    uri = "http://pld:PASSWORD123@127.0.0.1:9/"
    assert main(["run", str(cfg), "--tracking-uri", uri]) == 2  # no server answers there
    out = capsys.readouterr()
    assert "the tracking server http://127.0.0.1:9/ did not answer" in out.err
    assert "PASSWORD123" not in out.out + out.err
    assert main(["run", str(cfg), "--set", f"tracking.uri={uri}", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "uri: http://127.0.0.1:9/" in out.out and "PASSWORD123" not in out.out + out.err


def test_export_writes_int8_only_when_asked(monkeypatch):
    """int8 is opt-in: on the CPUs measured it is slower than fp32 and a little less accurate."""
    import distill.runtime.export

    calls = []
    monkeypatch.setattr(distill.runtime.export, "export_run", lambda run_id, **kw: calls.append((run_id, kw["int8"])))
    assert main(["export", "abc123"]) == 0 and main(["export", "abc123", "--int8"]) == 0
    assert calls == [("abc123", False), ("abc123", True)]


def test_a_dry_run_whose_data_cannot_be_read_fails_with_one_last_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "nowhere"
    (tmp_path / "c.yaml").write_text(f"data: {{path: {missing}}}\n")
    assert main(["run", "c.yaml", "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "# stage plan" in captured.out  # the plan is still shown
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("pld: error: data: ") and str(missing) in line
    assert line.endswith("(the dry run could not read the dataset; fix data.path, or run where the data is)")
