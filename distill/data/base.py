"""What every dataset provides: typed options and a source index.

A dataset is a registered builder ``options → SourceIndex``. The index lists clips (where
each one's audio lives and its label, speaker and split); decoding happens later, in the
Ray Data source stage, so indexing a million-clip corpus stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from distill.registry import Registry

SILENCE = "_silence_"
UNKNOWN = "_unknown_"
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


@dataclass
class SourceIndex:
    """Clips of a dataset: a frame with ``INDEX_COLUMNS`` and the ordered label set.

    ``start`` is a sample offset into ``path`` (non-zero for clips cut from long files,
    such as silence cut from background noise).
    """

    clips: pd.DataFrame
    labels: list[str]

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

    def counts(self) -> pd.DataFrame:
        """Clips per label (rows) and split (columns)."""
        return self.clips.pivot_table(index="label", columns="split", values="clip_id", aggfunc="count", fill_value=0)


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


def _load_builtin_datasets() -> None:
    # Imported for their registrations; kept lazy so `distill.data.base` has no cycles.
    import distill.data.speech_commands  # noqa: F401


def parse_dataset_options(raw: dict[str, Any] | DatasetOptions) -> DatasetOptions:
    """Validate a config's ``data:`` block against the named dataset's own options model."""
    if isinstance(raw, DatasetOptions):
        return raw
    _load_builtin_datasets()
    if not isinstance(raw, dict):
        raise ValueError(f"data: must be a mapping with a 'name' (one of {DATASETS.names()})")
    raw = {"name": DEFAULT_DATASET, **raw}
    if raw["name"] not in DATASETS:
        raise ValueError(f"data.name: unknown dataset {raw['name']!r}; registered datasets: {', '.join(DATASETS.names())}")
    return _OPTIONS[raw["name"]].model_validate(raw)


def build_source_index(options: DatasetOptions) -> SourceIndex:
    _load_builtin_datasets()
    return DATASETS.get(options.name)(options)
