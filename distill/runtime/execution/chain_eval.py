"""``pld eval``: every model of a finished chain on another dataset, logged back into the chain.

The models come from the chain's MLflow runs (their weights-only ``checkpoint/`` artifacts),
so this works wherever the tracking server is, not only on the machine that ran the chain.
The evaluation set is read on this machine (``distill.data.check.scan``): with the same
quarantine rules as ingestion, at the chain's sample rate and clip length. Metrics land in
each stage's run as ``<name>_acc_<protocol>`` so they compare next to ``test_acc_*`` in the
MLflow UI.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from distill.names import INPUT_MS, KIND, METHOD, PROTOCOLS, STAGES
from distill.core.checkpoint import load_model_dir
from distill.data.base import DatasetOptions, SourceIndex, build_source_index
from distill.data.check import check_bad_fraction, describe, quarantine_reasons, scan
from distill.core.features import num_samples
from distill.runtime.execution.evaluate import evaluate_model_dir, predict_model_dir
from distill.runtime.execution.tracking import format_table
from distill.runtime.infra.errors import find_run, tracking_refused

EVAL_COLUMNS = ["stage", "method", "input_ms", "acc_window", "acc_stream", "acc_center"]


def eval_table(rows: list[dict]) -> str:
    """``pld eval``'s table of the rows ``evaluate_chain`` returns."""
    return format_table(rows, EVAL_COLUMNS)


def eval_json(rows: list[dict]) -> list[dict]:
    """``pld eval --json``: one object per stage run."""
    return [{k: r[k] for k in ("run_id", "stage", "kind", "method", "input_ms", *(f"acc_{p}" for p in PROTOCOLS))}
            for r in rows]


def chain_runs(client: mlflow.MlflowClient, run_id: str) -> tuple[mlflow.entities.Run, list[mlflow.entities.Run]]:
    """The chain's parent run and its stage runs, in the chain's order."""
    parent = find_run(client, run_id)
    kind = parent.data.tags.get(KIND)
    if kind != "chain":
        hint = parent.data.tags.get("mlflow.parentRunId")
        raise ValueError(f"run {run_id} is not a PLD chain (pld.kind={kind!r})"
                         + (f"; its chain is {hint}" if hint else ""))
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000)
    order = parent.data.tags.get(STAGES, "").split(",")
    children = [r for r in children if r.info.status == "FINISHED"]
    children.sort(key=lambda r: order.index(r.info.run_name) if r.info.run_name in order else len(order))
    if not children:
        raise ValueError(f"chain {run_id} has no finished stage runs to evaluate")
    return parent, children


def _select(index: SourceIndex, split: str, model_labels: list[str], say: Callable[[str], None]) -> SourceIndex:
    clips = index.clips[index.clips["split"] == split]
    if clips.empty:
        raise ValueError(f"the dataset has no clips in split {split!r} (it has {sorted(index.clips['split'].unique())}); "
                         "choose one with --split")
    foreign = sorted(set(clips["label"]) - set(model_labels))
    if foreign:
        n = int(clips["label"].isin(foreign).sum())
        say(f"skipped {n} clips of label(s) {foreign}: the chain's models have no such class ({model_labels})")
        clips = clips[~clips["label"].isin(foreign)]
        if clips.empty:
            raise ValueError(f"none of the dataset's labels is a class of the chain's models ({model_labels})")
    rejected = index.rejected[index.rejected["split"] == split]
    return SourceIndex(clips=clips.reset_index(drop=True), labels=model_labels, rejected=rejected.reset_index(drop=True))


def evaluate_chain(run_id: str, options: DatasetOptions, *, split: str = "test", name: str | None = None,
                   tracking: str | None = None, say: Callable[[str], None] = print) -> list[dict]:
    """Evaluate every stage model of chain ``run_id`` on ``options``' ``split``; log and return one row per model."""
    from distill.runtime.infra.session import quiet_logs, resolve_tracking_uri

    quiet_logs()
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking))
    client = mlflow.MlflowClient()
    parent, children = chain_runs(client, run_id)
    prefix = name or options.name
    params = parent.data.params
    with tempfile.TemporaryDirectory(prefix="pld-eval-") as tmp:
        model_dirs = {}
        for run in children:
            try:
                model_dirs[run.info.run_id] = mlflow.artifacts.download_artifacts(
                    run_id=run.info.run_id, artifact_path="checkpoint", dst_path=str(Path(tmp) / run.info.run_id))
            except (MlflowException, OSError) as exc:
                if tracking_refused(exc):
                    raise
                raise ValueError(f"stage run {run.info.run_name} ({run.info.run_id}) has no checkpoint/ artifact: "
                                 f"{exc}") from None
        _, spec = load_model_dir(next(iter(model_dirs.values())))
        # the chain's own sample rate and clip length, whatever the dataset's defaults say
        sample_rate = int(spec.features["sample_rate"])
        _, waveforms, targets = eval_set_clips(options, labels=spec.labels, sample_rate=sample_rate,
                                               clip_ms=int(params.get("data.clip_ms", options.clip_ms)), split=split,
                                               say=lambda line: say(f"{prefix}: {line}"))
        hop = num_samples(int(params.get("eval.stream_hop_ms", 100)), sample_rate)
        rows = []
        for run in children:
            metrics = evaluate_model_dir(model_dirs[run.info.run_id], waveforms, targets, hop_samples=hop,
                                         batch_size=256, threads=os.cpu_count() or 1)
            accs = {p: metrics[f"test_acc_{p}"] for p in PROTOCOLS}
            now = int(time.time() * 1000)
            client.log_batch(run.info.run_id, metrics=[Metric(f"{prefix}_acc_{p}", v, now, 0) for p, v in accs.items()]
                             + [Metric(f"{prefix}_clips", float(len(targets)), now, 0)])
            tags = run.data.tags
            rows.append({"run_id": run.info.run_id, "stage": run.info.run_name, "kind": tags.get(KIND, ""),
                         "method": tags.get(METHOD, ""), "input_ms": int(tags.get(INPUT_MS, 0)),
                         **{f"acc_{p}": v for p, v in accs.items()}})
    table = format_table(rows, EVAL_COLUMNS, markdown=True)
    client.log_text(parent.info.run_id, f"# {prefix}: {options.name} at {options.path}, split {split}\n\n{table}",
                    f"eval/{prefix}.md")
    client.set_tag(parent.info.run_id, f"pld.eval.{prefix}", f"{options.name}:{options.path}")
    return rows


def eval_set_clips(options: DatasetOptions, *, labels: list[str], sample_rate: int, clip_ms: int,
                   split: str = "test", say: Callable[[str], None] = print):
    """The clips of an evaluation set as a chain's models read them: ``(clip ids, waveforms,
    class indices of labels)``, read on this machine with ingestion's quarantine rules, at the
    chain's sample rate and clip length; clips of labels the models lack are skipped (said)."""
    options = options.model_copy(update={"sample_rate": int(sample_rate), "clip_ms": int(clip_ms)})
    index = _select(build_source_index(options), split, list(labels), say)
    scanned = scan(index, options, keep_waveforms=True)
    say(f"{options.name} at {options.path}, split {split}: "
        + describe(scanned.good["split"].value_counts().to_dict(), scanned.total,
                   quarantine_reasons(scanned.quarantine), dict(scanned.applied)))
    for r in scanned.quarantine.itertuples():
        say(f"  quarantined {r.path}: {r.problem}")
    check_bad_fraction(len(scanned.quarantine), scanned.total, options, "the lines above")
    lookup = {label: i for i, label in enumerate(labels)}
    return ([str(c) for c in scanned.good["clip_id"]], scanned.waveforms,
            scanned.good["label"].map(lookup).to_numpy().astype("int64"))


# A pld data synth corpus's held-out parts (distill/corpus/): the test clips of accents no training
# speaker has, and two whole engines no other clip uses. Read beside the test split, they say
# whether a model heard words or learned its training voices.
HELD_OUT_PARTS = {
    "unseen_accent_test": lambda path: {"name": "speech_commands", "path": path,
                                        "testing_list": "testing_unseen_voice_list.txt"},
    "unseen_engine_validation": lambda path: {"name": "speech_commands_test",
                                              "path": f"{path}/_unseen_engine_validation_"},
    "unseen_engine_test": lambda path: {"name": "speech_commands_test", "path": f"{path}/_unseen_engine_test_"},
}
PART_MARKERS = {"unseen_accent_test": "testing_unseen_voice_list.txt",
                "unseen_engine_validation": "_unseen_engine_validation_", "unseen_engine_test": "_unseen_engine_test_"}


def held_out_parts(cfg) -> dict[str, DatasetOptions]:
    """The held-out parts the chain's corpus has (none for a corpus that is not synthesized here)."""
    from distill.data.base import parse_dataset_options

    from distill.runtime.infra import storage

    path = str(cfg.data.path)
    if cfg.data.name != "speech_commands" or storage.is_uri(path):
        return {}
    marker = {part: Path(path) / name for part, name in PART_MARKERS.items()}
    return {part: parse_dataset_options(make(path)) for part, make in HELD_OUT_PARTS.items()
            if marker[part].is_dir() or (marker[part].is_file() and marker[part].stat().st_size)}


def evaluate_held_out_parts(cfg, model_dirs: dict[str, str], run_ids: dict[str, str], labels: list[str],
                            say: Callable[[str], None] = print) -> list[dict]:
    """Every stage's model on each held-out part of the corpus; logs ``<part>_acc_<protocol>``
    into the stage runs and returns one row per stage (stream accuracy per part)."""
    parts = held_out_parts(cfg) if cfg.eval.held_out_parts else {}
    if not parts:
        return []
    from distill.runtime.infra import storage

    client = mlflow.MlflowClient()
    hop = num_samples(cfg.eval.stream_hop_ms, cfg.data.sample_rate)
    rows = {name: {"stage": name} for name in model_dirs}
    for part, options in parts.items():
        said = lambda line, p=part: say(f"held-out part {p}: {line}")  # noqa: E731 (counts, quarantined files)
        _, waves, targets = eval_set_clips(options, labels=labels, sample_rate=cfg.data.sample_rate,
                                           clip_ms=cfg.data.clip_ms, say=said)
        now = int(time.time() * 1000)
        for name, model_dir in model_dirs.items():  # decisions only: no false-alarm scan, no latency
            decisions = predict_model_dir(storage.local_copy(model_dir), waves, hop_samples=hop,
                                          batch_size=cfg.eval.batch_size, threads=max(1, int(cfg.train.cpus_per_worker)))
            accs = {p: float((decisions[p] == targets).mean()) for p in PROTOCOLS}
            client.log_batch(run_ids[name], metrics=[Metric(f"{part}_acc_{p}", v, now, 0) for p, v in accs.items()])
            rows[name][part] = f"{accs['stream']:.4f}"
    return list(rows.values())
