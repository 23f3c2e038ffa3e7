"""The chain run's headline metrics (runtime/execution/tracking.py: headline_metrics)."""

from __future__ import annotations

import math

from distill.runtime.execution.tracking import SUMMARY_COLUMNS, format_table, headline_metrics, summary_row


def _row(stage, method, input_ms, stream, window=None):
    return {"stage": stage, "method": method, "input_ms": input_ms, "acc_window": window, "acc_stream": stream,
            "acc_center": None}


def test_headline_is_the_shortest_inputs_methods_and_their_differences():
    rows = [_row("teacher", "pld", 1000, 0.9), _row("student_750ms", "pld", 750, 0.85),
            _row("student_500ms", "pld", 500, 0.7, 0.65), _row("direct_500ms", "direct", 500, 0.61),
            _row("one_shot_500ms", "one_shot", 500, 0.725)]
    got = headline_metrics(rows)
    assert got == {"teacher_test_acc_stream": 0.9, "pld_test_acc_stream": 0.7, "direct_test_acc_stream": 0.61,
                   "one_shot_test_acc_stream": 0.725, "pld_minus_direct_stream": 0.09,
                   "pld_minus_one_shot_stream": -0.025, "pld_test_acc_window": 0.65}


def test_a_chain_without_baselines_or_metrics_logs_what_it_has():
    assert headline_metrics([]) == {}
    only = headline_metrics([_row("teacher", "pld", 1000, 0.9), _row("student_500ms", "pld", 500, None)])
    assert only == {"teacher_test_acc_stream": 0.9}


def test_summary_rows_hold_numbers_and_the_table_formats_them():
    """Rows keep what the stage logged (no parse-back of printed text); only the table rounds."""
    metrics = {"test_acc_window": 0.876923, "test_acc_stream": 0.81234, "test_acc_center": float("nan"),
               "label_agreement": 0.70312, "train_clip_agreement": 0.99, "macs": 1.23e6}
    student = summary_row("student_500ms", "pld", 500, "teacher", metrics, "r1")
    teacher = summary_row("teacher", "pld", 1000, None, metrics, "r0")
    assert student["acc_stream"] == 0.81234 and student["agreement"] == 0.70312 and student["train_fit"] is None
    assert teacher["agreement"] is None and teacher["train_fit"] == 0.99 and student["latency_us"] is None
    lines = {ln.split()[0]: ln.split() for ln in format_table([teacher, student], SUMMARY_COLUMNS).splitlines()[2:]}
    cols = {c: i for i, c in enumerate(SUMMARY_COLUMNS)}
    assert lines["student_500ms"][cols["acc_window"]] == "0.8769" and lines["student_500ms"][cols["acc_stream"]] == "0.8123"
    assert lines["student_500ms"][cols["acc_center"]] == "-" and lines["teacher"][cols["teacher"]] == "-"
    assert lines["student_500ms"][cols["agreement"]] == "0.703" and lines["student_500ms"][cols["macs"]] == "1230000"
    assert math.isnan(student["acc_center"])  # the row keeps NaN; only the table shows '-'
    md = format_table([student], ["stage", "acc_stream", "not_a_column"], markdown=True)
    assert md.splitlines()[2] == "| student_500ms | 0.8123 |  |"


def test_the_evaluation_dataset_survives_a_concurrent_insert(tmp_path, monkeypatch):
    """Two chains of one corpus log the same test split at once; the one whose insert loses the
    race logs it again (then it only links it), and a refusal is never retried."""
    import mlflow
    import pytest
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    from distill.runtime.execution import tracking

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    real, calls = mlflow.log_input, []

    def racing(dataset, context=None):
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException("UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest")
        return real(dataset, context=context)

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    monkeypatch.setattr(mlflow, "log_input", racing)
    with mlflow.start_run() as run:
        tracking.log_chain_headline("# PLD chain t", [], str(tmp_path), "speech_commands", ["a", "b"])
    got = mlflow.get_run(run.info.run_id)
    assert calls == ["evaluation", "evaluation"]
    assert [d.dataset.name for d in got.inputs.dataset_inputs] == ["speech_commands test split"]
    assert got.data.tags["mlflow.note.content"] == "# PLD chain t"

    def refusing(dataset, context=None):
        calls.append(context)
        raise MlflowException("no", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(mlflow, "log_input", refusing)
    calls.clear()
    with mlflow.start_run(), pytest.raises(MlflowException):
        tracking.log_chain_headline("# PLD chain t", [], str(tmp_path), "speech_commands", ["a", "b"])
    assert calls == ["evaluation"]
