"""Finished stages shared across chains: a teacher or a baseline that another chain already
trained from the very same inputs is reused instead of trained again (``pld study`` turns this
on; ``pld run --share-stages`` too).

A stage's output is fixed by its ``StageSpec`` (length, crops, labels, loss, epochs, seed), the
config sections that every stage reads (data, features, model, train, relabel, eval), the
corpus the source dataset is read from (``source_identity``) and, for a taught stage, its
teacher's own stage key. So
the *stage key* hashes exactly those, and nothing a stage does not read: two cells of a study
that differ only in their students' labels or schedule have the same teacher and direct
baseline keys, and share them. A sharing chain writes ``<storage root>/shared-stages/<key>.json``
for each stage it finishes, pointing at it; a pointer whose model is gone or changed is ignored
(the stage trains again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import mlflow

from distill.config import ExperimentConfig
from distill.fingerprint import NOT_RESULTS, semantic_config
from distill.names import REUSED_FROM
from distill.runtime.infra import storage
from distill.runtime.infra.resume import finished_stage
from distill.stages import StageSpec

SHARED_DIR = "shared-stages"
# config sections a stage does not read: plan_chain resolved them into its StageSpec (chain,
# labels, stages, the two epoch counts), or they only name and place the run (see records.NOT_RESULTS)
NOT_STAGE_INPUTS = ("chain", "labels", "stages", "seed", "train.epochs", "train.teacher_epochs")


def source_identity(index) -> str:
    """The corpus a chain reads (a ``SourceIndex``), as a hash: every clip's id, split, label and
    window, and every file's path, size and modification time, noise files included. The same
    files give the same identity in every chain; the sealed source's content hash does not (its
    Parquet files are named anew by each chain)."""
    clips = index.clips.sort_values("clip_id")
    files = sorted(set(clips["path"]) | set(index.noise_files))
    digest = hashlib.sha256(clips[["clip_id", "split", "label", "start"]].to_csv(index=False).encode())
    if files:
        fs, _ = storage.filesystem(files[0])
        for name, info in zip(files, fs.get_file_info([storage.filesystem(f)[1] for f in files])):
            digest.update(f"{name}\0{info.size}\0{info.mtime_ns}\n".encode())
    return digest.hexdigest()


def stage_key(cfg: ExperimentConfig, stage: StageSpec, source_id: str, teacher_key: str | None) -> str:
    """sha256 (16 hex digits) of what fixes a stage's output."""
    config = semantic_config(cfg.model_dump(mode="json"), NOT_RESULTS + NOT_STAGE_INPUTS)
    spec = dataclasses.asdict(stage)
    spec.pop("name")  # the same stage may be named differently in two plans
    spec.pop("teacher")  # ... and its teacher: teacher_key says which model that is
    if not stage.train:
        spec.pop("train")  # no settings of its own: the key a stage had before `stages:` existed
    text = json.dumps({"config": config, "stage": spec, "source": source_id, "teacher": teacher_key},
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pointer_path(root: storage.StorageRoot, key: str) -> str:
    return root.join(SHARED_DIR, f"{key}.json")


def find_shared(root: storage.StorageRoot, key: str, client: mlflow.MlflowClient) -> dict | None:
    """The finished stage this key points at, if its model is intact and its run FINISHED."""
    path = pointer_path(root, key)
    if not storage.is_file(path):
        return None
    try:
        pointer = json.loads(storage.read_text(path))
    except json.JSONDecodeError:
        return None
    return finished_stage(pointer["stage_dir"], client)


def publish(root: storage.StorageRoot, key: str, stage_dir: str) -> None:
    """Point ``key`` at a stage that has just finished (its ``stage.json`` written)."""
    storage.write_text(pointer_path(root, key), json.dumps({"stage_dir": str(stage_dir)}))


def log_reused_stage(record: dict, client: mlflow.MlflowClient) -> None:
    """Fill the active (nested) stage run from the finished run it reuses: its params and
    metrics, and the ``pld.reused_from`` tag naming that run, so the chain reads whole in MLflow."""
    source = client.get_run(record["run_id"])
    mlflow.set_tag(REUSED_FROM, record["run_id"])
    mlflow.log_params(source.data.params)
    mlflow.log_metrics(source.data.metrics)
