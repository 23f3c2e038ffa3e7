"""The `pld` command: help, clear errors before any work, `--set`, `--dry-run`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
    # where the stages will train: a local Ray is one node; a cluster's nodes are seen when the chain starts
    assert "# training: 1 CPU worker of 1 CPU: in the driver's process (Ray Train's local mode)" in out
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for options, where in (
            (["train.num_workers=2"], "2 CPU workers of 1 CPU: in one actor per worker on the driver's node"),
            (["train.use_gpu=true"], "1 GPU worker of 1 CPU: in a Ray Train worker group (train.runner: auto)"),
            (["ray.address=10.0.0.1:6379"], "1 CPU worker of 1 CPU: decided when the chain sees the cluster at 10.0.0.1"),
            (["ray.address=ray://10.0.0.1:10001"], "1 CPU worker of 1 CPU: in a Ray Train worker group")):
        assert main(["run", str(cfg), "--dry-run", *[a for o in options for a in ("--set", o)]]) == 0
        assert f"# training: {where}" in capsys.readouterr().out, options
    assert main(["run", str(cfg), "--dry-run", "--address", "10.0.0.2:6379"]) == 0  # --address, as init_ray takes it
    assert "decided when the chain sees the cluster at 10.0.0.2:6379" in capsys.readouterr().out
    # sliding crops: every 100 ms, a 750 ms crop has 4 positions in 1 s (0, 100, 200 and 250, flush with the end)
    assert main(["run", str(cfg), "--dry-run", "--set", "chain.crop_placement=sliding"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: est_rows(line.split()) for line in out.splitlines() if line.startswith(("student_", "teacher "))}
    assert (rows["teacher"], rows["student_750ms"], rows["student_500ms"]) == (str(84), str(84 * 4), str(84 * 6))


def test_a_password_in_a_uri_is_refused_and_never_echoed(tmp_path, sc_root, capsys, monkeypatch):
    """Credentials come only from the environment: a URI with a password on the command line,
    in --set or in the config is refused in one line that names the variables, not the password."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{path: {sc_root}}}\n")
    uri = "http://pld:PASSWORD123@127.0.0.1:9/"
    for argv in (["--tracking-uri", uri], ["--set", f"tracking.uri={uri}", "--dry-run"],
                 ["--set", "storage.root=s3://KEYID:PASSWORD123@bucket/runs", "--dry-run"]):
        assert main(["run", str(cfg), *argv]) == 2
        out = capsys.readouterr()
        assert "PASSWORD123" not in out.out + out.err and "Traceback" not in out.err
        assert out.err.startswith("pld: error: ") and "holds a user name or password" in out.err, out.err
        assert ("MLFLOW_TRACKING_PASSWORD_FILE" if "storage" not in argv[1] else "AWS_SECRET_ACCESS_KEY") in out.err
    cfg.write_text(f"data: {{path: {sc_root}}}\ntracking: {{uri: '{uri}'}}\n")
    assert main(["run", str(cfg), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: invalid config" in err and "tracking.uri: " in err and "PASSWORD123" not in err


def test_the_tracking_password_comes_from_the_file_the_environment_names(tmp_path, monkeypatch):
    from distill.runtime.infra.session import resolve_tracking_uri

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.setenv(var, "-")  # recorded, so what the code under test sets is undone after it
        monkeypatch.delenv(var)
    secret = tmp_path / "password"
    secret.write_text("s3cret-from-a-file\n")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD_FILE", str(secret))
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret-from-a-file"  # the client's variable, no newline
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    secret.write_text("")
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_PASSWORD_FILE=.*the file is empty"):
        resolve_tracking_uri("http://127.0.0.1:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read the tracking password from it"):
        resolve_tracking_uri("http://127.0.0.1:5000")
    # the environment's own URI may carry them: it moves them to the client's variables
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD_FILE")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ann:pw%40x@127.0.0.1:5000/")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000/"
    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("ann", "pw@x")


def test_export_writes_int8_only_when_asked(monkeypatch):
    """int8 is opt-in: on the CPUs measured it is slower than fp32 and a little less accurate."""
    import distill.runtime.deployment.export

    calls = []
    monkeypatch.setattr(distill.runtime.deployment.export, "export_run", lambda run_id, **kw: calls.append((run_id, kw["int8"])))
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


def test_every_subcommand_takes_verbose_and_then_prints_the_traceback(tmp_path, capsys):
    import argparse

    from distill.cli import build_parser

    def leaves(parser, path=()):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield path, parser
        for action in subs:
            for name, child in action.choices.items():
                yield from leaves(child, path + (name,))

    commands = dict(leaves(build_parser()))
    assert len(commands) >= 11
    for path, parser in commands.items():
        assert "--verbose" in parser._option_string_actions, " ".join(path)
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert main(["predict", str(notes), "x.wav"]) == 2
    quiet = capsys.readouterr().err
    assert main(["predict", str(notes), "x.wav", "--verbose"]) == 2
    loud = capsys.readouterr().err
    assert "Traceback" not in quiet and quiet.strip().startswith("pld: error: MODEL")
    assert "Traceback (most recent call last)" in loud and loud.strip().splitlines()[-1] == quiet.strip()


@pytest.mark.parametrize("verbose", [False, True])
def test_mlflows_info_lines_reach_the_console_only_with_verbose(tmp_path, verbose):
    """A command's first MLflow call on a new store logs 'Creating initial MLflow database tables' at
    INFO; pld quiets the libraries before dispatching, not after the first call."""
    script = (
        "import sys, mlflow\n"
        "from distill import cli\n"
        "def touch(args):\n"
        f"    mlflow.set_tracking_uri('sqlite:///{tmp_path / 'm.db'}')\n"
        "    mlflow.MlflowClient().search_experiments()\n"
        "    return 0\n"
        "cli.cmd_run = touch\n"
        f"sys.exit(cli.main(['run', 'x.yaml'] + {['--verbose'] if verbose else []!r}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("Creating initial MLflow database tables" in proc.stderr) == verbose, proc.stderr[-2000:]
