"""What every dataset provides: typed options and a source index.

A dataset is a registered builder ``options → SourceIndex``. The index lists clips (where
each one's audio lives and its label, speaker and split); decoding happens later, in the
Ray Data source stage, so indexing a million-clip corpus stays cheap.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from importlib.metadata import entry_points
from typing import Any, Callable

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.names import SILENCE, UNKNOWN  # noqa: F401  (re-exported: datasets import them from here)
from distill.data.audio import ClipPolicy
from distill.core.registry import Registry

log = logging.getLogger(__name__)

INDEX_COLUMNS = ("clip_id", "path", "start", "label", "speaker", "split")
DEFAULT_DATASET = "speech_commands"


class DatasetOptions(BaseModel):
    """Options every dataset has; a dataset subclasses this with its own fields."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registry name of the dataset builder.")
    path: str = Field(description="Root directory of the dataset on local disk (no download).")
    sample_rate: int = Field(16000, gt=0, description="Sample rate the audio is decoded at (resampled if needed).")
    clip_ms: int = Field(1000, gt=0, description="Length every clip is cut or padded to, in ms.")
    seed: int = Field(0, description="Seed for any sampling the dataset does (unknown/silence selection).")
    policy: ClipPolicy = Field(default_factory=ClipPolicy,
                               description="How files of another rate, channel count or length become clips.")
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description=(
        "Stop with an error when more than this fraction of the files cannot be read (they are quarantined "
        "and counted either way)."))


QUARANTINE_COLUMNS = ["clip_id", "path", "label", "split", "problem"]  # a file that is not a clip, and why


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes of a file name, kept by Python as surrogates
        return False


def _printable(name: str) -> str:
    """A file name with undecodable bytes shown as \\xNN escapes (what an error message can print)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def reject_unstorable_names(rows: list[dict]) -> tuple[list[dict], pd.DataFrame]:
    """Index rows whose path is not UTF-8 (Parquet, MLflow and the manifests store names as
    UTF-8) taken out as quarantine rows with their reason; a builder calls this on its rows."""
    keep, rejected = [], []
    for row in rows:
        if _utf8(row["path"]) and _utf8(row["clip_id"]):
            keep.append(row)
        else:
            rejected.append({"clip_id": _printable(row["clip_id"]), "path": _printable(row["path"]),
                             "label": row.get("label", row.get("word", "")), "split": row["split"],
                             "problem": "file name is not valid UTF-8: rename the file"})
    if rejected:
        log.warning("%d file(s) with a name that is not UTF-8 quarantined (e.g. %s)", len(rejected), rejected[0]["path"])
    return keep, pd.DataFrame(rejected, columns=QUARANTINE_COLUMNS)


@dataclass
class SourceIndex:
    """Clips of a dataset: a frame with ``INDEX_COLUMNS`` and the ordered label set.

    ``start`` is a sample offset into ``path`` for a window of a long file (silence cut
    from background noise), or ``WHOLE_FILE`` (-1) for a clip that is a whole file, fitted to
    the clip length by the dataset's ``policy``.
    """

    clips: pd.DataFrame
    labels: list[str]
    noise_files: list[str] = field(default_factory=list)  # background-noise recordings for augmentation
    # files the index cannot carry (a name that is not UTF-8): quarantined with their reason, counted
    rejected: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=QUARANTINE_COLUMNS))

    def __post_init__(self):
        missing = [c for c in INDEX_COLUMNS if c not in self.clips.columns]
        if missing:
            raise ValueError(f"source index lacks columns {missing}")
        unknown = set(self.clips["label"]) - set(self.labels)
        if unknown:
            raise ValueError(f"source index has labels {sorted(unknown)} outside the label set {self.labels}")
        if self.clips["clip_id"].duplicated().any():
            dup = self.clips.loc[self.clips["clip_id"].duplicated(), "clip_id"].iloc[0]
            raise ValueError(f"source index has duplicate clip_id {dup!r}")



Builder = Callable[[Any], SourceIndex]
DATASETS: Registry[Builder] = Registry("dataset")
_OPTIONS: dict[str, type[DatasetOptions]] = {}


def register_dataset(name: str, options: type[DatasetOptions]):
    """Register ``builder(options) -> SourceIndex`` under ``name`` with its options model."""

    def decorator(builder: Builder) -> Builder:
        DATASETS.register(name)(builder)
        _OPTIONS[name] = options
        return builder

    return decorator


ENTRY_POINT_GROUP = "pld.datasets"
_loaded = False


def _load_builtin_datasets() -> None:
    """Import the built-in datasets and every installed plug-in for their registrations.

    A package adds a dataset without touching this one by declaring an entry point:
    ``[project.entry-points."pld.datasets"] my_corpus = "my_pkg.my_corpus"`` (a module that
    calls ``@register_dataset``). Kept lazy so ``distill.data.base`` has no import cycles."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import distill.data.folder  # noqa: F401
    import distill.data.speech_commands  # noqa: F401

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as exc:  # a broken plug-in must not take the built-in datasets down
            log.warning("dataset plug-in %r (%s) failed to import: %s", entry.name, entry.value, exc)


def parse_dataset_options(raw: dict[str, Any] | DatasetOptions) -> DatasetOptions:
    """Validate a config's ``data:`` block against the named dataset's own options model."""
    if isinstance(raw, DatasetOptions):
        return raw
    _load_builtin_datasets()
    if not isinstance(raw, dict):
        raise ValueError(f"data: must be a mapping with a 'name' (one of {DATASETS.names()})")
    raw = {"name": DEFAULT_DATASET, **raw}
    if not isinstance(raw["name"], str) or raw["name"] not in DATASETS:
        raise ValueError(f"data.name: unknown dataset {raw['name']!r}; registered datasets: {', '.join(DATASETS.names())}")
    return _OPTIONS[raw["name"]].model_validate(raw)


def build_source_index(options: DatasetOptions) -> SourceIndex:
    _load_builtin_datasets()
    try:
        return DATASETS.get(options.name)(options)
    except (FileNotFoundError, ValueError) as exc:
        hint = ray_job_path_hint(options.path)
        if hint:
            raise type(exc)(f"{exc}. {hint}") from None
        raise


def ray_job_path_hint(path: str, cwd: str | None = None) -> str:
    """Why a relative data.path fails inside a Ray job, and what to do; empty elsewhere."""
    cwd = cwd or os.getcwd()
    if Path(path).is_absolute() or not ("runtime_resources" in cwd and "working_dir_files" in cwd):
        return ""
    return (f"data.path {path!r} is relative and pld runs inside a Ray job, whose working directory is the "
            "uploaded copy of --working-dir (git-ignored folders such as data/ are not uploaded): give data.path "
            "as a path every node can read, e.g. --set data.path=/mnt/shared/synth-sc")


def parse_data_spec(spec: str) -> DatasetOptions:
    """A dataset named on the command line: ``NAME:PATH`` (registry name and root directory),
    or a YAML file holding a ``data:`` block (or just the block's fields)."""
    _load_builtin_datasets()
    if spec.endswith((".yaml", ".yml")):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"{spec}: dataset YAML not found")
        raw = yaml.safe_load(path.read_text()) or {}
        raw = raw.get("data", raw) if isinstance(raw, dict) else raw
        if not isinstance(raw, dict) or "name" not in raw:
            raise ValueError(f"{spec}: expected a 'data:' mapping with a 'name' (one of {', '.join(DATASETS.names())})")
    else:
        name, sep, path = spec.partition(":")
        if not sep or not name or not path:
            raise ValueError(f"dataset spec {spec!r}: expected NAME:PATH (NAME one of {', '.join(DATASETS.names())}) "
                             "or a YAML file with a 'data:' block")
        raw = {"name": name, "path": path}
    try:
        return parse_dataset_options(raw)
    except ValidationError as exc:
        fields = "; ".join(f"data.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{spec}: {fields}") from None
