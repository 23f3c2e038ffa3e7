"""What a chain writes to MLflow beyond plain metrics: stage tags, the distilled dataset as a run
input, the model, and the summary table (docs/mlflow.md is the contract)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import TypedDict

import mlflow
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset

from distill.methods import PLD, baselines, methods
from distill.names import INPUT_MS, KIND, METHOD, PROTOCOLS, STAGE, TEACHER_RUN
from distill.stages import StageSpec

PIP_REQUIREMENTS = ["torch", "torchaudio", "pld-platform"]


def stage_tags(stage: StageSpec, teacher_run_id: str | None) -> dict[str, str]:
    return {KIND: stage.kind, METHOD: stage.method, INPUT_MS: str(stage.input_ms), TEACHER_RUN: teacher_run_id or "",
            STAGE: stage.name}


SUMMARY_COLUMNS = ["stage", "method", "input_ms", "teacher", "acc_window", "acc_stream", "acc_center", "agreement",
                   "train_fit", "fa_per_h@90%", "recall@1fa/h", "macs", "latency_us"]
# How a number prints in a table, per column; rows keep the numbers themselves (None: not measured).
COLUMN_FORMATS = {**{f"acc_{p}": ".4f" for p in PROTOCOLS}, "agreement": ".3f", "train_fit": ".3f",
                  "fa_per_h@90%": ".0f", "recall@1fa/h": ".3f", "macs": ".0f", "latency_us": ".0f"}


# A stage's line of the summary table, as numbers (None: not measured); ``format_table`` makes the text.
# `teacher` is the stage that labelled its crops (None: the clips' own labels).
SummaryRow = TypedDict("SummaryRow", {
    "stage": str, "method": str, "input_ms": int, "teacher": "str | None",
    **{f"acc_{p}": "float | None" for p in PROTOCOLS}, "agreement": "float | None", "train_fit": "float | None",
    "fa_per_h@90%": "float | None", "recall@1fa/h": "float | None", "macs": "float | None",
    "latency_us": "float | None", "run_id": str})


def fmt(value, spec: str | None = None) -> str:
    """A value for a table: '-' when it is missing or NaN, numbers by ``spec``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec) if spec and isinstance(value, (int, float)) else str(value)


def summary_row(stage: str, method: str, input_ms: int, teacher: str | None, metrics: dict, run_id: str) -> SummaryRow:
    """A stage's line of the summary table (``pld run`` prints it, ``pld report`` shows it), from
    the metrics the stage run logged. Two different agreements, in their own columns:
    ``agreement``, of a taught stage, its crops' teacher labels with the clips' own labels;
    ``train_fit``, of the teacher, its predictions on its own training clips."""
    return {"stage": stage, "method": method, "input_ms": input_ms, "teacher": teacher,
            **{f"acc_{p}": metrics.get(f"test_acc_{p}") for p in PROTOCOLS},
            "agreement": metrics.get("label_agreement") if teacher else None,
            "train_fit": None if teacher else metrics.get("train_clip_agreement"),
            "fa_per_h@90%": metrics.get("test_fa_per_hour_at_90_recall"),
            "recall@1fa/h": metrics.get("test_recall_at_1_fa_per_hour"),
            "macs": metrics.get("macs"), "latency_us": metrics.get("latency_us"), "run_id": run_id}


def headline_metrics(rows: list[dict]) -> dict[str, float]:
    """The chain run's own metrics, what its MLflow page and runs table show first: the teacher's
    test accuracy and, at the chain's shortest input, the PLD student's, direct's and one-shot's,
    per protocol, with PLD's difference from each baseline. From the summary rows; a stage the
    chain does not have, or a metric it did not log, is left out."""
    if not rows:
        return {}
    shortest = min(r["input_ms"] for r in rows)
    chosen = {"teacher": next((r for r in rows if r["stage"] == "teacher"), None)}
    for method in (m.name for m in methods()):
        chosen[method] = next((r for r in rows if r["method"] == method and r["input_ms"] == shortest
                               and r["stage"] != "teacher"), None)
    out: dict[str, float] = {}
    for p in PROTOCOLS:
        acc = {m: r[f"acc_{p}"] for m, r in chosen.items() if r is not None and r.get(f"acc_{p}") is not None}
        out.update({f"{m}_test_acc_{p}": v for m, v in acc.items()})
        for baseline in baselines():
            if PLD in acc and baseline in acc:
                out[f"pld_minus_{baseline}_{p}"] = round(acc[PLD] - acc[baseline], 4)
    return out


def log_chain_headline(summary_md: str, rows: list[dict], data_path: str, data_name: str,
                       test_clip_ids: list[str]) -> None:
    """On the active chain run: its headline metrics, the summary as its description (MLflow's
    run note), and the test split as its evaluation dataset (digest: the test clips' ids)."""
    mlflow.log_metrics(headline_metrics(rows))
    mlflow.set_tag("mlflow.note.content", summary_md)
    digest = hashlib.sha256("\n".join(sorted(test_clip_ids)).encode()).hexdigest()[:16]
    with warnings.catch_warnings():  # as in log_distilled_dataset
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(data_path))
    dataset = MetaDataset(source=source, name=f"{data_name} test split", digest=digest)
    for attempt in range(3):
        # chains of one corpus log the same dataset: two at once can both insert it on a SQL
        # store (its key), and one fails; once it exists, logging it again only links it
        try:
            mlflow.log_input(dataset, context="evaluation")
            return
        except mlflow.exceptions.MlflowException as exc:
            from distill.runtime.infra.errors import tracking_refused

            if tracking_refused(exc) or attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))


def log_distilled_dataset(data_dir: Path, manifest: dict, name: str) -> None:
    """Record the stage's distilled Parquet as the run's input (source = its directory,
    digest = hash of its manifest) and keep the manifest as an artifact."""
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    with warnings.catch_warnings():  # MLflow registers the local-file source twice and warns about it
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(data_dir))
    dataset = MetaDataset(source=source, name=name, digest=digest)
    mlflow.log_input(dataset, context="training")
    mlflow.log_dict(manifest, "distilled_dataset_manifest.json")


def log_model(model, model_dir: Path, input_samples: int) -> None:
    """The stage's model twice: as an MLflow PyTorch model (for serving and the UI) and as
    the platform's own weights-only checkpoint directory (what ``pld`` itself loads)."""
    import numpy as np

    with warnings.catch_warnings():
        # MLflow's default 'pt2' export fixes the batch size to the example's; the pickle format
        # keeps any batch. pld never loads this copy: it reads the weights-only checkpoint.
        warnings.simplefilter("ignore")
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        mlflow.pytorch.log_model(model, name="model", pip_requirements=PIP_REQUIREMENTS, serialization_format="pickle",
                                 input_example=np.zeros((1, input_samples), dtype=np.float32))
    mlflow.log_artifacts(str(model_dir), artifact_path="checkpoint")


def format_table(rows: list[dict], columns: list[str], markdown: bool = False,
                 formats: dict[str, str] = COLUMN_FORMATS) -> str:
    """Rows of values as a text or Markdown table: numbers by ``formats`` per column, a missing
    value (None, NaN) as '-', a column the row lacks left empty."""
    cells = [[fmt(r[c], formats.get(c)) if c in r else "" for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines) + "\n"
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(row) for row in cells]) + "\n"


# MLflow 3's UI chooses its layout from this experiment tag; without it an experiment of
# training runs opens on the GenAI overview (traces, evaluations).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ui_link(uri: str, experiment_id: str, run_id: str) -> str:
    """Where to see a run in the MLflow UI. MLflow 3.17's UI opens every experiment on its GenAI
    pages (traces, tokens) unless the address asks for model training: `workflowType` does."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"`mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000/{page}"


def use_experiment(name: str) -> None:
    """Make ``name`` the active MLflow experiment (created if missing), marked as model training."""
    import mlflow

    from distill.runtime.infra.errors import tracking_refused

    experiment = mlflow.set_experiment(name)
    # again by id: when another chain created it at the same moment, MLflow (3.17) returns the
    # experiment without making it the active one, and the runs would land in "Default"
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    # written every time, though it rarely changes: this one cheap write is the check that these
    # credentials may log to the experiment, made before the cluster starts (HTTP 403 otherwise)
    client = mlflow.MlflowClient()
    try:
        client.set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    except mlflow.exceptions.MlflowException as exc:
        # two chains starting at once can both insert the tag (a SQL store's unique key): one wins
        if tracking_refused(exc) or client.get_experiment(experiment.experiment_id).tags.get(
                EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            raise
