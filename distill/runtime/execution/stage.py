"""One stage of a chain: ``run_stage`` carries out a ``StageSpec`` in four steps, top to bottom:

relabel  the stage's distilled dataset: crops of the training clips labelled by its teacher
         (``runtime/execution/relabel.py`` on Ray Data), sealed with a manifest — or, when a resumed
         chain sealed it for this very stage and teacher, reused;
train    the stage's model on it (``runtime/execution/train.py`` on Ray Train), the best epoch on validation;
evaluate its test metrics under every protocol (``runtime/execution/evaluate.py``);
log      metrics, model and the summary row to the stage's nested MLflow run.

Every decision (crops, labels, loss) was made in ``stages.plan_chain``; ``Chain`` holds what
all stages of one chain share, set up once by ``runtime/execution/chain.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import mlflow
import ray
from mlflow.entities import Metric

from distill.config import ExperimentConfig
from distill.core.augment import NoiseBank, RoomBank
from distill.core.checkpoint import ModelSpec, load_model_dir
from distill.core.crops import num_samples
from distill.names import CONFUSION_ARTIFACT, TRAIN_RUNNER
from distill.runtime.infra import storage
from distill.runtime.infra.progress import heartbeat
from distill.runtime.infra.errors import step
from distill.runtime.execution.evaluate import evaluate_model_dir, evaluate_task
from distill.runtime.infra.manifest import is_sealed, seal, tree_sha256, verify
from distill.runtime.execution.relabel import Teacher, dataset_recipe, read_training_crops, relabel_crops
from distill.runtime.infra.resume import finished_stage, retire_unfinished_runs, write_record
from distill.runtime.execution.shared import find_shared, log_reused_stage, publish, stage_key
from distill.runtime.execution.source import iter_split_arrays
from distill.runtime.execution.tracking import fmt, log_distilled_dataset, log_model, stage_tags, summary_row
from distill.runtime.execution.train import StageData, train_stage
from distill.stages import StageSpec, stage_train


@dataclass
class Chain:
    """What every stage of one chain shares."""
    cfg: ExperimentConfig
    client: mlflow.MlflowClient
    run_id: str  # the chain's (parent) MLflow run
    experiment_id: str
    run_dir: str  # a local directory or a storage URI
    source: dict  # the sealed source dataset's manifest
    labels: list[str]
    validation: tuple  # (waveforms, labels)
    test: tuple
    noise: NoiseBank | None
    progress: object  # the Ray queue through which training workers report epochs
    say: Callable[[str], None]
    resuming: bool
    root: storage.StorageRoot  # storage.root, resolved: the shared stages' pointers live under it
    rooms: RoomBank | None = None  # room responses for train.augment's reverberation (None: none)
    share: bool = False  # reuse a stage that another chain finished from the same inputs (runtime/execution/shared.py)
    source_id: str = ""  # shared.source_identity of the corpus the source was read from
    models: dict[str, Teacher] = field(default_factory=dict)  # finished stage → its model and run
    keys: dict[str, str] = field(default_factory=dict)  # stage → its stage key (runtime/execution/shared.py)

    @property
    def source_dir(self) -> str:
        return storage.join(self.run_dir, "source")


def run_stage(chain: Chain, stage: StageSpec, position: str) -> dict:
    """Carry out one stage (or reuse it, finished by an earlier session); returns its summary row."""
    stage_dir = storage.join(chain.run_dir, "stages", stage.name)
    model_dir = storage.join(stage_dir, "model")
    teacher = chain.models[stage.teacher] if stage.teacher else None
    key = chain.keys[stage.name] = stage_key(chain.cfg, stage, chain.source_id, chain.keys.get(stage.teacher))
    if chain.resuming:
        record = finished_stage(stage_dir, chain.client)
        if record:
            chain.say(f"== [{position}] {stage.name}: finished earlier (run {record['run_id']}), reused")
            chain.models[stage.name] = Teacher(record["model_dir"], record["run_id"])
            return record["row"]
        retire_unfinished_runs(chain.client, chain.run_id, chain.experiment_id, stage.name)
    if chain.share and (shared := find_shared(chain.root, key, chain.client)):
        return reuse_shared_stage(chain, stage, stage_dir, shared, position, teacher)
    with mlflow.start_run(run_name=stage.name, nested=True, tags=stage_tags(stage, teacher and teacher.run_id)) as run:
        chain.say(f"== [{position}] {stage.name}: {stage.input_ms} ms, labels from "
                  f"{stage.teacher or 'the clips'} ({stage.epochs} epochs)")
        seconds = {}
        on = partial(step, stage.name, storage_root=chain.root, chain_run_id=chain.run_id)
        t = time.perf_counter()
        with on("relabel"), heartbeat(chain.say, f"{stage.name} relabel"):
            manifest = relabel_step(chain, stage, stage_dir, teacher)
        seconds["relabel_seconds"] = time.perf_counter() - t
        with on("train"):
            summary = train_step(chain, stage, stage_dir, manifest["rows"], run.info.run_id)
            mlflow.set_tag(TRAIN_RUNNER, summary["runner"])  # with several workers, runners cut shards otherwise
        seconds["train_seconds"] = summary["seconds"]
        t = time.perf_counter()
        with on("evaluate"), heartbeat(chain.say, f"{stage.name} evaluate"):
            metrics = evaluate_step(chain, stage, model_dir)
        seconds["eval_seconds"] = time.perf_counter() - t
        with on("log"):
            row = log_step(chain, stage, model_dir, manifest, summary, metrics, seconds)
    write_record(stage_dir, run.info.run_id, row, model_dir)  # after the run is FINISHED
    if chain.share:  # other sharing chains may reuse it from now on
        publish(chain.root, key, stage_dir)
    chain.models[stage.name] = Teacher(model_dir, run.info.run_id)
    return row


def reuse_shared_stage(chain: Chain, stage: StageSpec, stage_dir: str, shared: dict, position: str,
                       teacher: Teacher | None) -> dict:
    """This chain's run of a stage another chain finished from the same inputs: a nested run
    with that run's params and metrics, pointing at it, and the same model."""
    with mlflow.start_run(run_name=stage.name, nested=True, tags=stage_tags(stage, teacher and teacher.run_id)) as run:
        chain.say(f"== [{position}] {stage.name}: the same stage finished in another chain (run "
                  f"{shared['run_id']}), reused")
        log_reused_stage(shared, chain.client)
    row = {**shared["row"], "run_id": run.info.run_id}
    write_record(stage_dir, run.info.run_id, row, shared["model_dir"])
    chain.models[stage.name] = Teacher(shared["model_dir"], run.info.run_id)
    return row


def relabel_step(chain: Chain, stage: StageSpec, stage_dir: str, teacher: Teacher | None) -> dict:
    """The stage's sealed distilled dataset (reused if a resumed chain has it intact); logs what it is."""
    expect = {**dataset_recipe(stage, teacher), "source_sha256": chain.source["content_sha256"],
              "teacher_checkpoint_sha256": tree_sha256(teacher.model_dir) if teacher else ""}
    manifest = None
    if chain.resuming and is_sealed(stage_dir):
        try:
            manifest = verify(stage_dir, expect)
            chain.say(f"   relabel: reused the sealed dataset ({manifest['rows']} rows)")
        except ValueError as exc:
            chain.say(f"   relabel: not reusing the earlier dataset: {exc}")
    if manifest is None:
        manifest = relabel_crops(chain.source_dir, stage_dir, stage, chain.cfg.relabel, teacher, chain.labels)
        manifest = seal(stage_dir, manifest, source_sha256=expect["source_sha256"],
                        teacher_checkpoint_sha256=expect["teacher_checkpoint_sha256"])
    log_relabel(chain, stage, stage_dir, manifest)
    verify(stage_dir, expect)  # the stage refuses a dataset that is not what its manifest says
    return manifest


def log_relabel(chain: Chain, stage: StageSpec, stage_dir: str, manifest: dict) -> None:
    spec = stage.labels
    log_distilled_dataset(storage.join(stage_dir, "data"), manifest, name=f"{stage.name}-crops")
    train = stage_train(chain.cfg.train, stage)
    mlflow.log_params({"stage": stage.name, "input_ms": stage.input_ms, "teacher_stage": stage.teacher or "",
                       "epochs": stage.epochs, "rows": manifest["rows"], "model": chain.cfg.model_for(stage.kind).name,
                       "label_mode": spec.mode, "crop_placement": chain.cfg.chain.crop_placement,
                       # the stage's recipe as it trained: its own settings from `stages:` included
                       "optimizer": train.optimizer, "lr": train.lr, "batch_size": train.batch_size,
                       "weight_decay": train.weight_decay, "keep": train.keep,
                       **({"teacher_view": spec.view, "pad_position": spec.pad_position,
                           "temperature": spec.temperature, "original_weight": spec.original_weight,
                           "min_confidence": spec.min_confidence}
                          if stage.teacher else {})})
    stats = manifest.get("label_stats", {})
    mlflow.log_metrics({"crops": manifest["crops"], "dropped_low_confidence": manifest["dropped_low_confidence"],
                        **{("label_" if k == "agreement" else "relabel_") + k: v for k, v in stats.items()}})
    if stage.teacher:
        chain.say(f"   relabel: {manifest['rows']} crops, teacher agrees with the clip label on "
                  f"{stats.get('agreement', float('nan')):.1%}"
                  + "".join(f", {k.replace('_', ' ')} {v:.1%}" for k, v in stats.items() if k != "agreement")
                  + (f"; {manifest['dropped_low_confidence']} dropped below confidence {spec.min_confidence}"
                     if spec.min_confidence else ""))


def train_step(chain: Chain, stage: StageSpec, stage_dir: str, rows: int, run_id: str) -> dict:
    cfg = chain.cfg
    network = cfg.model_for(stage.kind)
    spec = ModelSpec(model=network.name, options=network.options, labels=chain.labels, input_ms=stage.input_ms,
                     features=cfg.features.model_dump())
    crops = read_training_crops(stage_dir, chain.source_dir, source_sha256=chain.source["content_sha256"])
    data = StageData(crops, rows, chain.validation,
                     storage_dir=storage.join(stage_dir, "train"), model_dir=storage.join(stage_dir, "model"),
                     noise=chain.noise, rooms=chain.rooms)
    return train_stage(stage, spec, data, stage_train(cfg.train, stage), cfg.eval, chain.progress,
                       partial(report_epoch, chain.say, run_id, set()))


def report_epoch(say: Callable[[str], None], run_id: str, logged: set[int], m: dict) -> None:
    """One epoch's line on the console and its curves' points in the stage's run; ``logged``:
    the epochs this run has, so a restart fills in what a new run lacks and repeats nothing."""
    if "waiting_for" in m:  # the workers are not placed yet
        say(f"   waiting for resources: {m['waiting_for']}")
        return
    if "node_lost" in m:
        say(f"   {m['node_lost']}")
        return
    if m.get("resumed_at_epoch") is not None and m["resumed_at_epoch"] == m["epoch"]:
        say(f"   [{m['stage']}] restarted after a failure; continuing from the checkpoint of epoch "
            f"{m['epoch']} (of {m['epochs']})")
    say(f"   [{m['stage']}] epoch {m['epoch'] + 1}/{m['epochs']}  loss {m['train_loss']:.4f}  "
        + (f"val_acc(stream) {m['val_acc']:.4f}  " if "val_acc" in m else "")  # train.validate_every skips some
        + f"{m['epoch_seconds']:.1f}s"
        + (f"  averaged weights: val_acc {m['kept_val_acc']:.4f}" if "kept_val_acc" in m else ""))
    now = int(time.time() * 1000)
    points = [e for e in m.get("restored", []) if e["epoch"] not in logged] + [m]
    mlflow.MlflowClient().log_batch(run_id, metrics=[Metric(k, float(e[k]), now, e["epoch"])
                                                     for e in points for k in ("train_loss", "val_acc") if k in e])
    logged.update(e["epoch"] for e in points)


def evaluate_step(chain: Chain, stage: StageSpec, model_dir: str) -> dict:
    """Test metrics of the stage's model. With GPUs, a Ray task on a GPU; on CPUs, here in the
    driver, which already has the model code loaded (docs/design-notes.md: why)."""
    cfg = chain.cfg
    kwargs = dict(hop_samples=num_samples(cfg.eval.stream_hop_ms, stage.sample_rate), batch_size=cfg.eval.batch_size,
                  threads=int(cfg.train.cpus_per_worker))
    if cfg.train.use_gpu:
        metrics = ray.get(evaluate_task.options(num_cpus=cfg.train.cpus_per_worker, num_gpus=1).remote(
            model_dir, ray.put(chain.test), use_gpu=True, **kwargs))
    else:
        metrics = evaluate_model_dir(model_dir, chain.test[0], chain.test[1], **kwargs)
    if stage.kind == "teacher":  # does the teacher fit its own training clips? (its labels' ceiling)
        metrics["train_clip_agreement"] = train_clip_agreement(chain, model_dir)
    return metrics


def train_clip_agreement(chain: Chain, model_dir: str) -> float:
    """Share of the training clips on which a model (the teacher) gives the clip's own label,
    reading the whole clip (its best window when its input is shorter)."""
    import torch

    from distill.core.protocols import predict

    model, spec = load_model_dir(storage.local_copy(model_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(chain.cfg.train.cpus_per_worker)))
    correct = seen = 0
    try:  # a few thousand clips at a time: at Speech Commands' size the split whole would not fit
        for waves, labels in iter_split_arrays(chain.source_dir, "train"):
            pred = predict(model.eval(), waves, spec.input_samples, "window", batch_size=chain.cfg.eval.batch_size)
            correct, seen = correct + int((pred == labels).sum()), seen + len(labels)
    finally:
        torch.set_num_threads(threads)
    return correct / seen if seen else float("nan")


def log_step(chain: Chain, stage: StageSpec, model_dir: str, manifest: dict, summary: dict, metrics: dict,
             seconds: dict) -> dict:
    """Metrics, confusion matrices and the model to the stage's run; returns its summary row."""
    mlflow.log_dict({"labels": chain.labels, **metrics.pop("confusion")}, CONFUSION_ARTIFACT)
    mlflow.log_metrics({**metrics, "best_val_acc": summary["best_val_acc"], "best_epoch": summary["best_epoch"],
                        **seconds})
    local_model = storage.local_copy(model_dir)
    model, _ = load_model_dir(local_model)
    log_model(model, local_model, stage.input_samples)
    stats = manifest.get("label_stats", {})
    row = summary_row(stage.name, stage.method, stage.input_ms, stage.teacher,
                      {**metrics, **({"label_agreement": stats["agreement"]} if "agreement" in stats else {})},
                      mlflow.active_run().info.run_id)
    chain.say(f"   {stage.name}: test acc window {fmt(row['acc_window'], '.4f')}  stream {fmt(row['acc_stream'], '.4f')}  "
              f"center {fmt(row['acc_center'], '.4f')}  (relabel {seconds['relabel_seconds']:.0f}s, train "
              f"{seconds['train_seconds']:.0f}s, eval {seconds['eval_seconds']:.0f}s)")
    return row
