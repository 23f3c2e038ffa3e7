"""What lets a chain survive its driver: finding an unfinished chain, one driver per chain,
and the record that marks a stage finished.

A stage is finished when ``<stage dir>/stage.json`` exists (written last, after its model,
metrics and MLflow run are complete) and the model directory still hashes to what the record
says. A resumed chain reuses such stages as they are and recomputes the rest; a stage's
sealed distilled dataset is reused too when it was made from the same source and teacher.
"""

from __future__ import annotations

import json
import os
import socket
import mlflow
from mlflow.entities import RunStatus

from distill.names import CONFIG_ARTIFACT, FINGERPRINT, KIND, SUPERSEDED
from distill.runtime.infra import storage
from distill.runtime.infra.manifest import tree_sha256
from distill.runtime.infra.errors import tracking_refused

RECORD, DRIVER = "stage.json", "driver.json"


def find_unfinished_chain(client: mlflow.MlflowClient, experiment_id: str, fingerprint: str) -> str | None:
    """The newest chain run of this config fingerprint that did not finish, if any."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{FINGERPRINT}` = '{fingerprint}' and "
                                                             f"tags.`{KIND}` = 'chain'", order_by=["start_time DESC"])
    for run in runs:
        if run.info.status != RunStatus.to_string(RunStatus.FINISHED):
            return run.info.run_id
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_driver(run_dir: str, run_id: str) -> None:
    """Refuse to resume a chain whose driver is still running on this machine; else claim it."""
    path = storage.join(run_dir, DRIVER)
    if storage.is_file(path):
        try:
            owner = json.loads(storage.read_text(path))
        except json.JSONDecodeError:
            owner = {}
        owner = owner if isinstance(owner, dict) else {}  # a damaged claim claims nothing
        pid = owner.get("pid")
        if (owner.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0 and pid != os.getpid()
                and _alive(pid)):
            raise ValueError(f"chain {run_id} is still running (driver pid {owner['pid']} on this host); "
                               "wait for it, stop it, or start a separate chain with --new")
    storage.write_text(path, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id}))


def write_record(stage_dir: str, run_id: str, row: dict, model_dir: str) -> None:
    record = {"run_id": run_id, "row": row, "model_dir": str(model_dir), "model_sha256": tree_sha256(model_dir)}
    storage.write_text(storage.join(stage_dir, RECORD), json.dumps(record, indent=2))


def finished_stage(stage_dir: str, client: mlflow.MlflowClient) -> dict | None:
    """The stage's record if the stage finished and its model is intact, else None."""
    path = storage.join(stage_dir, RECORD)
    if not storage.is_file(path):
        return None
    record = json.loads(storage.read_text(path))
    model_dir = record["model_dir"]
    if not storage.is_dir(model_dir) or tree_sha256(model_dir) != record["model_sha256"]:
        return None
    try:
        run = client.get_run(record["run_id"])
    except mlflow.exceptions.MlflowException as exc:
        if tracking_refused(exc):
            raise
        return None
    return record if run.info.status == RunStatus.to_string(RunStatus.FINISHED) else None


def retire_unfinished_runs(client: mlflow.MlflowClient, parent_run_id: str, experiment_id: str, stage: str) -> None:
    """Earlier runs of a stage that is about to run again are tagged ``pld.superseded`` (and
    closed as KILLED if a dead driver left them RUNNING), so each stage has one current run."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                                             f"tags.`pld.stage` = '{stage}'")
    for run in runs:
        client.set_tag(run.info.run_id, SUPERSEDED, "true")
        if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
            client.set_terminated(run.info.run_id, "KILLED")


def chain_config(run_id: str, tracking: str | None = None):
    """The resolved config a chain run logged (``pld resume`` runs it again)."""
    import yaml

    from distill.config import ExperimentConfig
    from distill.runtime.infra.session import quiet_logs, resolve_tracking_uri

    quiet_logs()
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking))
    try:
        raw = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/{CONFIG_ARTIFACT}"))
    except Exception as exc:  # MLflow raises several types for a missing run or artifact
        if tracking_refused(exc):
            raise
        raise ValueError(f"run {run_id!r}: cannot read its {CONFIG_ARTIFACT} from {mlflow.get_tracking_uri()} ({exc}); "
                         "is it a chain run of this tracking store?") from None
    return ExperimentConfig.model_validate(raw)
