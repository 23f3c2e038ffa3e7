"""``pld run``: the whole PLD chain on Ray, recorded in MLflow.

source dataset (Ray Data) → for each stage of the plan: relabel crops with the previous
stage's model (Ray Data) → train (Ray Train) → evaluate on the test split → log to a nested
MLflow run. Ends with the summary table, printed and logged.

A chain survives its driver: every dataset is sealed (manifest with a content hash, written
last) and every finished stage leaves a record (``resume.py``). Run again — ``pld resume``,
or ``pld run`` with the same config — and finished stages are reused, sealed datasets that
match their source and teacher are reused, and the rest runs, inside the same parent run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import mlflow
import ray
from mlflow.entities import Metric
from ray.util.queue import Queue

from distill.augment import NoiseBank
from distill.checkpoint import ModelSpec, load_model_dir
from distill.config import ExperimentConfig
from distill.data.audio import load_recordings
from distill.data.base import SILENCE, build_source_index
from distill.data.check import describe
from distill.features import num_samples
from distill.runtime import storage
from distill.runtime.evaluate import evaluate_model_dir, evaluate_task
from distill.runtime.manifest import config_fingerprint, is_sealed, seal, tree_sha256, verify
from distill.runtime.relabel import TeacherView, relabel_crops
from distill.runtime.resume import (FINGERPRINT, claim_driver, find_unfinished_chain, finished_stage,
                                    retire_unfinished_runs, write_record)
from distill.runtime.session import check_resources, init_ray, tracking_uri
from distill.runtime.source import QUARANTINE, load_split_arrays, write_source_dataset
from distill.runtime.tracking import KIND, format_table, log_distilled_dataset, log_model, stage_tags
from distill.runtime.train import train_stage
from distill.stages import crops_per_clip, plan_chain

SUMMARY_COLUMNS = ["stage", "method", "input_ms", "teacher", "acc_window", "acc_stream", "acc_center", "agreement",
                   "fa_per_h@90%", "recall@1fa/h", "macs", "latency_us"]


@dataclass
class ChainResult:
    parent_run_id: str
    run_dir: str  # a local directory or a storage URI
    rows: list[dict] = field(default_factory=list)
    table: str = ""
    seconds: float = 0.0


def _report_epoch(out: Callable[[str], None], run_id: str, m: dict) -> None:
    if m.get("resumed_at_epoch") is not None and m["resumed_at_epoch"] == m["epoch"]:
        out(f"   [{m['stage']}] workers restarted after a failure; continuing from the checkpoint of epoch "
            f"{m['epoch']} (of {m['epochs']})")
    out(f"   [{m['stage']}] epoch {m['epoch'] + 1}/{m['epochs']}  loss {m['train_loss']:.4f}  "
        f"val_acc(stream) {m['val_acc']:.4f}  {m['epoch_seconds']:.1f}s")
    mlflow.MlflowClient().log_batch(run_id, metrics=[Metric(k, float(m[k]), int(time.time() * 1000), m["epoch"])
                                                     for k in ("train_loss", "val_acc")])


def evaluate(cfg: ExperimentConfig, model_dir: str, test, hop_samples: int, silence_index: int | None) -> dict:
    """Test metrics of a stage's model. With GPUs, a Ray task on a GPU; on CPUs, here in the
    driver, which already has the model code loaded (a task pays a fresh worker process each
    stage: 6-9 s measured on 2 cores, more than the evaluation itself)."""
    kwargs = dict(hop_samples=hop_samples, silence_index=silence_index, batch_size=cfg.eval.batch_size,
                  threads=int(cfg.train.cpus_per_worker))
    if cfg.train.use_gpu:
        return ray.get(evaluate_task.options(num_cpus=cfg.train.cpus_per_worker, num_gpus=1).remote(
            model_dir, ray.put(test), use_gpu=True, **kwargs))
    return evaluate_model_dir(model_dir, test[0], test[1], **kwargs)


def train_clip_agreement(model_dir: str, source_dir: str, cfg: ExperimentConfig) -> float:
    """Share of the training clips on which a model (the teacher) gives the clip's own label,
    reading the whole clip (its best window when its input is shorter)."""
    import torch

    from distill.protocols import predict

    model, spec = load_model_dir(storage.local_copy(model_dir))
    waves, labels = load_split_arrays(source_dir, "train")
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    try:
        pred = predict(model.eval(), waves, spec.input_samples, "window", batch_size=cfg.eval.batch_size)
    finally:
        torch.set_num_threads(threads)
    return float((pred == labels).mean()) if len(labels) else float("nan")


def _source(index, cfg: ExperimentConfig, source_dir: str, out: Callable[[str], None]) -> dict:
    """The sealed source dataset: reused when a resumed chain already has it intact."""
    if is_sealed(source_dir):
        manifest = verify(source_dir)
        out(f"source: reused ({sum(manifest['rows'].values())} clips, sealed {manifest['content_sha256'][:12]}…)")
        return manifest
    t = time.perf_counter()
    try:
        source = write_source_dataset(index, cfg.data, source_dir)
    finally:  # also when too many files were bad: the table says which and why
        if storage.is_file(storage.join(source_dir, QUARANTINE)):
            mlflow.log_text(storage.read_text(storage.join(source_dir, QUARANTINE)), QUARANTINE)
    source = seal(source_dir, source)
    mlflow.log_metrics({"source_seconds": time.perf_counter() - t, "source_files": source["files"],
                        "source_quarantined": source["quarantined"],
                        **{f"source_{k}": v for k, v in source["policy_applied"].items()}})
    out("source: " + describe(source["rows"], source["files"], source["quarantine_reasons"], source["policy_applied"])
        + (f" — quarantined files listed in {storage.join(source_dir, QUARANTINE)}" if source["quarantined"] else ""))
    return source


def noise_bank(index, cfg: ExperimentConfig, out: Callable[[str], None]) -> NoiseBank | None:
    """The background noise training mixes in: the dataset's recordings, else generated noise."""
    if not cfg.train.augment.mixes_noise:
        return None
    recordings, skipped = load_recordings(index.noise_files, cfg.data.sample_rate)
    for path, reason in skipped.items():
        out(f"augment: skipped noise file {path}: {reason}")
    if recordings:
        out(f"augment: {len(recordings)} background-noise recordings "
            f"({sum(map(len, recordings)) / cfg.data.sample_rate:.0f} s)" + (f", {len(skipped)} skipped" if skipped else ""))
        return NoiseBank.from_arrays(recordings)
    out("augment: the dataset has no background-noise recordings; mixing generated white and pink noise")
    return NoiseBank.generated(cfg.seed, 10 * cfg.data.sample_rate)


def _parent_run(cfg: ExperimentConfig, client: mlflow.MlflowClient, resume_run_id: str | None, new: bool,
                fingerprint: str, out: Callable[[str], None]) -> str | None:
    """The chain run to continue, or None for a new one."""
    if resume_run_id:
        try:
            run = client.get_run(resume_run_id)
        except mlflow.exceptions.MlflowException:
            raise ValueError(f"run {resume_run_id!r} not found in {mlflow.get_tracking_uri()}") from None
        if run.data.tags.get(KIND) != "chain":
            raise ValueError(f"run {resume_run_id} is not a PLD chain run (pld.kind={run.data.tags.get(KIND)!r})")
        if run.data.tags.get(FINGERPRINT) != fingerprint:
            raise ValueError(f"run {resume_run_id} was made with another config (fingerprint "
                             f"{run.data.tags.get(FINGERPRINT)} ≠ {fingerprint}); start a new chain instead")
        return resume_run_id
    if new:
        return None
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    found = find_unfinished_chain(client, experiment.experiment_id, fingerprint) if experiment else None
    if found:
        out(f"resuming unfinished chain {found} (same config, fingerprint {fingerprint}); pass --new to start over")
    return found


def run_chain(cfg: ExperimentConfig, *, tracking: str | None = None, address: str | None = None,
              out: Callable[[str], None] = print, verbose: bool = False, resume_run_id: str | None = None,
              new: bool = False, parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None
              ) -> ChainResult:
    """Run (or resume) a chain. ``parent_run_id`` nests a new chain's run under another run (a
    sweep's); ``extra_tags`` are added to it."""
    started = time.perf_counter()
    index = build_source_index(cfg.data)  # bad data fails here, before a cluster or a run exists
    uri = tracking_uri(cfg, tracking)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    fingerprint = config_fingerprint(cfg.model_dump(mode="json"))
    resume_id = _parent_run(cfg, client, resume_run_id, new, fingerprint, out)
    t = time.perf_counter()
    init_ray(cfg, address, verbose=verbose)
    ray_start_s = time.perf_counter() - t  # logged below, beside source_seconds (benchmarks/throughput.py reads it)
    check_resources(cfg)
    storage.check_writable(cfg.storage.root)  # before any stage; after the resource check, which writes nothing
    mlflow.set_experiment(cfg.tracking.experiment)
    plan = plan_chain(cfg)
    labels = index.labels
    silence_index = labels.index(SILENCE) if SILENCE in labels else None
    sr = cfg.data.sample_rate
    hop_samples = num_samples(cfg.eval.stream_hop_ms, sr)

    tags = {KIND: "chain", FINGERPRINT: fingerprint, **(extra_tags or {})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run_args = dict(run_id=resume_id) if resume_id else dict(run_name=cfg.name, tags=tags)
    with mlflow.start_run(**run_args) as parent:
        if resume_id:
            run_dir = parent.data.tags["pld.run_dir"]
        else:
            run_dir = storage.join(storage.resolve(cfg.storage.root), f"{cfg.name}-{parent.info.run_id}")
            mlflow.log_params(cfg.flat_params())
            mlflow.log_dict(cfg.model_dump(mode="json"), "config.yaml")
            mlflow.set_tags({"pld.run_dir": str(run_dir), "pld.stages": ",".join(s.name for s in plan)})
        claim_driver(run_dir, parent.info.run_id)
        storage.write_text(storage.join(run_dir, "config.json"), json.dumps(cfg.model_dump(mode="json"), indent=2))
        mlflow.log_metric("ray_start_seconds", ray_start_s)
        counts = index.clips["split"].value_counts()
        out(f"dataset {cfg.data.name} at {cfg.data.path}: {len(labels)} classes, "
            + ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "validation", "test")) + " clips")
        out(f"MLflow: {uri} (experiment {cfg.tracking.experiment!r}, chain run {parent.info.run_id})")
        source_dir = storage.join(run_dir, "source")
        source = _source(index, cfg, source_dir, out)
        test = load_split_arrays(source_dir, "test")
        validation = load_split_arrays(source_dir, "validation")

        noise = noise_bank(index, cfg, out)
        progress = Queue(actor_options={"num_cpus": 0})
        models: dict[str, tuple[str, str]] = {}  # stage name → (model dir, MLflow run id)
        result = ChainResult(parent.info.run_id, run_dir)
        for i, stage in enumerate(plan, start=1):
            teacher_dir, teacher_run = models[stage.teacher] if stage.teacher else (None, "")
            stage_dir = storage.join(run_dir, "stages", stage.name)
            model_dir = storage.join(stage_dir, "model")
            record = finished_stage(stage_dir, client) if resume_id else None
            if record:
                out(f"== [{i}/{len(plan)}] {stage.name}: finished earlier (run {record['run_id']}), reused")
                models[stage.name] = (record["model_dir"], record["run_id"])
                result.rows.append(record["row"])
                continue
            if resume_id:
                retire_unfinished_runs(client, parent.info.run_id, parent.info.experiment_id, stage.name)
            with mlflow.start_run(run_name=stage.name, nested=True, tags=stage_tags(stage, teacher_run)) as run:
                out(f"== [{i}/{len(plan)}] {stage.name}: {stage.input_ms} ms, labels from "
                    f"{stage.teacher or 'the clips'} ({stage.epochs} epochs)")
                crop_samples = num_samples(stage.input_ms, sr)
                whole = crop_samples == source["clip_samples"]
                sliding = cfg.chain.crop_placement == "sliding" and not whole
                view = TeacherView(cfg.chain.teacher_view, cfg.chain.pad_position, cfg.seed, cfg.labels.min_confidence)
                # what this stage's dataset must have been made from
                expect = {"crop_samples": crop_samples, "seed": cfg.seed,
                          "placement": "whole" if whole else cfg.chain.crop_placement,
                          "teacher_run_id": teacher_run, "source_sha256": source["content_sha256"],
                          "teacher_checkpoint_sha256": tree_sha256(teacher_dir) if teacher_dir else "",
                          **({"stride_samples": num_samples(cfg.chain.crop_stride_ms, sr)} if sliding
                             else {"crops_per_clip": crops_per_clip(cfg, stage.input_ms)}),
                          **({"teacher_view": {"mode": view.mode, "pad_position": view.pad_position},
                              "min_confidence": view.min_confidence, "temperature": cfg.labels.temperature}
                             if teacher_dir else {})}
                t = time.perf_counter()
                manifest = None
                if resume_id and is_sealed(stage_dir):
                    try:
                        manifest = verify(stage_dir, expect)
                        out(f"   relabel: reused the sealed dataset ({manifest['rows']} rows)")
                    except ValueError as exc:
                        out(f"   relabel: not reusing the earlier dataset: {exc}")
                if manifest is None:
                    manifest = relabel_crops(
                        source_dir, stage_dir, crop_samples=crop_samples, crops_per_clip=cfg.chain.crops_per_clip,
                        seed=cfg.seed, n_classes=len(labels), teacher_dir=teacher_dir, teacher_run_id=teacher_run,
                        temperature=cfg.labels.temperature, batch_size=cfg.relabel.batch_size,
                        actors=cfg.relabel.actors, cpus_per_actor=cfg.relabel.cpus_per_actor,
                        gpus_per_actor=cfg.relabel.gpus_per_actor, precision=cfg.relabel.precision,
                        stride_samples=expect.get("stride_samples"), view=view, labels=labels)
                    manifest = seal(stage_dir, manifest, source_sha256=expect["source_sha256"],
                                    teacher_checkpoint_sha256=expect["teacher_checkpoint_sha256"])
                relabel_s = time.perf_counter() - t
                log_distilled_dataset(storage.join(stage_dir, "data"), manifest, name=f"{stage.name}-crops")
                mlflow.log_params({"stage": stage.name, "input_ms": stage.input_ms, "teacher_stage": stage.teacher or "",
                                   "epochs": stage.epochs, "rows": manifest["rows"], "model": cfg.model.name,
                                   "label_mode": cfg.labels.mode if stage.teacher else "hard",
                                   "crop_placement": cfg.chain.crop_placement,
                                   **({"teacher_view": view.mode, "pad_position": view.pad_position,
                                       "original_weight": cfg.labels.original_weight,
                                       "min_confidence": view.min_confidence} if stage.teacher else {})})
                stats = manifest.get("label_stats", {})
                mlflow.log_metrics({"crops": manifest["crops"], "dropped_low_confidence": manifest["dropped_low_confidence"],
                                    **{("label_" if k == "agreement" else "relabel_") + k: v for k, v in stats.items()}})
                if stage.teacher:
                    out(f"   relabel: {manifest['rows']} crops, teacher agrees with the clip label on "
                        f"{stats.get('agreement', float('nan')):.1%}"
                        + "".join(f", {k.replace('_', ' ')} {v:.1%}" for k, v in stats.items() if k != "agreement")
                        + (f"; {manifest['dropped_low_confidence']} dropped below confidence {view.min_confidence}"
                           if view.min_confidence else ""))
                spec = ModelSpec(model=cfg.model.name, options=cfg.model.options, labels=labels, input_ms=stage.input_ms,
                                 features=cfg.features.model_dump())
                verify(stage_dir, expect)  # the stage refuses a dataset that is not what its manifest says
                summary = train_stage(
                    stage=stage.name, spec=spec, train_ds=ray.data.read_parquet(storage.join(stage_dir, "data")),
                    validation=validation, rows=manifest["rows"], storage_dir=storage.join(stage_dir, "train"),
                    out_model_dir=model_dir, epochs=stage.epochs, batch_size=cfg.train.batch_size,
                    lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                    # clip labels are one-hot: the hard loss is their exact counterpart
                    label_mode=cfg.labels.mode if stage.teacher else "hard", temperature=cfg.labels.temperature,
                    seed=cfg.seed, num_workers=cfg.train.num_workers, use_gpu=cfg.train.use_gpu,
                    cpus_per_worker=cfg.train.cpus_per_worker, input_samples=crop_samples, hop_samples=hop_samples,
                    silence_index=silence_index, eval_batch_size=cfg.eval.batch_size, progress=progress,
                    on_epoch=partial(_report_epoch, out, run.info.run_id), max_failures=cfg.train.max_failures,
                    precision=cfg.train.precision, original_weight=cfg.labels.original_weight if stage.teacher else 0.0,
                    optimizer=cfg.train.optimizer, momentum=cfg.train.momentum,
                    augment=cfg.train.augment.model_dump(), noise=noise)
                t = time.perf_counter()
                metrics = evaluate(cfg, model_dir, test, hop_samples, silence_index)
                if stage.kind == "teacher":  # does the teacher fit its own training clips? (its labels' ceiling)
                    metrics["train_clip_agreement"] = train_clip_agreement(model_dir, source_dir, cfg)
                mlflow.log_dict({"labels": labels, **metrics.pop("confusion")}, "eval/confusion.json")
                eval_s = time.perf_counter() - t
                mlflow.log_metrics({**metrics, "best_val_acc": summary["best_val_acc"], "best_epoch": summary["best_epoch"],
                                    "relabel_seconds": relabel_s, "train_seconds": summary["seconds"], "eval_seconds": eval_s})
                local_model = storage.local_copy(model_dir)
                model, _ = load_model_dir(local_model)
                log_model(model, local_model, crop_samples)
                models[stage.name] = (model_dir, run.info.run_id)
                row = {"stage": stage.name, "method": stage.method, "input_ms": stage.input_ms,
                       "teacher": stage.teacher or "-", "macs": metrics["macs"], "run_id": run.info.run_id,
                       "agreement": f"{stats['agreement']:.3f}" if stage.teacher and "agreement" in stats
                       else f"{metrics['train_clip_agreement']:.3f}" if "train_clip_agreement" in metrics else "-",
                       "latency_us": f"{metrics['latency_us']:.0f}",
                       "fa_per_h@90%": f"{metrics['test_fa_per_hour_at_90_recall']:.0f}"
                       if "test_fa_per_hour_at_90_recall" in metrics else "-",
                       "recall@1fa/h": f"{metrics['test_recall_at_1_fa_per_hour']:.3f}"
                       if "test_recall_at_1_fa_per_hour" in metrics else "-"}
                row.update({f"acc_{p}": f"{metrics[f'test_acc_{p}']:.4f}" for p in ("window", "stream", "center")})
                result.rows.append(row)
                out(f"   {stage.name}: test acc window {row['acc_window']}  stream {row['acc_stream']}  "
                    f"center {row['acc_center']}  (relabel {relabel_s:.0f}s, train {summary['seconds']:.0f}s, "
                    f"eval {eval_s:.0f}s)")
            write_record(stage_dir, run.info.run_id, row, model_dir)  # after the run is FINISHED
        result.table = format_table(result.rows, SUMMARY_COLUMNS)
        mlflow.log_text(f"# PLD chain {cfg.name}\n\nparent run `{parent.info.run_id}`\n\n"
                        + format_table(result.rows, SUMMARY_COLUMNS, markdown=True), "summary.md")
        result.seconds = time.perf_counter() - started
        # a resumed chain's wall time is split over sessions: keep the first session's figure intact
        mlflow.log_metric("resumed_session_seconds" if resume_id else "chain_seconds", result.seconds)
    out("\n" + result.table)
    out(f"chain run id: {result.parent_run_id}   ({result.seconds:.0f} s; outputs in {run_dir})")
    return result
