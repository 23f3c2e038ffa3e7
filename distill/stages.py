"""The PLD stage chain as data: which models are trained, at which input length, taught by
whom, on which crops and with which loss. Every per-stage decision is made here, once, in
``plan_chain``; the runtime (``runtime/execution/stage.py``) only carries a ``StageSpec`` out.

``chain.lengths_ms`` is the whole schedule: its first length is the teacher's (the clip
length, trained on the clips' own labels), and each later length is a student labelled by
the stage before it (teacher 1000 → students 900, 800, …, 500 ms, as in the paper). Then the
baselines at the final length, each a registered method (``distill/methods.py``): ``direct``
(clip labels), ``one_shot`` (labels of the teacher), …, on the very crops of the final student. ``chain.self_distill`` adds a student at
the teacher's own length, taught by the teacher, before the shorter ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from distill.config import STAGE_GROUPS, ExperimentConfig, LabelsConfig, TrainConfig
from distill.core.crops import num_samples, sliding_crop_offsets
from distill.core.labels import LabelSpec
from distill.methods import PLD, get_method

TEACHER = "teacher"


@dataclass(frozen=True)
class StageSpec:
    name: str
    kind: Literal["teacher", "student", "baseline"]
    method: str  # a registered method (distill/methods.py): where the stage's labels come from
    input_ms: int
    teacher: str | None  # stage whose model labels this stage's crops; None: the clips' own labels
    epochs: int
    sample_rate: int = 16000
    # the crops: the whole clip (one row per clip), crops_per_clip seeded random ones, or sliding
    placement: Literal["whole", "random", "sliding"] = "random"
    crops_per_clip: int = 1  # rows per training clip (sliding: the number of positions)
    stride_ms: int | None = None  # sliding: the hop between a clip's crops
    seed: int = 0
    # the labels: how a teacher reads a crop, which it keeps, and the loss the stage learns them with
    labels: LabelSpec = LabelSpec()  # clip labels (no teacher): one-hot, and hard is their exact loss
    # the stage's own train settings over the chain's `train` section (from `stages:`), as (key, value)
    train: tuple[tuple[str, Any], ...] = ()

    @property
    def input_samples(self) -> int:
        return num_samples(self.input_ms, self.sample_rate)

    @property
    def stride_samples(self) -> int | None:
        return num_samples(self.stride_ms, self.sample_rate) if self.stride_ms else None


def stage_recipe(cfg: ExperimentConfig, name: str, kind: str) -> tuple[int | None, LabelsConfig, dict[str, Any]]:
    """A stage's epochs (None: the chain's), labels and own train settings: the top-level
    sections, then its group's block in ``stages:``, then its own (each key it sets wins)."""
    epochs, labels, train = None, cfg.labels.model_dump(), {}
    for key in (STAGE_GROUPS[kind], name):
        recipe = cfg.stages.get(key)
        if recipe is None:
            continue
        epochs = recipe.epochs or epochs
        labels.update(recipe.labels.model_dump(exclude_none=True))
        train.update(recipe.train.model_dump(exclude_none=True))
    return epochs, LabelsConfig(**labels), train


def _stage(cfg: ExperimentConfig, name: str, kind: str, method: str, input_ms: int, teacher: str | None,
           epochs: int) -> StageSpec:
    sr = cfg.data.sample_rate
    whole = num_samples(input_ms, sr) == num_samples(cfg.data.clip_ms, sr)  # the crop is the clip itself
    placement = "whole" if whole else cfg.chain.crop_placement
    stride_ms = cfg.chain.crop_stride_ms if placement == "sliding" else None
    per_clip = 1 if whole else cfg.chain.crops_per_clip if placement == "random" else len(
        sliding_crop_offsets(num_samples(cfg.data.clip_ms, sr), num_samples(input_ms, sr), num_samples(stride_ms, sr)))
    own_epochs, labels, train = stage_recipe(cfg, name, kind)
    label_spec = LabelSpec(view=cfg.chain.teacher_view, pad_position=cfg.chain.pad_position,
                           min_confidence=labels.min_confidence, mode=labels.mode, temperature=labels.temperature,
                           original_weight=labels.original_weight) if teacher else LabelSpec()
    return StageSpec(name, kind, method, input_ms, teacher, own_epochs or epochs, sample_rate=sr, placement=placement,
                     crops_per_clip=per_clip, stride_ms=stride_ms, seed=cfg.seed, labels=label_spec,
                     train=tuple(sorted(train.items())))


def stage_train(train: TrainConfig, stage: StageSpec) -> TrainConfig:
    """The chain's ``train`` section with the stage's own settings over it."""
    return train.model_copy(update=dict(stage.train)) if stage.train else train


def plan_chain(cfg: ExperimentConfig) -> list[StageSpec]:
    epochs = cfg.train.epochs
    teacher_ms, *student_ms = cfg.chain.lengths_ms
    if cfg.chain.self_distill:
        student_ms = [teacher_ms, *student_ms]
    stages = [_stage(cfg, TEACHER, "teacher", PLD, teacher_ms, None, cfg.train.teacher_epochs or epochs)]
    for length in student_ms:
        stages.append(_stage(cfg, f"student_{length}ms", "student", PLD, length, get_method(PLD).teacher_of(stages),
                             epochs))
    chain, final = list(stages), stages[-1].input_ms
    for name in cfg.chain.baselines:
        teacher = get_method(name).teacher_of(chain)
        stages.append(_stage(cfg, f"{name}_{final}ms", "baseline", name, final, teacher, epochs))
    return stages


def crops_per_clip(cfg: ExperimentConfig, input_ms: int) -> int:
    """Rows a stage's dataset holds per training clip. A crop as long as the clip is the clip
    itself: one row, whatever ``crops_per_clip`` says (epochs are then passes over the clips)."""
    return _stage(cfg, "", "student", PLD, input_ms, None, 1).crops_per_clip


def describe_plan(cfg: ExperimentConfig, train_clips: int | None) -> str:
    """The stage plan as a table (what ``pld run --dry-run`` prints): who teaches whom, at which
    length, on which dataset, and how many rows each distilled dataset will have."""
    rows = [("stage", "kind", "method", "input_ms", "labels_from", "epochs", "dataset", "est_rows", "recipe")]
    for s in plan_chain(cfg):
        est = "?" if train_clips is None else str(train_clips * s.crops_per_clip)
        rows.append((s.name, s.kind, s.method, str(s.input_ms), s.teacher or "clip labels", str(s.epochs),
                     f"<run_dir>/stages/{s.name}/data", est, describe_recipe(s)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows) + "\n"


def describe_recipe(stage: StageSpec) -> str:
    """A stage's loss and its own train settings, as the plan prints them."""
    spec = stage.labels
    labels = "" if stage.teacher is None else (
        f"{spec.mode} T={spec.temperature:g} clip weight {spec.original_weight:g}"
        + (f" confidence ≥ {spec.min_confidence:g}" if spec.min_confidence else ""))
    return "; ".join(p for p in (labels, " ".join(f"{k}={v}" for k, v in stage.train)) if p) or "-"


def describe_run(cfg: ExperimentConfig, address: str | None = None) -> tuple[str, str | None]:
    """``pld run --dry-run``: the resolved config, the dataset's size, where the stages will train
    (``address``: --address) and the stage plan; starts nothing. Also returns why the dataset
    could not be read (None: it could)."""
    import yaml

    from distill.data.base import build_source_index
    from distill.runtime.infra.manifest import config_fingerprint

    resolved = cfg.model_dump(mode="json")
    lines = [f"# resolved config (fingerprint {config_fingerprint(resolved)})",
             yaml.safe_dump(resolved, sort_keys=False)]
    try:
        index = build_source_index(cfg.data)
        counts = index.clips["split"].value_counts()
        train = int(counts.get("train", 0))
        lines.append(f"# dataset: {len(index.labels)} classes; "
                     + ", ".join(f"{s} {int(counts.get(s, 0))}" for s in ("train", "validation", "test")) + " clips\n")
    except (FileNotFoundError, ValueError) as exc:
        train, problem = None, str(exc)
        lines.append(f"# dataset: not readable here ({exc}); row estimates unknown\n")
    else:
        problem = None
    lines.append(f"# training: {describe_training(cfg, address)}\n")
    lines.append("# stage plan (est_rows = train clips × crops per clip, before any confidence filter)")
    return "\n".join(lines) + "\n" + describe_plan(cfg, train), problem


RUNNERS = {"local": "in the driver's process (Ray Train's local mode)",
           "actor": "in one actor per worker on the driver's node (Ray Train's local mode; several join one "
                    "process group)",
           "workers": "in a Ray Train worker group"}


def describe_training(cfg: ExperimentConfig, address: str | None = None) -> str:
    """Where the stages will train (``TrainConfig.resolved_runner``): known now for the one-node
    Ray a chain starts without an address, and for a Ray Client; else once the chain sees the
    cluster's nodes."""
    train, n = cfg.train, cfg.train.num_workers
    what = f"{n} {'GPU' if train.use_gpu else 'CPU'} worker{'s' if n > 1 else ''} of {train.cpus_per_worker:g} CPU"
    address = cfg.ray.resolved_address(address)  # as init_ray picks it
    client = bool(address) and address.startswith("ray://")
    if train.runner == "auto" and address and not client and not train.use_gpu:
        return (f"{what}: decided when the chain sees the cluster at {address} (train.runner: auto): one node, "
                f"{RUNNERS[train.resolved_runner(one_node=True)]}; several, {RUNNERS['workers']}")
    runner = train.resolved_runner(one_node=True, client=client)
    sweep = " (in a pld sweep's trial, in one actor)" if runner == "local" and train.runner == "auto" else ""
    return f"{what}: {RUNNERS[runner]}{sweep} (train.runner: {train.runner})"
