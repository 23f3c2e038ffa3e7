"""The chain run's headline metrics (runtime/tracking.py: headline_metrics)."""

from __future__ import annotations

from distill.runtime.tracking import headline_metrics


def _row(stage, method, input_ms, stream, window="-"):
    return {"stage": stage, "method": method, "input_ms": input_ms, "acc_window": window, "acc_stream": stream,
            "acc_center": "-"}


def test_headline_is_the_shortest_inputs_methods_and_their_differences():
    rows = [_row("teacher", "pld", 1000, "0.9000"), _row("student_750ms", "pld", 750, "0.8500"),
            _row("student_500ms", "pld", 500, "0.7000", "0.6500"), _row("direct_500ms", "direct", 500, "0.6100"),
            _row("one_shot_500ms", "one_shot", 500, "0.7250")]
    got = headline_metrics(rows)
    assert got == {"teacher_test_acc_stream": 0.9, "pld_test_acc_stream": 0.7, "direct_test_acc_stream": 0.61,
                   "one_shot_test_acc_stream": 0.725, "pld_minus_direct_stream": 0.09,
                   "pld_minus_one_shot_stream": -0.025, "pld_test_acc_window": 0.65}


def test_a_chain_without_baselines_or_metrics_logs_what_it_has():
    assert headline_metrics([]) == {}
    only = headline_metrics([_row("teacher", "pld", 1000, "0.9000"), _row("student_500ms", "pld", 500, "-")])
    assert only == {"teacher_test_acc_stream": 0.9}


def test_the_evaluation_dataset_survives_a_concurrent_insert(tmp_path, monkeypatch):
    """Two chains of one corpus log the same test split at once; the one whose insert loses the
    race logs it again (then it only links it), and a refusal is never retried."""
    import mlflow
    import pytest
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    from distill.runtime import tracking

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
