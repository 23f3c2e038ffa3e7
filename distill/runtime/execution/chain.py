"""``pld run``: the whole PLD chain on Ray, recorded in MLflow.

One stage through the files: ``run_chain`` (here) plans the chain with ``stages.plan_chain``,
writes the sealed source dataset (``runtime/execution/source.py``, Ray Data) and opens the chain's MLflow
run; then for each ``StageSpec``, ``runtime/execution/stage.py:run_stage`` relabels
(``runtime/execution/relabel.py`` with ``core/crops.py`` and ``core/labels.py``) → trains
(``runtime/execution/train.py`` with ``core/models.py`` and ``core/augment.py``) → evaluates
(``runtime/execution/evaluate.py`` with ``core/protocols.py`` and ``core/detection.py``) → logs
(``runtime/execution/tracking.py``) in a nested run. It ends with the summary table, printed and logged.

A chain survives its driver: every dataset is sealed (manifest with a content hash, written
last) and every finished stage leaves a record (``resume.py``). Run again — ``pld resume``,
or ``pld run`` with the same config — and finished stages are reused, sealed datasets that
match their source and teacher are reused, and the rest runs, inside the same parent run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

import mlflow
from ray.util.queue import Queue

from distill.config import ExperimentConfig
from distill.core.augment import NoiseBank, RoomBank
from distill.data.audio import load_recordings
from distill.data.base import build_source_index
from distill.data.check import describe
from distill.names import CONFIG_ARTIFACT, FINGERPRINT, KIND, QUARANTINE, RUN_CONFIG, RUN_DIR, STAGES, SUMMARY_ARTIFACT
from distill.runtime.infra import storage
from distill.runtime.infra.progress import heartbeat
from distill.runtime.execution.chain_eval import evaluate_held_out_parts
from distill.runtime.infra.errors import find_run, step
from distill.runtime.infra.manifest import config_fingerprint, is_sealed, seal, verify
from distill.runtime.infra.resume import claim_driver, find_unfinished_chain
from distill.runtime.execution.shared import source_identity
from distill.runtime.infra.session import Services, check_resources, init_ray, tracking_uri
from distill.runtime.execution.source import load_split_arrays, write_source_dataset
from distill.runtime.execution.stage import Chain, run_stage
from distill.runtime.execution.tracking import SUMMARY_COLUMNS, format_table, log_chain_headline, ui_link, use_experiment
from distill.stages import plan_chain


@dataclass
class ChainResult:
    parent_run_id: str
    run_dir: str  # a local directory or a storage URI
    rows: list[dict] = field(default_factory=list)
    model_dirs: dict[str, str] = field(default_factory=dict)  # stage -> its model (another chain's when shared)
    table: str = ""
    seconds: float = 0.0


def run_chain(cfg: ExperimentConfig, services: Services = Services(), *, say: Callable[[str], None] = print,
              resume_run_id: str | None = None, new: bool = False, tags: dict[str, str] | None = None,
              share_stages: bool = False) -> ChainResult:
    """Run (or resume) a chain with the MLflow store and Ray cluster of ``services``. ``tags`` are added to a new chain's run (``mlflow.parentRunId``
    among them nests it under another run, a sweep's). ``share_stages``: a stage that another
    chain in the same storage root finished from the same inputs is reused (runtime/execution/shared.py)."""
    started = time.perf_counter()
    index = build_source_index(cfg.data)  # bad data fails here, before a cluster or a run exists
    uri = tracking_uri(cfg, services.tracking)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    fingerprint = config_fingerprint(cfg.model_dump(mode="json"))
    resume_id = _parent_run(cfg, client, resume_run_id, new, fingerprint, say)
    use_experiment(cfg.tracking.experiment)  # a server that refuses these credentials stops the chain here
    t = time.perf_counter()
    init_ray(cfg, services.address, verbose=services.verbose)
    ray_start_s = time.perf_counter() - t  # logged below, beside source_seconds (benchmarks/throughput.py reads it)
    for note in check_resources(cfg):
        say(note)
    root = storage.StorageRoot.of(cfg.storage.root)
    root.check_writable()  # before any stage; after the resource check, which writes nothing
    plan = plan_chain(cfg)
    run_args = dict(run_id=resume_id) if resume_id else dict(
        run_name=cfg.name, tags={KIND: "chain", FINGERPRINT: fingerprint, **(tags or {})})
    with mlflow.start_run(**run_args) as parent:
        run_dir = _open_run_dir(cfg, root, parent, resume_id, plan)
        mlflow.log_metric("ray_start_seconds", ray_start_s)
        counts = index.clips["split"].value_counts()
        say(f"dataset {cfg.data.name} at {cfg.data.path}: {len(index.labels)} classes, "
            + ", ".join(f"{s} {counts.get(s, 0)}" for s in ("train", "validation", "test")) + " clips")
        say(f"MLflow: {uri} (experiment {cfg.tracking.experiment!r}, chain run {parent.info.run_id})")
        source_dir = storage.join(run_dir, "source")
        with step("source", "decode", storage_root=root, chain_run_id=parent.info.run_id), \
                heartbeat(say, "source decode"):
            source = _source(index, cfg, source_dir, say)
        chain = Chain(cfg, client, parent.info.run_id, parent.info.experiment_id, run_dir,
                      source=source, labels=index.labels,
                      validation=load_split_arrays(source_dir, "validation"), test=load_split_arrays(source_dir, "test"),
                      noise=noise_bank(index, cfg, say), progress=progress_queue(), say=say,
                      resuming=bool(resume_id), root=root, rooms=room_bank(cfg, say), share=share_stages,
                      source_id=source_identity(index) if share_stages else "")
        result = ChainResult(parent.info.run_id, run_dir)
        for i, stage in enumerate(plan, start=1):  # (a step's own errors say which step; this catches the rest)
            with step(stage.name, "its MLflow run", storage_root=root, chain_run_id=parent.info.run_id):
                result.rows.append(run_stage(chain, stage, f"{i}/{len(plan)}"))
        result.model_dirs = {name: teacher.model_dir for name, teacher in chain.models.items()}
        with step("held-out parts", "evaluate", storage_root=root, chain_run_id=parent.info.run_id), \
                heartbeat(say, "held-out parts"):
            held_out = evaluate_held_out_parts(cfg, result.model_dirs, {r["stage"]: r["run_id"] for r in result.rows},
                                               index.labels, say)
        result.table = _log_summary(cfg, result, held_out,
                                    index.clips.loc[index.clips["split"] == "test", "clip_id"].astype(str).tolist())
        result.seconds = time.perf_counter() - started
        # a resumed chain's wall time is split over sessions: keep the first session's figure intact
        mlflow.log_metric("resumed_session_seconds" if resume_id else "chain_seconds", result.seconds)
    say("\n" + result.table)
    say(f"chain run id: {result.parent_run_id}   ({result.seconds:.0f} s; outputs in {run_dir})")
    say(f"in the MLflow UI: {ui_link(uri, parent.info.experiment_id, result.parent_run_id)}")
    return result


def _log_summary(cfg: ExperimentConfig, result: ChainResult, held_out: list[dict], test_clip_ids: list[str]) -> str:
    """The summary table (and the held-out parts' accuracies) onto the chain run, with its
    headline metrics; returns the table as the console shows it."""
    columns = list(held_out[0]) if held_out else []
    table = format_table(result.rows, SUMMARY_COLUMNS) + (
        f"\n\nheld-out parts of the corpus, stream accuracy:\n{format_table(held_out, columns)}" if held_out else "")
    summary_md = (f"# PLD chain {cfg.name}\n\nparent run `{result.parent_run_id}`\n\n"
                  + format_table(result.rows, SUMMARY_COLUMNS, markdown=True)
                  + (f"\n\nHeld-out parts of the corpus, stream accuracy:\n\n"
                     f"{format_table(held_out, columns, markdown=True)}\n" if held_out else ""))
    mlflow.log_text(summary_md, SUMMARY_ARTIFACT)
    log_chain_headline(summary_md, result.rows, str(cfg.data.path), cfg.data.name, test_clip_ids)
    return table


def _open_run_dir(cfg: ExperimentConfig, root: storage.StorageRoot, parent, resume_id: str | None, plan) -> str:
    """The chain's run directory: a resumed chain's own, or a new one recorded in its run."""
    if resume_id:
        run_dir = parent.data.tags[RUN_DIR]
    else:
        run_dir = root.join(f"{cfg.name}-{parent.info.run_id}")
        mlflow.log_params(cfg.flat_params())
        mlflow.log_dict(cfg.model_dump(mode="json"), CONFIG_ARTIFACT)
        mlflow.set_tags({RUN_DIR: str(run_dir), STAGES: ",".join(s.name for s in plan)})
    claim_driver(run_dir, parent.info.run_id)
    storage.write_text(storage.join(run_dir, RUN_CONFIG), json.dumps(cfg.model_dump(mode="json"), indent=2))
    return run_dir


def _source(index, cfg: ExperimentConfig, source_dir: str, say: Callable[[str], None]) -> dict:
    """The sealed source dataset: reused when a resumed chain already has it intact."""
    if is_sealed(source_dir):
        manifest = verify(source_dir)
        say(f"source: reused ({sum(manifest['rows'].values())} clips, sealed {manifest['content_sha256'][:12]}…)")
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
    say("source: " + describe(source["rows"], source["files"], source["quarantine_reasons"], source["policy_applied"])
        + (f" — quarantined files listed in {storage.join(source_dir, QUARANTINE)}" if source["quarantined"] else ""))
    return source


def noise_bank(index, cfg: ExperimentConfig, say: Callable[[str], None]) -> NoiseBank | None:
    """The background noise training mixes in: the dataset's recordings, else generated noise."""
    if not cfg.train.augment.mixes_noise:
        return None
    recordings, skipped = load_recordings(index.noise_files, cfg.data.sample_rate)
    for path, reason in skipped.items():
        say(f"augment: skipped noise file {path}: {reason}")
    if recordings:
        say(f"augment: {len(recordings)} background-noise recordings "
            f"({sum(map(len, recordings)) / cfg.data.sample_rate:.0f} s)" + (f", {len(skipped)} skipped" if skipped else ""))
        return NoiseBank.from_arrays(recordings)
    say("augment: the dataset has no background-noise recordings; mixing generated white and pink noise")
    return NoiseBank.generated(cfg.seed, 10 * cfg.data.sample_rate)


def room_bank(cfg: ExperimentConfig, say: Callable[[str], None]) -> RoomBank | None:
    """The simulated rooms whose responses training convolves in (None: no reverberation)."""
    augment = cfg.train.augment
    if not augment.reverberates:
        return None
    t = time.perf_counter()
    rooms = RoomBank.generated(cfg.seed, augment.reverb_rooms, cfg.data.sample_rate, augment.reverb_rt60_range)
    say(f"augment: {augment.reverb_rooms} simulated rooms, RT60 {augment.reverb_rt60_range[0]:g}-"
        f"{augment.reverb_rt60_range[1]:g} s ({time.perf_counter() - t:.0f} s)")
    return rooms


def progress_queue() -> Queue:
    """The queue the training workers report epochs through, on the driver's own node: on any
    other, losing that node would take the chain's progress (and the chain) with it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})


def _parent_run(cfg: ExperimentConfig, client: mlflow.MlflowClient, resume_run_id: str | None, new: bool,
                fingerprint: str, say: Callable[[str], None]) -> str | None:
    """The chain run to continue, or None for a new one."""
    if resume_run_id:
        run = find_run(client, resume_run_id)
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
        say(f"resuming unfinished chain {found} (same config, fingerprint {fingerprint}); pass --new to start over")
    return found
