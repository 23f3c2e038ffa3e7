"""``pld study STUDY.yaml``: every cell × seed of a study run as an ordinary chain, one record each.

For each (cell, seed), in the study's order: if ``records_dir`` already holds its record with
the cell's resolved config (records.same_config), the run is reused, never retrained. Otherwise
its chain runs through the platform (``runtime/execution/chain.py:run_chain``: Ray, MLflow; a chain
left unfinished by a stopped study is resumed there), its MLflow chain run tagged with the
study, cell and seed; then every stage's model predicts every clip of the chain's test split
and of each of the study's ``eval:`` sets, under every protocol, and the record (metrics and
label statistics from the stage runs, per-epoch validation curves, predictions per clip) is
written at once. A stopped study loses only the chain in flight. Chains share stages
(``runtime/execution/shared.py``): a teacher or baseline whose inputs another cell already trained from,
in the same storage root, is reused, not trained again.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distill.config import ExperimentConfig
from distill.names import KIND, REUSED_FROM
from distill.study.records import (TEST, CellRecord, RecordError, cell_fingerprint, read_record, record_path,
                                   same_config, write_record)
from distill.study.spec import Cell, Study
from distill.study.word_share import stage_share_table, word_bounds

# MLflow tags of a study's chain runs (docs/mlflow.md's pld.* namespace)
STUDY_TAG = "pld.study"
CELL_TAG = "pld.study.cell"
SEED_TAG = "pld.study.seed"

# stage-run metrics that describe the stage's relabelled dataset, not its model: record key
LABEL_METRICS = {"label_agreement": "agreement", "relabel_to_silence": "to_silence", "relabel_to_unknown": "to_unknown",
                 "crops": "crops", "dropped_low_confidence": "dropped_low_confidence"}
# per-epoch curves and timings: not results
NOT_STAGE_METRICS = ("train_loss", "val_acc")


@dataclass
class StudySummary:
    reused: list[tuple[str, int]] = field(default_factory=list)
    ran: list[tuple[str, int]] = field(default_factory=list)
    chain_runs: dict[tuple[str, int], str] = field(default_factory=dict)  # (cell, seed) -> chain run id
    stopped: bool = False  # stop_after ended the study before every run was done
    records_dir: str = ""
    study_run_id: str = ""  # the study's own MLflow run

    @property
    def remaining(self) -> int:
        return self._total - len(self.reused) - len(self.ran)

    _total: int = 0


def git_state(where: str | Path | None = None) -> tuple[str, bool]:
    """(commit, dirty) of the checkout holding ``where`` (default: this package); ("unknown",
    False) outside a checkout or without git."""
    where = Path(where) if where else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=30)
        if commit.returncode != 0:
            return "unknown", False
        # dirty: a tracked file differs from the commit (untracked files, such as a data link, are not code)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                                capture_output=True, text=True, timeout=60)
        return commit.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else False
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def existing_record(records_dir: str | Path, cell: Cell, seed: int, cfg: ExperimentConfig,
                    say: Callable[[str], None]) -> CellRecord | None:
    """The run's record if it holds this very resolved config; a stale or unreadable one is said
    and run again (its file is replaced when the new record is written)."""
    path = record_path(records_dir, cell.id, seed)
    if not path.is_file():
        return None
    try:
        record = read_record(path)
    except RecordError as exc:
        say(f"study: {exc}; running it again")
        return None
    if not same_config(record.resolved_config, cfg):
        say(f"study: {path} was made with another config (fingerprint {record.fingerprint} ≠ "
            f"{cell_fingerprint(cfg)}); running it again")
        return None
    return record


def run_study(study: Study, *, records_dir: str | Path, tracking: str | None = None, address: str | None = None,
              say: Callable[[str], None] = print, stop_after: int | None = None,
              verbose: bool = False) -> StudySummary:
    """Run every cell × seed not already recorded; ``stop_after``: stop after that many new chains."""
    records_dir = Path(records_dir)
    commit, dirty = git_state()
    todo = [(cell, seed) for cell in study.cells() for seed in study.seeds]
    summary = StudySummary(records_dir=str(records_dir), _total=len(todo))
    eval_cache: dict = {}
    parent = study_run(study, tracking) if todo else None
    for i, (cell, seed) in enumerate(todo, start=1):
        cfg = study.resolved(cell, seed)
        fingerprint = cell_fingerprint(cfg)
        where = f"[{i}/{len(todo)}] {cell.id} seed {seed}"
        if existing_record(records_dir, cell, seed, cfg, say) is not None:
            say(f"study {study.name}: {where}: reused (record {record_path(records_dir, cell.id, seed)})")
            summary.reused.append((cell.id, seed))
            continue
        if stop_after is not None and len(summary.ran) >= stop_after:
            summary.stopped = True
            say(f"study {study.name}: stopped after {len(summary.ran)} new chain(s); "
                f"{summary.remaining} run(s) left (run the study again to continue)")
            break
        say(f"study {study.name}: {where}: running chain {cfg.name} (fingerprint {fingerprint})")
        t = time.perf_counter()
        from distill.runtime.execution.chain import run_chain
        from distill.runtime.infra.session import Services

        result = run_chain(cfg, Services(tracking, address, verbose), say=say,
                           tags={STUDY_TAG: study.name, CELL_TAG: cell.id, SEED_TAG: str(seed),
                                 "mlflow.parentRunId": parent}, share_stages=True)
        record = chain_record(study, cell, cfg, result, commit=commit, dirty=dirty, say=say,
                              eval_cache=eval_cache)
        path = write_record(records_dir, record)
        summary.ran.append((cell.id, seed))
        summary.chain_runs[(cell.id, seed)] = result.parent_run_id
        say(f"study {study.name}: {where}: recorded {path} ({time.perf_counter() - t:.0f} s)")
    else:
        say(f"study {study.name}: all {len(todo)} run(s) recorded ({len(summary.ran)} new, "
            f"{len(summary.reused)} reused) in {records_dir}")
    if parent is not None:
        summary.study_run_id = parent
        logged = log_contrasts(study, records_dir, parent)
        say(f"study {study.name}: MLflow run {parent} holds its chains and {logged} contrast metric(s)")
    return summary


def study_run(study: Study, tracking: str | None) -> str:
    """The study's own MLflow run, found again when the study continues: its chains nest under
    it, and its contrasts are logged to it, so the MLflow UI shows a study as one row."""
    import mlflow

    from distill.runtime.infra.session import tracking_uri
    from distill.runtime.execution.tracking import use_experiment

    cfg = study.resolved(study.cells()[0], study.seeds[0])
    mlflow.set_tracking_uri(tracking_uri(cfg, tracking))
    use_experiment(cfg.tracking.experiment)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    found = client.search_runs([experiment.experiment_id], f"tags.`{KIND}` = 'study' and tags.`{STUDY_TAG}` = "
                               f"'{study.name}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment.experiment_id, run_name=f"study {study.name}",
                            tags={KIND: "study", STUDY_TAG: study.name})
    client.set_terminated(run.info.run_id)  # its progress is in the records; chains log under it
    return run.info.run_id


def contrast_metric(contrast: str, cell: str, eval_set: str, protocol: str) -> str:
    """A contrast's MLflow metric name: MLflow allows letters, digits and ``_ - . / : space``."""
    name = f"{contrast}/{cell}/{eval_set}/{protocol}".replace("=", "-").replace(",", ".").replace("@", "_")
    return re.sub(r"[^\w.\- :/]", "_", name)


def log_contrasts(study: Study, records_dir: str | Path, run_id: str) -> int:
    """Each contrast's paired mean and its 95 % half-width (``…/ci95``) on the study's run, from
    the records as they stand, to the tracking store ``study_run`` chose; returns how many
    metrics were logged."""
    import mlflow
    from mlflow.entities import Metric

    from distill.study.records import read_records
    from distill.study.report import compute

    records = read_records(records_dir)
    if not records:
        return 0
    stamp = int(time.time() * 1000)
    metrics = []
    for c in compute(study, records, n_boot=200)["contrasts"]:
        name = contrast_metric(c["contrast"], c["cell"], c["eval"], c["protocol"])
        for key, value in ((name, c["mean"]), (f"{name}/ci95", c["ci95"])):
            if value is not None:
                metrics.append(Metric(key, value, stamp, 0))
    client = mlflow.MlflowClient()
    for i in range(0, len(metrics), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    return len(metrics)


def chain_record(study: Study, cell: Cell, cfg: ExperimentConfig, result, *, commit: str, dirty: bool,
                 say: Callable[[str], None] = print, eval_cache: dict | None = None) -> CellRecord:
    """The record of a finished chain (``result``, a ``ChainResult``; its seed is ``cfg.seed``):
    its stages' metrics and label statistics from their MLflow runs, and every stage's per-clip
    predictions on the test split and the study's eval sets."""
    from distill.core.checkpoint import load_model_dir
    from distill.runtime.infra import storage
    from distill.stages import plan_chain

    plan = plan_chain(cfg)
    _, spec = load_model_dir(storage.local_copy(result.model_dirs[plan[0].name]))
    labels = list(spec.labels)
    stages = stage_entries(cfg, plan, result)
    sets = eval_clips(study, cfg, result, labels, eval_cache if eval_cache is not None else {}, say)
    evals = {name: predict_clips(cfg, plan, result.model_dirs, name, clips, say) for name, clips in sets.items()}
    return CellRecord(study=study.name, cell_id=cell.id, levels=dict(cell.levels), seed=cfg.seed,
                      fingerprint=cell_fingerprint(cfg), commit=commit, dirty=dirty,
                      resolved_config=cfg.model_dump(mode="json"), labels=labels, stages=stages, evals=evals)


def stage_entries(cfg: ExperimentConfig, plan: list, result) -> list[dict]:
    """Per stage of the chain: its metrics, label statistics and curves from its MLflow run, and
    its labels against the share of the word each crop holds (a synthesized corpus only)."""
    import mlflow

    from distill.runtime.infra import storage

    client = mlflow.MlflowClient()  # run_chain pointed mlflow at the chain's store
    run_ids = {row["stage"]: row["run_id"] for row in result.rows}
    bounds = word_bounds(cfg.data.path) if not storage.is_uri(cfg.data.path) else None
    stages = []
    for s in plan:
        run = client.get_run(run_ids[s.name])
        metrics = run.data.metrics
        trained_in = run.data.tags.get(REUSED_FROM) or run.info.run_id  # a shared stage's curves are its first run's
        stage_data = storage.join(os.path.dirname(str(result.model_dirs[s.name])), "data")
        stages.append({"name": s.name, "method": "teacher" if s.kind == "teacher" else s.method, "kind": s.kind,
                       "input_ms": s.input_ms,
                       "metrics": {k: float(v) for k, v in metrics.items()
                                   if k not in LABEL_METRICS and k not in NOT_STAGE_METRICS},
                       "label_stats": {LABEL_METRICS[k]: float(v) for k, v in metrics.items() if k in LABEL_METRICS},
                       "curves": {k: [float(m.value) for m in sorted(client.get_metric_history(trained_in, k),
                                                                     key=lambda m: m.step)]
                                  for k in NOT_STAGE_METRICS},
                       "word_share": ({} if bounds is None or s.kind == "teacher" else
                                      stage_share_table(stage_data, bounds, s.sample_rate))})
    return stages


def eval_clips(study: Study, cfg: ExperimentConfig, result, labels: list[str], cache: dict,
               say: Callable[[str], None]) -> dict[str, tuple]:
    """The clips every stage predicts: the chain's test split and each of the study's eval sets
    (read once per study run: ``cache``), as (clip ids, waveforms, targets)."""
    from distill.runtime.execution.chain_eval import eval_set_clips
    from distill.runtime.execution.source import load_split_clips
    from distill.runtime.infra import storage

    sets = {TEST: load_split_clips(storage.join(result.run_dir, "source"), "test")}
    for name, eval_set in study.eval.items():
        key = (name, cfg.data.sample_rate, cfg.data.clip_ms, tuple(labels))
        if key not in cache:
            cache[key] = eval_set_clips(eval_set.options, labels=labels, sample_rate=cfg.data.sample_rate,
                                        clip_ms=cfg.data.clip_ms, split=eval_set.split,
                                        say=lambda line, n=name: say(f"   eval {n}: {line}"))
        sets[name] = cache[key]
    return sets


def predict_clips(cfg: ExperimentConfig, plan: list, model_dirs: dict, set_name: str, clips: tuple,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """Every stage's per-clip decisions on one eval set, per protocol."""
    from distill.core.crops import num_samples
    from distill.runtime.execution.evaluate import predict_model_dir

    clip_ids, waves, targets = clips
    hop = num_samples(cfg.eval.stream_hop_ms, cfg.data.sample_rate)
    threads = max(1, int(cfg.train.cpus_per_worker), min(os.cpu_count() or 1, 4))
    predictions = {}
    for s in plan:
        by_protocol = predict_model_dir(model_dirs[s.name], waves, hop_samples=hop, batch_size=cfg.eval.batch_size,
                                        threads=threads)
        predictions[s.name] = {p: v.tolist() for p, v in by_protocol.items()}
    if set_name != TEST:
        final = plan[-1].name
        acc = (sum(int(a == b) for a, b in zip(predictions[final]["stream"], targets)) / len(targets)
               if len(targets) else float("nan"))
        say(f"   eval {set_name}: {len(clip_ids)} clips; {final} stream accuracy {acc:.4f}")
    return {"clip_ids": list(clip_ids), "targets": [int(t) for t in targets], "predictions": predictions}


def default_records_dir(study: Study) -> Path:
    """``<study file's folder>/<study name>/records``."""
    return study.path.parent / study.name / "records"


def default_report_dir(study: Study) -> Path:
    """``<study file's folder>/<study name>/report``."""
    return study.path.parent / study.name / "report"
