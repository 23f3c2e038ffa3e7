"""The whole chain through the `pld` CLI on a tiny synthetic corpus, with a real local Ray
and a real (SQLite) MLflow store: run structure, contracted tags, Parquet schema and rows,
the method options end to end (soft labels mixed with the clip's, a padded teacher view, a
confidence filter); then `pld eval` of that chain on a prepared test set, and `pld report`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml
from mlflow import MlflowClient

from distill.corpus.options import CorpusOptions
from distill.corpus.writer import synthesize_corpus

from distill.runtime.execution.relabel import FORMAT

pytestmark = pytest.mark.integration
# Just above chance (1/12): the tiny two-epoch models are barely trained, so a real threshold would
# drop every crop. Dropping itself is checked against exact rows in test_faults_integration.py.
MIN_CONFIDENCE = 0.09
PROVENANCE = {"clip_id", "offset", "length", "source_label", "teacher_label", "teacher_probs", "teacher_confidence",
              "teacher_run_id"}


def manifest_format(stage_dir: Path) -> str:
    return json.loads((stage_dir / "manifest.json").read_text()).get("format")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    corpus = root / "corpus"
    synthesize_corpus(corpus, CorpusOptions(seed=5, speakers=12, unknown_words=("bed", "bird", "cat", "dog"),
                                            engines={"espeak": 1}, unseen_engine_speakers=0),
                      workers=2, progress=False)
    config = {
        "name": "it", "seed": 1,
        "data": {"name": "speech_commands", "path": str(corpus)},
        "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 750, 500], "crops_per_clip": 2, "teacher_view": "pad", "pad_position": "random"},
        "labels": {"mode": "soft", "temperature": 2.0, "original_weight": 0.2, "min_confidence": MIN_CONFIDENCE},
        "train": {"epochs": 2, "teacher_epochs": 4, "batch_size": 32},
        "storage": {"root": str(root / "runs")},
        "ray": {"num_cpus": 2},
    }
    cfg_path = root / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "run", str(cfg_path)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return dict(root=root, corpus=corpus, stdout=proc.stdout, client=MlflowClient(uri))


def runs_of(chain):
    client = chain["client"]
    exp = client.get_experiment_by_name("pld")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("pld.kind") == "chain"]
    assert len(parents) == 1
    parent = parents[0]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    return parent, children


def test_run_structure_and_contracted_tags(chain):
    experiment = chain["client"].get_experiment_by_name("pld")
    # MLflow 3's UI opens a training experiment on its runs, not on the GenAI overview
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parent, children = runs_of(chain)
    assert list(sorted(children)) == sorted(["teacher", "student_750ms", "student_500ms", "direct_500ms",
                                             "one_shot_500ms"])  # no student at the teacher's length
    expect = {  # name: (kind, method, input_ms, teacher stage)
        "teacher": ("teacher", "pld", "1000", None), "student_750ms": ("student", "pld", "750", "teacher"),
        "student_500ms": ("student", "pld", "500", "student_750ms"),
        "direct_500ms": ("baseline", "direct", "500", None), "one_shot_500ms": ("baseline", "one_shot", "500", "teacher"),
    }
    for name, (kind, method, input_ms, teacher) in expect.items():
        tags = children[name].data.tags
        assert (tags["pld.kind"], tags["pld.method"], tags["pld.input_ms"]) == (kind, method, input_ms), name
        assert tags["pld.teacher_run_id"] == (children[teacher].info.run_id if teacher else ""), name
        assert tags["pld.train_runner"] == "local", name  # one CPU worker on one node: in the driver
        assert children[name].info.status == "FINISHED"
    assert parent.info.status == "FINISHED"


def test_each_stage_logs_params_metrics_model_and_dataset(chain):
    parent, children = runs_of(chain)
    client = chain["client"]
    for name, run in children.items():
        metrics = run.data.metrics
        for key in ("test_acc_window", "test_acc_stream", "test_acc_center"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key)
        assert metrics["macs"] > 0 and 0 < metrics["latency_us"] < 1e6
        # the keyword-spotting figures over the test split's silence + unknown stream
        assert metrics["test_fa_per_hour_at_90_recall"] >= 0 and 0 <= metrics["test_recall_at_1_fa_per_hour"] <= 1
        assert metrics["test_negative_hours"] > 0
        assert 0 <= metrics["label_agreement"] <= 1 and 0 <= metrics["relabel_to_silence"] <= 1
        confusion = json.loads(Path(client.download_artifacts(run.info.run_id, "eval/confusion.json")).read_text())
        assert len(confusion["labels"]) == 12 and np.asarray(confusion["stream"]).shape == (12, 12)
        # the confusion matrix holds the accuracy the run reports
        m = np.asarray(confusion["window"])
        assert np.trace(m) / m.sum() == pytest.approx(metrics["test_acc_window"])
        teacher_labelled = run.data.tags["pld.teacher_run_id"] != ""
        assert run.data.params["label_mode"] == ("soft" if teacher_labelled else "hard")
        if teacher_labelled:
            assert (run.data.params["teacher_view"], run.data.params["original_weight"]) == ("pad", "0.2")
        else:  # clip labels: the teacher's own stage and direct agree with themselves and drop nothing
            assert metrics["label_agreement"] == 1.0 and metrics["dropped_low_confidence"] == 0
        epochs = 4 if name == "teacher" else 2
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == epochs  # one per epoch
        assert len(client.get_metric_history(run.info.run_id, "val_acc")) == epochs
        assert run.data.params["input_ms"] == run.data.tags["pld.input_ms"]
        # the corpus's held-out part (its test clips are all of accents no training speaker has;
        # it has no unseen-engine parts): scored after the chain, beside the test split
        assert 0.0 <= metrics["unseen_accent_test_acc_stream"] <= 1.0
        assert not any(k.startswith("unseen_engine") for k in metrics), name
        assert run.inputs.dataset_inputs and run.inputs.dataset_inputs[0].dataset.name == f"{name}-crops"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
        assert {"checkpoint/model.pt", "checkpoint/model.json"} <= artifacts
        assert client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.md", "config.yaml"} <= parent_artifacts
    summary = Path(client.download_artifacts(parent.info.run_id, "summary.md")).read_text()
    assert "one_shot_500ms" in summary and "acc_stream" in summary
    assert "Held-out parts of the corpus, stream accuracy" in summary and "unseen_accent_test" in summary


def test_a_stage_keeps_two_checkpoints_its_model_and_the_last(chain):
    """Of the teacher's 4 epoch checkpoints, the best epoch's (its model, train.keep best) and the
    last (what a restart continues from) stay; the others are removed as training goes."""
    parent, children = runs_of(chain)
    teacher = children["teacher"]
    run_dir = Path(parent.data.tags["pld.run_dir"])
    kept = sorted(p.name for p in (run_dir / "stages" / "teacher" / "train").rglob("epoch-*") if p.is_dir())
    best = int(teacher.data.metrics["best_epoch"])
    assert kept == sorted({f"epoch-{best:04d}", "epoch-0003"}), kept
    assert json.loads((run_dir / "stages" / "teacher" / "model" / "model.json").read_text())["extra"]["epoch"] == best


def test_distilled_parquet_schema_rows_and_provenance(chain):
    parent, children = runs_of(chain)
    run_dir = Path(parent.data.tags["pld.run_dir"])
    train_clips = pq.read_table(run_dir / "source" / "data" / "split=train").num_rows
    tables = {}
    for name, run in children.items():
        table = pq.read_table(run_dir / "stages" / name / "data")
        assert PROVENANCE <= set(table.column_names), name
        assert "waveform" not in table.column_names and manifest_format(run_dir / "stages" / name) == FORMAT, name
        manifest = json.loads((run_dir / "stages" / name / "manifest.json").read_text())
        # crops_per_clip × training clips, less those the confidence filter dropped (counted and logged); the
        # teacher's input is the whole clip, so its dataset is the clips themselves, one row each
        per_clip = 1 if name == "teacher" else 2
        assert manifest["crops"] == per_clip * train_clips, name
        assert table.num_rows == manifest["rows"] == per_clip * train_clips - manifest["dropped_low_confidence"], name
        assert run.data.metrics["dropped_low_confidence"] == manifest["dropped_low_confidence"], name
        df = table.to_pandas()
        assert (df.teacher_confidence >= MIN_CONFIDENCE).all(), name
        agreement = (df.teacher_label == df.source_label).mean()
        assert manifest["label_stats"]["agreement"] == pytest.approx(agreement), name
        assert run.data.metrics["label_agreement"] == pytest.approx(agreement), name
        tables[name] = df
    student = tables["student_750ms"]
    assert set(student.teacher_run_id) == {children["teacher"].info.run_id}
    assert (student.length == 12000).all() and student.offset.between(0, 4000).all()
    assert set(tables["direct_500ms"].teacher_run_id) == {""}
    assert (tables["direct_500ms"].teacher_label == tables["direct_500ms"].source_label).all()
    # the baselines train on the very crops of the final student (the teachers' filters drop some)
    key = lambda df: set(zip(df.clip_id, df.offset))  # noqa: E731
    assert len(tables["direct_500ms"]) == 2 * train_clips
    assert key(tables["one_shot_500ms"]) <= key(tables["direct_500ms"]) >= key(tables["student_500ms"])
    soft = tables["student_500ms"].teacher_probs.map(max)
    assert (soft < tables["student_500ms"].teacher_confidence + 1e-6).all()  # temperature 2: softer than the argmax


def test_cli_prints_the_summary_table(chain):
    parent, _ = runs_of(chain)
    out = chain["stdout"]
    header = next(line for line in out.splitlines() if line.startswith("stage "))
    for col in ("method", "input_ms", "teacher", "acc_window", "acc_stream", "acc_center", "agreement", "train_fit", "fa_per_h@90%",
                "recall@1fa/h", "macs", "latency_us"):
        assert col in header
    assert "teacher agrees with the clip label on" in out and f"below confidence {MIN_CONFIDENCE}" in out
    assert f"chain run id: {parent.info.run_id}" in out
    assert "[student_750ms] epoch 2/2" in out
    assert "held-out part unseen_accent_test: " in out and "held-out parts of the corpus, stream accuracy:" in out


@pytest.fixture(scope="module")
def prepared_copy(chain):
    """The chain's own test split written out as a prepared Speech Commands test set (plus two
    broken files), so that `pld eval` must reproduce the chain's test accuracies exactly."""
    parent, _ = runs_of(chain)
    test = pq.read_table(Path(parent.data.tags["pld.run_dir"]) / "source" / "data" / "split=test").to_pandas()
    root = chain["root"] / "prepared_test"
    for i, row in enumerate(test.itertuples()):
        (root / row.label).mkdir(parents=True, exist_ok=True)
        sf.write(root / row.label / f"{i:05d}_nohash_0.wav", np.asarray(row.waveform, np.int16), 16000,
                 subtype="PCM_16")
    (root / "yes" / "broken_nohash_0.wav").write_bytes(b"RIFF")
    (root / "no" / "empty_nohash_0.wav").write_bytes(b"")
    return root, len(test)


def test_pld_eval_reproduces_the_chain_and_logs_into_its_runs(chain, prepared_copy):
    parent, children = runs_of(chain)
    root, n_clips = prepared_copy
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{chain['root'] / 'mlflow.db'}"}
    spec = chain["root"] / "prepared.yaml"  # two bad files of 14 are over the default 5 %: allow them here
    spec.write_text(f"data:\n  name: speech_commands_test\n  path: {root}\n  max_bad_fraction: 0.2\n")
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "eval", parent.info.run_id, "--data", str(spec),
                           "--json"], cwd=chain["root"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads(proc.stdout)
    assert [r["stage"] for r in rows] == ["teacher", "student_750ms", "student_500ms", "direct_500ms",
                                          "one_shot_500ms"]
    assert "2 quarantined" in proc.stderr and "broken_nohash_0.wav" in proc.stderr
    client = chain["client"]
    for r in rows:
        assert set(r) >= {"run_id", "kind", "method", "input_ms", "acc_window", "acc_stream", "acc_center"}
        run = client.get_run(r["run_id"])
        assert (r["kind"], r["method"], str(r["input_ms"])) == (
            run.data.tags["pld.kind"], run.data.tags["pld.method"], run.data.tags["pld.input_ms"])
        for p in ("window", "stream", "center"):  # the same clips, so the same accuracy as the chain's test split
            # (at most one clip may flip on a float near-tie: batches differ from the chain's)
            assert r[f"acc_{p}"] == pytest.approx(run.data.metrics[f"test_acc_{p}"], abs=1.0 / n_clips + 1e-9), (r["stage"], p)
            assert run.data.metrics[f"speech_commands_test_acc_{p}"] == pytest.approx(r[f"acc_{p}"])
        assert run.data.metrics["speech_commands_test_clips"] == n_clips

    cmd = [sys.executable, "-m", "distill.cli", "eval", parent.info.run_id, "--data", f"speech_commands_test:{root}",
           "--name", "heldout"]
    proc = subprocess.run(cmd, cwd=chain["root"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "above data.max_bad_fraction (5.0%)" in proc.stderr, proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    (root / "yes" / "broken_nohash_0.wav").unlink()
    (root / "no" / "empty_nohash_0.wav").unlink()
    proc = subprocess.run(cmd, cwd=chain["root"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("stage "))
    assert header.split() == ["stage", "method", "input_ms", "acc_window", "acc_stream", "acc_center"]
    assert "heldout_acc_stream" in client.get_run(children["teacher"].info.run_id).data.metrics
    assert {"eval/heldout.md", "eval/speech_commands_test.md"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "eval")}

    bad = subprocess.run([sys.executable, "-m", "distill.cli", "eval", children["teacher"].info.run_id, "--data",
                          f"speech_commands_test:{root}"], cwd=chain["root"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and f"its chain is {parent.info.run_id}" in bad.stderr and "Traceback" not in bad.stderr


def test_pld_report_of_the_chain(chain):
    parent, _ = runs_of(chain)
    out = chain["root"] / "report"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{chain['root'] / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "report", parent.info.run_id, "--out", str(out)],
                          cwd=chain["root"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    html = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert set(images) == {"accuracy.png", "false_alarms.png", "confusion.png", "label_agreement.png", "curves.png",
                           "input_cost.png"}
    for name in images:
        assert (out / name).stat().st_size > 10_000, name  # a drawn figure, not an empty canvas
    assert "student_500ms" in html and "teacher_view: pad" in html
    logged = {a.path for a in chain["client"].list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/accuracy.png"} <= logged


def _page_text(browser: str, url: str, profile: Path) -> str:
    """What headless Chromium shows at ``url`` once the page's scripts have run (text only)."""
    import html

    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--virtual-time-budget=30000", "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", proc.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def test_the_mlflow_ui_opens_on_the_chain_and_its_headline(chain, tmp_path):
    """The chain run carries its headline, description and evaluation dataset, and a real browser
    on `mlflow ui` shows them at the address the chain prints."""
    import shutil

    from conftest import _free_port, wait_http

    parent, children = runs_of(chain)
    metrics, s500 = parent.data.metrics, children["student_500ms"].data.metrics
    assert metrics["pld_test_acc_stream"] == pytest.approx(s500["test_acc_stream"], abs=1e-4)
    assert metrics["direct_test_acc_stream"] == pytest.approx(children["direct_500ms"].data.metrics["test_acc_stream"], abs=1e-4)
    assert metrics["pld_minus_direct_stream"] == pytest.approx(metrics["pld_test_acc_stream"]
                                                               - metrics["direct_test_acc_stream"], abs=1e-4)
    assert parent.data.tags["mlflow.note.content"].startswith("# PLD chain it")
    evaluation = [d for d in parent.inputs.dataset_inputs if any(t.value == "evaluation" for t in d.tags)]
    assert [d.dataset.name for d in evaluation] == ["speech_commands test split"]
    printed = re.search(r"in the MLflow UI: .*http://127\.0\.0\.1:5000/(\S+)", chain["stdout"]).group(1)
    assert printed == (f"#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
                       "?workflowType=machine_learning")

    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium on PATH to drive the MLflow UI: `apt-get install chromium` (`make test` installs it)")
    port = _free_port()
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                           f"sqlite:///{chain['root'] / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
                           "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", 180, ui, "mlflow ui")  # a loaded 2-core machine: over 90 s
        base = f"http://127.0.0.1:{port}/"
        runs = _page_text(browser, f"{base}#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning",
                          tmp_path / "profile")
        assert "Runs" in runs and " it " in f" {runs} " and "Token Usage" not in runs, runs[:2000]
        page = _page_text(browser, base + printed, tmp_path / "profile")
        assert "Token Usage" not in page and "No description" not in page, page[:2000]
        assert "PLD chain it" in page  # the description
        for name in ("pld_test_acc_stream", "pld_minus_direct_stream", "one_shot_test_acc_stream"):
            value = metrics[name]
            shown = str(int(value)) if value.is_integer() else repr(value)  # as JavaScript writes a number
            assert f"{name} {shown}" in page, (name, page[:3000])
    finally:
        os.killpg(ui.pid, 9)
        ui.wait(timeout=30)
