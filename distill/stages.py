"""The PLD stage chain as data: which models are trained, at which input length, taught by whom.

``chain.lengths_ms`` is the whole schedule: its first length is the teacher's (the clip
length, trained on the clips' own labels), and each later length is a student labelled by
the stage before it (teacher 1000 → students 900, 800, …, 500 ms, as in the paper). Then the
baselines at the final length: ``direct`` (clip labels) and ``one_shot`` (labels of the
teacher), on the very crops of the final student. ``chain.self_distill`` adds a student at
the teacher's own length, taught by the teacher, before the shorter ones.
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
    teacher_ms, *student_ms = cfg.chain.lengths_ms
    if cfg.chain.self_distill:
        student_ms = [teacher_ms, *student_ms]
    stages = [StageSpec(TEACHER, "teacher", "pld", teacher_ms, None, cfg.train.teacher_epochs or epochs)]
    for length in student_ms:
        stages.append(StageSpec(f"student_{length}ms", "student", "pld", length, stages[-1].name, epochs))
    final = stages[-1].input_ms
    for method in cfg.chain.baselines:
        teacher = None if method == "direct" else TEACHER
        stages.append(StageSpec(f"{method}_{final}ms", "baseline", method, final, teacher, epochs))
    return stages


def crops_per_clip(cfg: ExperimentConfig, input_ms: int) -> int:
    """Rows a stage's dataset holds per training clip. A crop as long as the clip is the clip
    itself: one row, whatever ``crops_per_clip`` says (epochs are then passes over the clips)."""
    from distill.crops import sliding_crop_offsets
    from distill.features import num_samples

    sr = cfg.data.sample_rate
    clip, crop = num_samples(cfg.data.clip_ms, sr), num_samples(input_ms, sr)
    if crop == clip:
        return 1
    if cfg.chain.crop_placement == "sliding":
        return len(sliding_crop_offsets(clip, crop, num_samples(cfg.chain.crop_stride_ms, sr)))
    return cfg.chain.crops_per_clip


def describe_plan(cfg: ExperimentConfig, train_clips: int | None) -> str:
    """The stage plan as a table (what ``pld run --dry-run`` prints): who teaches whom, at which
    length, on which dataset, and how many rows each distilled dataset will have."""
    rows = [("stage", "kind", "method", "input_ms", "labels_from", "epochs", "dataset", "est_rows")]
    for s in plan_chain(cfg):
        est = "?" if train_clips is None else str(train_clips * crops_per_clip(cfg, s.input_ms))
        rows.append((s.name, s.kind, s.method, str(s.input_ms), s.teacher or "clip labels", str(s.epochs),
                     f"<run_dir>/stages/{s.name}/data", est))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows) + "\n"
