"""Scanning a dataset without a cluster: every clip through ``load_clip`` on a thread pool
(libsndfile and torch release the GIL while they work). Used by ``pld data check``, by
``pld eval`` to read an evaluation set, and for the quarantine rules every ingestion
applies (the Ray source stage follows the same rules at cluster scale)."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from distill.core.crops import num_samples
from distill.data.audio import load_clip
from distill.data.base import QUARANTINE_COLUMNS, DatasetOptions, SourceIndex



class DataError(ValueError):
    """The data cannot be used as it is; the message names the files and what to do."""


@dataclass
class ScanResult:
    good: pd.DataFrame  # index rows of the clips that decoded (with an ``applied`` column)
    quarantine: pd.DataFrame  # QUARANTINE_COLUMNS, one row per file that did not
    applied: Counter = field(default_factory=Counter)  # policy → clips it was applied to
    waveforms: np.ndarray | None = None  # (good clips, samples) int16, when asked for

    @property
    def total(self) -> int:
        return len(self.good) + len(self.quarantine)


def scan(index: SourceIndex, options: DatasetOptions, *, keep_waveforms: bool = False,
         workers: int | None = None) -> ScanResult:
    clip_samples = num_samples(options.clip_ms, options.sample_rate)
    rows = list(index.clips.itertuples(index=False))

    def one(r):
        return load_clip(r.path, int(r.start), clip_samples, options.sample_rate, options.policy, key=r.clip_id)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        loaded = list(pool.map(one, rows))
    ok = np.array([c.waveform is not None for c in loaded], dtype=bool)
    good = index.clips[ok].copy()
    good["applied"] = [",".join(c.applied) for c in loaded if c.waveform is not None]
    bad = index.clips[~ok].copy()
    bad["problem"] = [c.problem for c in loaded if c.waveform is None]
    waves = None
    if keep_waveforms:
        waves = (np.stack([c.waveform for c in loaded if c.waveform is not None]) if ok.any()
                 else np.zeros((0, clip_samples), np.int16))
    applied = Counter(p for c in loaded if c.waveform is not None for p in c.applied)
    quarantine = pd.concat([bad[QUARANTINE_COLUMNS], index.rejected[QUARANTINE_COLUMNS]], ignore_index=True)
    return ScanResult(good.reset_index(drop=True), quarantine, applied, waves)


def check_bad_fraction(bad: int, total: int, options: DatasetOptions, where: str) -> None:
    """Stop when too much of the corpus is unreadable: a half-broken copy should not train quietly."""
    if total and bad / total > options.max_bad_fraction:
        raise DataError(f"{bad} of {total} files ({bad / total:.1%}) of data.path {options.path} could not be read, "
                        f"above data.max_bad_fraction ({options.max_bad_fraction:.1%}); the files and reasons are in "
                        f"{where}. Fix or remove them, or raise data.max_bad_fraction")


def quarantine_reasons(quarantine: pd.DataFrame) -> dict[str, int]:
    """Quarantined files per kind of reason (the text before its first colon)."""
    return dict(Counter(p.split(":")[0] for p in quarantine["problem"]).most_common())


def describe(rows: dict[str, int], files: int, reasons: dict[str, int], applied: dict[str, int]) -> str:
    """One line: files decoded, quarantined (by reason), policies applied, clips per split.
    The source stage prints it from its manifest, ``pld eval`` from a scan."""
    quarantined = sum(reasons.values())
    text = f"{sum(rows.values())} of {files} files decoded; {quarantined} quarantined"
    if quarantined:
        text += " (" + ", ".join(f"{k} {v}" for k, v in reasons.items()) + ")"
    if applied:
        text += "; policy applied: " + ", ".join(f"{k} {v}" for k, v in sorted(applied.items()))
    return text + "; " + ", ".join(f"{s} {rows.get(s, 0)}" for s in ("train", "validation", "test")) + " clips"


def report_json(index: SourceIndex, result: ScanResult) -> dict:
    """``pld data check --json``: counts, the policies applied and every problem."""
    return {"files": result.total, "clips": len(result.good), "labels": index.labels,
            "counts": {f"{label}/{split}": int(n) for (label, split), n
                       in result.good.groupby(["label", "split"]).size().items()},
            "policy_applied": dict(result.applied),
            "problems": result.quarantine[["path", "problem"]].to_dict(orient="records")}


def report(index: SourceIndex, options: DatasetOptions, result: ScanResult) -> str:
    """``pld data check``'s text: clips per label and split, every problem, the policies applied."""
    lines = [f"dataset {options.name} at {options.path}: {len(index.labels)} labels, {result.total} files scanned"]
    if len(result.good):
        table = result.good.pivot_table(index="label", columns="split", values="clip_id", aggfunc="count", fill_value=0)
        table = table.reindex([x for x in index.labels if x in table.index])
        table = table[[c for c in ("train", "validation", "test") if c in table.columns]]
        table.loc["total"] = table.sum()
        lines += ["", table.to_string()]
    empty = [x for x in index.labels if x not in set(result.good["label"])]
    if empty:
        lines += ["", f"labels with no readable clip: {empty}"]
    lines += ["", "policy applied: " + (", ".join(f"{k} {v}" for k, v in sorted(result.applied.items())) or "none")]
    lines += ["", f"problems: {len(result.quarantine)}"]
    lines += [f"  {r.path}: {r.problem}" for r in result.quarantine.itertuples()]
    return "\n".join(lines) + "\n"
