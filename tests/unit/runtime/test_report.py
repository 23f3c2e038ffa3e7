"""`pld report` and `pld compare` on chains written straight into a real (SQLite) MLflow store
with the contracted tags, metrics and artifacts — the real chain's report is checked in
test_chain_integration.py."""

from __future__ import annotations

import re
import subprocess
import sys
from html.parser import HTMLParser

import mlflow
import numpy as np
from mlflow import MlflowClient

LABELS = ["_silence_", "_unknown_", "yes", "no"]
STAGES = [("teacher", "teacher", "pld", 1000), ("student_1000ms", "student", "pld", 1000),
          ("student_750ms", "student", "pld", 750), ("student_500ms", "student", "pld", 500),
          ("direct_500ms", "baseline", "direct", 500), ("one_shot_500ms", "baseline", "one_shot", 500)]


def fake_chain(uri: str, seed: int, label_mode: str) -> str:
    """A finished chain as `pld run` records it (docs/mlflow.md)."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("pld")
    rng = np.random.default_rng(seed)
    with mlflow.start_run(run_name=f"chain{seed}", tags={"pld.kind": "chain",
                                                          "pld.stages": ",".join(s[0] for s in STAGES)}) as parent:
        mlflow.log_params({"seed": seed, "labels.mode": label_mode, "chain.lengths_ms": "[1000, 750, 500]"})
        mlflow.log_dict({"name": f"chain{seed}", "seed": seed, "labels": {"mode": label_mode}}, "config.yaml")
        for name, kind, method, ms in STAGES:
            with mlflow.start_run(run_name=name, nested=True, tags={"pld.kind": kind, "pld.method": method,
                                                                    "pld.input_ms": str(ms), "pld.stage": name}):
                mlflow.log_params({"teacher_stage": "" if name == "teacher" or method == "direct" else "teacher"})
                mlflow.log_metrics({**{f"test_acc_{p}": float(rng.uniform(0.3, 0.9)) for p in ("window", "stream", "center")},
                                    "test_fa_per_hour_at_90_recall": float(rng.uniform(0, 500)),
                                    "test_recall_at_1_fa_per_hour": float(rng.uniform(0, 1)),
                                    "macs": 7e6 * ms / 1000, "latency_us": 900 + ms, "label_agreement": 0.8,
                                    "relabel_to_silence": 0.05, "relabel_to_unknown": 0.1})
                for epoch in range(1, 4):
                    mlflow.log_metrics({"val_acc": 0.2 * epoch, "train_loss": 2.0 / epoch}, step=epoch)
                m = rng.integers(0, 9, size=(4, 4)).tolist()
                mlflow.log_dict({"labels": LABELS, "window": m, "stream": m, "center": m}, "eval/confusion.json")
    return parent.info.run_id


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.src.append(attrs["src"])
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])


def test_report_writes_html_markdown_and_pngs_and_logs_them(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = fake_chain(uri, 0, "hard")
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "report", run_id, "--out", str(out),
                           "--tracking-uri", uri], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parser = Images()
    parser.feed((out / "report.html").read_text())
    assert set(parser.src) == {"accuracy.png", "false_alarms.png", "confusion.png", "label_agreement.png",
                               "curves.png", "input_cost.png"}
    assert not parser.external  # nothing to fetch: the report opens offline
    for name in parser.src:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    md = (out / "report.md").read_text()
    assert set(re.findall(r"\]\(([^)]+\.png)\)", md)) == set(parser.src)
    assert "| student_500ms | pld | 500 |" in md and "labels:\n  mode: hard" in md
    assert "ratios to the teacher's full-length input" in md  # the teacher has the students' network here
    stage_runs = md.split("## Stage runs")[1]
    children = MlflowClient(uri).search_runs(["1"], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == len(STAGES)
    for child in children:
        assert f"| {child.info.run_name} | {child.info.run_id} |" in stage_runs
    logged = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "report")}
    assert {f"report/{n}" for n in [*parser.src, "report.html", "report.md"]} <= logged


def test_report_of_a_stage_run_or_unknown_run_is_a_clear_error(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = fake_chain(uri, 0, "hard")
    child = MlflowClient(uri).search_runs(["1"], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")[0]
    for rid, message in [(child.info.run_id, f"its chain is {run_id}"), ("0" * 32, "not found")]:
        proc = subprocess.run([sys.executable, "-m", "distill.cli", "report", rid, "--tracking-uri", uri],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_compare_prints_differing_params_and_accuracies_side_by_side(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    a, b = fake_chain(uri, 0, "hard"), fake_chain(uri, 1, "soft")
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "compare", a, b, a, "--tracking-uri", uri,
                           "--out", str(tmp_path / "cmp")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"note: {a} was given 2 times; it is compared once\n")
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    accuracy, false_alarms = proc.stdout.split("false accepts per hour at 90 % recall")
    lines = accuracy.splitlines()
    mode = next(line for line in lines if line.startswith("labels.mode"))
    assert mode.split() == ["labels.mode", "hard", "soft"]
    assert not any(line.startswith("chain.lengths_ms") for line in lines)  # the same in both: not shown
    client = MlflowClient(uri)
    row = next(line for line in lines if line.startswith("student_750ms"))
    for cell, rid in zip(row.split()[2:], (a, b)):
        run = client.search_runs(["1"], filter_string=f"tags.mlflow.parentRunId = '{rid}' and "
                                                      "attributes.run_name = 'student_750ms'")[0]
        assert cell == "/".join(f"{run.data.metrics[f'test_acc_{p}']:.3f}" for p in ("window", "stream", "center"))
    order = [line.split()[0] for line in lines if line.split() and line.split()[0] in {s[0] for s in STAGES}]
    assert order == ["teacher", "student_1000ms", "student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]
    direct = next(line for line in false_alarms.splitlines() if line.startswith("direct_500ms")).split()
    for cell, rid in zip(direct[2:], (a, b)):
        run = client.search_runs(["1"], filter_string=f"tags.mlflow.parentRunId = '{rid}' and "
                                                      "attributes.run_name = 'direct_500ms'")[0]
        assert cell == f"{run.data.metrics['test_fa_per_hour_at_90_recall']:.0f}"
    alone = subprocess.run([sys.executable, "-m", "distill.cli", "compare", a, a, "--tracking-uri", uri],
                           capture_output=True, text=True, timeout=300)
    assert "note: only one chain to compare" in alone.stdout and alone.returncode == 0
