"""The PLD stage chain as data: which models are trained, at which input length, taught by whom.

teacher (full clip, clip labels) → student at each length of ``chain.lengths_ms``, each
labelled by the previous stage → baselines at the final length: ``direct`` (clip labels)
and ``one_shot`` (labels of the full-length teacher), on the very crops of the final student.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from distill.config import ExperimentConfig

TEACHER = "teacher"


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: Literal["teacher", "student", "baseline"]
    method: Literal["pld", "direct", "one_shot"]
    input_ms: int
    teacher: str | None  # stage whose model labels this stage's crops; None: the clips' own labels
    epochs: int


def plan_chain(cfg: ExperimentConfig) -> list[StageSpec]:
    epochs = cfg.train.epochs
    stages = [StageSpec(TEACHER, "teacher", "pld", cfg.data.clip_ms, None, cfg.train.teacher_epochs or epochs)]
    for length in cfg.chain.lengths_ms:
        stages.append(StageSpec(f"student_{length}ms", "student", "pld", length, stages[-1].name, epochs))
    final = cfg.chain.lengths_ms[-1]
    for method in cfg.chain.baselines:
        teacher = None if method == "direct" else TEACHER
        stages.append(StageSpec(f"{method}_{final}ms", "baseline", method, final, teacher, epochs))
    return stages


def describe_plan(cfg: ExperimentConfig, train_clips: int | None) -> str:
    """The stage plan as a table (what ``pld run --dry-run`` prints): who teaches whom, at which
    length, on which dataset, and how many rows each distilled dataset will have."""
    from distill.crops import sliding_crop_offsets
    from distill.features import num_samples

    rows = [("stage", "kind", "method", "input_ms", "labels_from", "epochs", "dataset", "est_rows")]
    sr = cfg.data.sample_rate
    for s in plan_chain(cfg):
        per_clip = cfg.chain.crops_per_clip if cfg.chain.crop_placement == "random" else len(sliding_crop_offsets(
            num_samples(cfg.data.clip_ms, sr), num_samples(s.input_ms, sr), num_samples(cfg.chain.crop_stride_ms, sr)))
        est = "?" if train_clips is None else str(train_clips * per_clip)
        rows.append((s.name, s.kind, s.method, str(s.input_ms), s.teacher or "clip labels", str(s.epochs),
                     f"<run_dir>/stages/{s.name}/data", est))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows) + "\n"
