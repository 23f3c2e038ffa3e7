"""A study's results as small, committable files: one record per finished (cell, seed).

A record holds what the study's report needs and nothing it can rebuild: the resolved config
(and its fingerprint, which decides whether a finished run can be reused), the commit, each
stage's metrics and label statistics, and every evaluated clip's predicted class under every
protocol, so that differences can be paired clip by clip. ``pld study report`` reads only
these files: no Ray, no MLflow store, so a study can be reviewed in git and continued on
another machine.

On disk: ``DIR/<cell id>/seed-<n>.json.gz``, gzip'd JSON with sorted keys and no timestamp in
the gzip header, so the same record is always the same bytes (a rewritten record shows no
diff in git), written to a temporary file and renamed into place (a killed writer leaves the
old record or none, never half of one).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import tempfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.config import ExperimentConfig
from distill.fingerprint import NOT_RESULTS, semantic_config  # noqa: F401 (NOT_RESULTS: re-exported)
from distill.names import PROTOCOLS

RECORD_VERSION = 1
TEST = "test"  # the chain's own test split: every record has it

class RecordError(ValueError):
    """A record file that cannot be read; the message names the file."""


def fingerprint_of(resolved: dict[str, Any]) -> str:
    """sha256 (16 hex digits) of the canonical JSON of ``semantic_config(resolved)``."""
    text = json.dumps(semantic_config(resolved), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def same_config(recorded: dict[str, Any], config: ExperimentConfig) -> bool:
    """Whether a record made with resolved config ``recorded`` holds what ``config`` would
    compute: the same fingerprint, or every recorded key the same and every key the record lacks
    (an option added to the platform since) at its default. So adding an option does not make
    every finished record stale; changing or removing one does."""
    if fingerprint_of(recorded) == cell_fingerprint(config):
        return True
    old, new = _flat(semantic_config(recorded)), _flat(semantic_config(config.model_dump(mode="json")))
    if set(old) - set(new) or any(old[k] != new[k] for k in old):
        return False
    defaults = _flat(semantic_config(ExperimentConfig.model_validate(
        {"data": {"name": config.data.name, "path": str(config.data.path)}}).model_dump(mode="json")))
    return all(k in defaults and new[k] == defaults[k] for k in set(new) - set(old))


def cell_fingerprint(config: ExperimentConfig) -> str:
    """What a run computes, as a hash: two runs with the same fingerprint give the same
    numbers, so a finished one is reused. Not the chain's ``pld.config_fingerprint`` tag
    (distill/runtime/infra/manifest.py), which keeps the run's name and storage."""
    return fingerprint_of(config.model_dump(mode="json"))


# --- the record ----------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _finite_or_none(values: dict[str, float | None]) -> dict[str, float | None]:
    """NaN and ±inf as None (not measured): strict JSON has no NaN."""
    return {k: (v if v is None or np.isfinite(v) else None) for k, v in values.items()}


class StageRecord(_Strict):
    name: str  # the stage's name in the chain: teacher, student_500ms, direct_500ms, ...
    method: str  # the contrasts' METHOD: teacher (whose StageSpec.method is pld), pld, direct or one_shot
    kind: str  # teacher | student | baseline
    input_ms: int
    metrics: dict[str, float | None] = Field(default_factory=dict)  # the stage's logged metrics (test split)
    label_stats: dict[str, float | None] = Field(default_factory=dict)  # its relabelled dataset's (agreement, ...)
    curves: dict[str, list[float]] = Field(default_factory=dict)  # per epoch: val_acc (stream), train_loss
    # its labels against the share of the word each crop holds (study/word_share.py); {}: unknown
    word_share: dict[str, list[float]] = Field(default_factory=dict)

    @field_validator("metrics", "label_stats")
    @classmethod
    def _finite(cls, v: dict[str, float | None]) -> dict[str, float | None]:
        return _finite_or_none(v)


class EvalRecord(_Strict):
    """One evaluation set: its clips, their true classes, and every stage's predicted class
    under every protocol, all as indices into the record's ``labels`` and in ``clip_ids`` order."""

    clip_ids: list[str]
    targets: list[int]
    predictions: dict[str, dict[str, list[int]]]  # stage name -> protocol -> class per clip

    @model_validator(mode="after")
    def _aligned(self) -> "EvalRecord":
        n = len(self.clip_ids)
        if len(set(self.clip_ids)) != n:
            raise ValueError("clip_ids are not distinct")
        if len(self.targets) != n:
            raise ValueError(f"{len(self.targets)} targets for {n} clips")
        for stage, by_protocol in self.predictions.items():
            for protocol, pred in by_protocol.items():
                if protocol not in PROTOCOLS:
                    raise ValueError(f"predictions.{stage}: unknown protocol {protocol!r}")
                if len(pred) != n:
                    raise ValueError(f"predictions.{stage}.{protocol}: {len(pred)} predictions for {n} clips")
        return self


class CellRecord(_Strict):
    version: int = RECORD_VERSION
    study: str
    cell_id: str
    levels: dict[str, str]  # axis -> level
    seed: int
    fingerprint: str  # fingerprint_of(resolved_config)
    commit: str
    dirty: bool  # the working tree had uncommitted changes
    resolved_config: dict[str, Any]  # ExperimentConfig.model_dump(mode="json")
    labels: list[str]  # the model's classes; every target and prediction indexes this list
    stages: list[StageRecord]
    evals: dict[str, EvalRecord]  # "test" (the chain's split) and the study's extra eval sets
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @model_validator(mode="after")
    def _consistent(self) -> "CellRecord":
        if self.version != RECORD_VERSION:
            raise ValueError(f"record version {self.version}; this pld reads version {RECORD_VERSION}")
        if TEST not in self.evals:
            raise ValueError(f"no {TEST!r} evaluation")
        if fingerprint_of(self.resolved_config) != self.fingerprint:
            raise ValueError(f"fingerprint {self.fingerprint} is not that of resolved_config "
                             f"({fingerprint_of(self.resolved_config)}): the record was edited")
        datetime.fromisoformat(self.created)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError("stage names are not distinct")
        n_classes = len(self.labels)
        for eval_set, ev in self.evals.items():
            if any(not 0 <= t < n_classes for t in ev.targets):
                raise ValueError(f"evals.{eval_set}.targets: a class index outside 0..{n_classes - 1}")
            for stage, by_protocol in ev.predictions.items():
                if stage not in names:
                    raise ValueError(f"evals.{eval_set}.predictions: {stage!r} is not one of the stages {names}")
                for protocol, pred in by_protocol.items():
                    if pred and not 0 <= min(pred) <= max(pred) < n_classes:
                        raise ValueError(f"evals.{eval_set}.predictions.{stage}.{protocol}: a class index "
                                         f"outside 0..{n_classes - 1}")
        return self

    def correct(self, stage: str, protocol: str, eval_set: str = TEST) -> np.ndarray:
        """Per clip (in ``clip_ids`` order): did ``stage`` predict the true class?"""
        ev = self.evals[eval_set]
        return np.asarray(ev.predictions[stage][protocol], np.int64) == np.asarray(ev.targets, np.int64)


def correct_by_seed(records: list[CellRecord], stage: str, protocol: str,
                    eval_set: str = TEST) -> tuple[list[int], np.ndarray]:
    """The seeds and a seeds × clips boolean matrix of one stage's correct clips, the clips in
    the first record's order: what ``stats.paired_bootstrap`` takes. The records (one cell's
    seeds) must have evaluated the same clips."""
    if not records:
        return [], np.zeros((0, 0), bool)
    order = records[0].evals[eval_set].clip_ids
    rows = []
    for r in records:
        ids = r.evals[eval_set].clip_ids
        if ids == order:
            rows.append(r.correct(stage, protocol, eval_set))
            continue
        if sorted(ids) != sorted(order):
            raise ValueError(f"{r.cell_id} seed {r.seed}: evals.{eval_set} has other clips than seed "
                             f"{records[0].seed}'s; per-clip pairing needs the same clips")
        position = {c: i for i, c in enumerate(ids)}
        rows.append(r.correct(stage, protocol, eval_set)[[position[c] for c in order]])
    return [r.seed for r in records], np.vstack(rows)


# --- files ---------------------------------------------------------------------------------

_CELL_DIR = re.compile(r"^[a-z0-9_=,-]+$")  # what study cell ids are made of (spec.NAME, '=' and ',')


def record_path(root: str | Path, cell_id: str, seed: int) -> Path:
    """``root/<cell id>/seed-<n>.json.gz``. A cell id is already a safe file name on every
    common file system; anything else is refused rather than mangled (two ids must never
    share a folder)."""
    if not _CELL_DIR.match(cell_id) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"cell id {cell_id!r} / seed {seed!r}: not a study cell's ([a-z0-9_=,-]+, seed >= 0)")
    return Path(root) / cell_id / f"seed-{seed}.json.gz"


def record_bytes(record: CellRecord) -> bytes:
    """The file's bytes: the same record always gives the same bytes."""
    text = json.dumps(record.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode(), compresslevel=9, mtime=0)


def write_record(root: str | Path, record: CellRecord) -> Path:
    """Write ``record`` under ``root`` atomically; returns its path."""
    path = record_path(root, record.cell_id, record.seed)
    data = record_bytes(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(path: str | Path) -> CellRecord:
    path = Path(path)
    try:
        raw = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
        return CellRecord.model_validate(raw)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise RecordError(f"{path}: not a complete gzip file ({exc}); delete it and run the cell's seed again") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"{path}: not JSON ({exc}); delete it and run the cell's seed again") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise RecordError(f"{path}: not a study record: {where}: {first['msg']}"
                          + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")) from None


def read_records(root: str | Path) -> list[CellRecord]:
    """Every record under ``root``, ordered by cell id and seed; none if ``root`` does not
    exist yet (a study that has not finished a run)."""
    root = Path(root)
    records = []
    for path in sorted(root.glob("*/seed-*.json.gz")):
        record = read_record(path)
        if record_path(root, record.cell_id, record.seed) != path:
            raise RecordError(f"{path}: holds cell {record.cell_id} seed {record.seed}, whose record belongs at "
                              f"{record_path(root, record.cell_id, record.seed)}")
        records.append(record)
    return sorted(records, key=lambda r: (r.cell_id, r.seed))
