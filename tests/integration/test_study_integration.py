"""`pld study` end to end on a tiny corpus with a real local Ray and a real (SQLite) MLflow store:
a 2-cell × 2-seed study is stopped after two chains, continued by `pld study` (the two finished
runs are reused, not retrained), and reported by `pld study report` from its records alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from mlflow import MlflowClient

from conftest import write_sc_layout
from distill.study.records import read_records, record_path
from distill.study.run import CELL_TAG, SEED_TAG, STUDY_TAG, run_study
from distill.study.spec import load_study

pytestmark = pytest.mark.integration

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
CELLS = ["labels=mixed", "labels=teacher"]


def chain_runs(client):
    exp = client.get_experiment_by_name("pld")
    return client.search_runs([exp.experiment_id], filter_string="tags.`pld.kind` = 'chain'")


def test_a_study_stops_continues_without_retraining_and_reports(tmp_path, capsys, monkeypatch):
    speakers = [f"{i:08x}" for i in range(10)]
    corpus = write_sc_layout(tmp_path / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]},
                             test={speakers[1]})
    # as pld data synth writes it: where each clip's word lies (here the whole clip, so that every
    # 500 ms crop holds exactly half of its word)
    clips = sorted(p.relative_to(corpus).as_posix() for p in corpus.glob("*/*.wav") if p.parent.name[0] != "_")
    (corpus / "synth_manifest.csv").write_text("path,word,speech_start_ms,speech_end_ms\n" + "".join(
        f"{c},{c.split('/')[0]},0,1000\n" for c in clips))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "data": {"path": str(corpus)}, "model": {"name": "tiny"},
        "chain": {"lengths_ms": [1000, 500], "crops_per_clip": 1, "baselines": ["direct"]},
        "labels": {"mode": "soft", "temperature": 2.0},
        "train": {"epochs": 1, "batch_size": 32, "num_workers": 1, "cpus_per_worker": 1},
        "ray": {"num_cpus": 2}, "storage": {"root": str(tmp_path / "runs")}}))
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({
        "name": "tiny", "base": "base.yaml", "seeds": [0, 1],
        "axes": {"labels": {"mixed": {"labels.original_weight": 0.5}, "teacher": {"labels.original_weight": 0.0}}},
        "contrasts": ["pld@500 - direct@500"],
        "eval": {"again": {"name": "speech_commands", "path": str(corpus)}}}))  # its test split, read anew
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    records = tmp_path / "tiny" / "records"  # the default: <study folder>/<study name>/records
    study = load_study(tmp_path / "study.yaml")
    assert [c.id for c in study.cells()] == CELLS

    # 1. stopped after two chains: the first cell's two seeds are recorded, nothing else
    import ray

    lines: list[str] = []
    try:
        summary = run_study(study, records_dir=records, tracking=uri, say=lines.append, stop_after=2)
    finally:
        ray.shutdown()
    assert summary.stopped and summary.ran == [("labels=mixed", 0), ("labels=mixed", 1)] and not summary.reused
    assert any("stopped after 2 new chain(s); 2 run(s) left" in line for line in lines), lines[-5:]
    assert sorted(p.relative_to(records).as_posix() for p in records.rglob("*.json.gz")) == [
        "labels=mixed/seed-0.json.gz", "labels=mixed/seed-1.json.gz"]
    client = MlflowClient(uri)
    first = {r.info.run_id for r in chain_runs(client)}
    assert first == set(summary.chain_runs.values()) and len(first) == 2
    first_bytes = {p: p.read_bytes() for p in records.rglob("*.json.gz")}

    # 2. continued through the CLI: the two finished runs are reused, the other two run
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "study", "study.yaml", "--tracking-uri", uri],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for seed in (0, 1):
        assert re.search(rf"\[{seed + 1}/4\] labels=mixed seed {seed}: reused", out), out[-3000:]
        assert re.search(rf"\[{seed + 3}/4\] labels=teacher seed {seed}: running chain", out), out[-3000:]
    assert "all 4 run(s) recorded (2 new, 2 reused)" in out
    # the cells differ only in the students' labels: the teacher and direct baseline of each seed
    # are the first cell's, shared, not trained again
    for stage in ("teacher", "direct_500ms"):
        assert len(re.findall(rf"\] {stage}: the same stage finished in another chain", out)) == 2, out[-3000:]
    assert "student_500ms: the same stage" not in out
    chains = chain_runs(client)
    assert len(chains) == 4 and first <= {r.info.run_id for r in chains}  # the first two were not trained again
    assert sorted((r.data.tags[STUDY_TAG], r.data.tags[CELL_TAG], r.data.tags[SEED_TAG]) for r in chains) == [
        ("tiny", cell, str(seed)) for cell in CELLS for seed in (0, 1)]
    assert all(p.read_bytes() == b for p, b in first_bytes.items())  # reused records are left as they were

    # what a record holds
    recs = read_records(records)
    assert [(r.cell_id, r.seed) for r in recs] == [(c, s) for c in CELLS for s in (0, 1)]
    for r in recs:
        assert r.study == "tiny" and r.commit and (r.commit == "unknown" or re.fullmatch(r"[0-9a-f]{40}", r.commit))
        assert [(s.name, s.method, s.input_ms) for s in r.stages] == [
            ("teacher", "teacher", 1000), ("student_500ms", "pld", 500), ("direct_500ms", "direct", 500)]
        by_name = {s.name: s for s in r.stages}
        assert 0 <= by_name["student_500ms"].label_stats["agreement"] <= 1  # the label statistics the chain logs
        assert by_name["direct_500ms"].label_stats["agreement"] == 1.0  # direct learns the clips' own labels
        assert set(r.evals) == {"test", "again"}
        test, again = r.evals["test"], r.evals["again"]
        assert len(test.clip_ids) > 0 and set(test.clip_ids) == set(again.clip_ids)
        for stage in by_name:
            for protocol in ("window", "stream", "center"):
                # the record's predictions are the chain's own test metrics, clip by clip
                assert r.correct(stage, protocol).mean() == pytest.approx(
                    by_name[stage].metrics[f"test_acc_{protocol}"]), (r.cell_id, r.seed, stage, protocol)
        assert record_path(records, r.cell_id, r.seed).is_file()
        # labels against word share: every crop of a word clip (one per training clip) at share 0.5
        chain = next(c for c in chains if (c.data.tags[CELL_TAG], c.data.tags[SEED_TAG]) == (r.cell_id, str(r.seed)))
        crops = pq.read_table(Path(chain.data.tags["pld.run_dir"]) / "stages" / "student_500ms" / "data",
                              columns=["source_label"]).to_pandas()
        words = int((crops["source_label"] != "_silence_").sum())
        assert words > 0
        for stage in ("student_500ms", "direct_500ms"):
            table = by_name[stage].word_share
            assert [sum(table[k][i] for k in ("word", "silence", "unknown", "other")) for i in range(10)] == [
                0, 0, 0, 0, 0, words, 0, 0, 0, 0], (stage, table)
        assert by_name["direct_500ms"].word_share["word"][5] == words  # the clip's own label, always
        assert by_name["teacher"].word_share == {}
        assert len(by_name["student_500ms"].curves["val_acc"]) == 1  # one epoch
    by_cell = {(r.cell_id, r.seed): r for r in recs}
    for seed in (0, 1):
        mixed, teacher_only = by_cell[("labels=mixed", seed)], by_cell[("labels=teacher", seed)]
        for stage in ("teacher", "direct_500ms"):  # the shared stages predict exactly alike
            assert (teacher_only.evals["test"].predictions[stage] == mixed.evals["test"].predictions[stage])
    shared_runs = client.search_runs([client.get_experiment_by_name("pld").experiment_id],
                                     filter_string="tags.`pld.reused_from` != ''")
    assert sorted(r.data.tags["pld.stage"] for r in shared_runs) == ["direct_500ms", "direct_500ms", "teacher", "teacher"]
    for r in shared_runs:  # a shared stage's run in the new chain carries the metrics of the run it reuses
        source = client.get_run(r.data.tags["pld.reused_from"])
        assert r.data.metrics["test_acc_stream"] == source.data.metrics["test_acc_stream"]

    # 3. the report, from the records alone
    proc = subprocess.run([sys.executable, "-m", "distill.cli", "study", "report", "study.yaml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = tmp_path / "tiny" / "report"
    md = (report / "report.md").read_text()
    for cell in CELLS:
        for stage in ("teacher", "student_500ms", "direct_500ms"):
            assert f"| {cell} | {stage} |" in md
        for protocol in ("window", "stream", "center"):
            assert f"| pld@500 - direct@500 | {cell} | {protocol} | 2 |" in md
    assert "## Accuracy on again" in md
    assert (report / "report.json").is_file() and (report / "accuracy_by_length.png").is_file()
    assert (report / "contrasts.png").is_file()

    # in MLflow the study is one run, found again when it continued: its chains nest under it and
    # its contrasts are its metrics, the paired means of the report
    from distill.study.run import contrast_metric

    studies = client.search_runs([client.get_experiment_by_name("pld").experiment_id],
                                 filter_string="tags.`pld.kind` = 'study'")
    assert [(r.info.run_name, r.data.tags[STUDY_TAG]) for r in studies] == [("study tiny", "tiny")]
    assert {c.data.tags["mlflow.parentRunId"] for c in chains} == {studies[0].info.run_id}
    assert summary.study_run_id == studies[0].info.run_id
    data = json.loads((report / "report.json").read_text())
    for c in data["contrasts"]:
        name = contrast_metric(c["contrast"], c["cell"], c["eval"], c["protocol"])
        assert studies[0].data.metrics[name] == pytest.approx(c["mean"]), name
        assert studies[0].data.metrics[f"{name}/ci95"] == pytest.approx(c["ci95"]), name
    assert f"MLflow run {studies[0].info.run_id} holds its chains and" in out

    # a study file with a mistake is one line naming the key
    (tmp_path / "bad.yaml").write_text((tmp_path / "study.yaml").read_text().replace("pld@500", "pld@400"))
    from distill.cli import main

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["study", "bad.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pld: error: bad.yaml: contrasts[0]: pld@400 is not a stage"), err
