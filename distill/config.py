"""Typed experiment configuration (pydantic). One YAML file in ``configs/`` is one
``ExperimentConfig``; unknown keys, wrong types and impossible values fail before any work
starts, naming the field. Defaults run on a laptop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.core.augment import AugmentConfig
from distill.data.base import DatasetOptions, parse_dataset_options
from distill.core.features import FeatureConfig
from distill.credentials import TRACKING_CREDENTIALS, refuse_credentials
from distill.methods import baselines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    name: str = Field("res8", description="Registered network: res8, res8_narrow, res15, speech_embedding (a teacher on a frozen embedding of human speech), ensemble (a teacher of several networks, options.members), tiny, or your own.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments of the network's builder.")


class ScheduleRange(_Strict):
    start_ms: int = Field(1000, gt=0, description="The teacher's length (the first and longest).")
    stop_ms: int = Field(500, gt=0, description="Last (shortest) student length; start_ms - stop_ms must be a multiple of step_ms.")
    step_ms: int = Field(100, gt=0, description="How much shorter each stage's input is than the previous one's.")

    @model_validator(mode="after")
    def _reaches_stop(self) -> "ScheduleRange":
        self.lengths()
        return self

    def lengths(self) -> list[int]:
        if self.stop_ms > self.start_ms:
            raise ValueError(f"schedule: stop_ms ({self.stop_ms}) must not exceed start_ms ({self.start_ms})")
        if (self.start_ms - self.stop_ms) % self.step_ms:
            raise ValueError(f"schedule: steps of {self.step_ms} ms from {self.start_ms} ms do not reach {self.stop_ms} ms")
        return list(range(self.start_ms, self.stop_ms - 1, -self.step_ms))


class ChainConfig(_Strict):
    lengths_ms: list[int] | None = Field(
        None, min_length=1, description="Input lengths, strictly decreasing: the first is the teacher's (normally the "
                                        "clip length), each later one a student taught by the stage before it "
                                        "(default 1000, 900, …, 500). Give this or schedule, not both.")
    schedule: ScheduleRange | None = Field(None, description="The lengths as start_ms/stop_ms/step_ms instead of a list.")
    self_distill: bool = Field(False, description="Also train a student at the teacher's own length, taught by the "
                                                  "teacher, before the shorter students.")
    crops_per_clip: int = Field(4, ge=1, description="random placement: crops drawn from each training clip per stage "
                                                     "(a stage whose input is the whole clip has one row per clip).")
    crop_placement: Literal["random", "sliding"] = Field(
        "random", description="random: crops_per_clip uniform seeded positions per clip; sliding: every position "
                              "crop_stride_ms apart (the last flush with the clip's end), so shorter crops give more rows.")
    crop_stride_ms: int = Field(100, gt=0, description="sliding placement: the hop between a clip's crops.")
    teacher_view: Literal["native", "pad"] = Field(
        "native", description="How a teacher of length T sees a crop of length L < T: native (the crop as it is) or "
                              "pad (zero-padded to T samples, placed by pad_position).")
    pad_position: Literal["center", "random"] = Field("center", description="teacher_view pad: the crop centred in the "
                                                                            "zeros, or at a seeded random position.")
    baselines: list[str] = Field(
        default_factory=lambda: ["direct", "one_shot"],
        description="Baselines at the final length, on the final student's crops with its epochs: direct (clip "
                    "labels), one_shot (labels of the full-length teacher), or any registered method "
                    "(distill/methods.py).")

    @field_validator("baselines")
    @classmethod
    def _registered(cls, v: list[str]) -> list[str]:
        known = baselines()
        for name in v:
            if name not in known:
                raise ValueError(f"unknown baseline {name!r}; registered baselines: {', '.join(known)}")
        if len(set(v)) < len(v):
            raise ValueError(f"a baseline is named twice in {v}")
        return v

    @field_validator("lengths_ms")
    @classmethod
    def _decreasing(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(x <= 0 for x in v):
            raise ValueError(f"lengths must be positive, got {v}")
        if v is not None and any(b >= a for a, b in zip(v, v[1:])):
            raise ValueError(f"lengths must be strictly decreasing, got {v}")
        return v

    @model_validator(mode="after")
    def _one_schedule(self) -> "ChainConfig":
        if self.lengths_ms is not None and self.schedule is not None:
            raise ValueError("give chain.lengths_ms or chain.schedule, not both")
        if self.schedule is not None:
            self.lengths_ms = self.schedule.lengths()
        elif self.lengths_ms is None:
            self.lengths_ms = [1000, 900, 800, 700, 600, 500]
        if len(self.lengths_ms) < 2 and not self.self_distill:
            raise ValueError(f"lengths {self.lengths_ms}: the first length is the teacher's; add a student length "
                             "after it (or set chain.self_distill: true for a student at the teacher's length)")
        self.schedule = None  # one resolved form: params, fingerprints and stages all see the list
        return self


class LabelsConfig(_Strict):
    mode: Literal["hard", "soft"] = Field("hard", description="hard: teacher argmax + cross-entropy; soft: teacher probabilities + KL.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the teacher's probabilities (and of the soft loss).")
    original_weight: float = Field(0.0, ge=0, le=1, description="Weight of the clip's original label in the loss "
                                                                "(cross-entropy), the teacher's getting 1 - weight.")
    min_confidence: float = Field(0.0, ge=0, lt=1, description="Drop crops whose teacher's top probability (at "
                                                               "temperature 1) is below this; the count is logged.")


class TrainConfig(_Strict):
    epochs: int = Field(8, ge=1, description="Epochs (passes over the stage's dataset) per student and baseline.")
    teacher_epochs: int | None = Field(None, ge=1, description="Epochs of the teacher, passes over the training clips "
                                                               "(default: epochs).")
    batch_size: int = Field(64, ge=1, description="Batch size per worker.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with momentum (Honk's recipe).")
    lr: float = Field(1e-2, gt=0, description="Peak learning rate (one-cycle: warm-up, then cosine decay over the stage).")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd: momentum (Nesterov).")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay (decoupled for adamw, L2 for sgd).")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Data augmentation of every stage and "
                                                                              "baseline alike.")
    keep: Literal["best", "average"] = Field(
        "best", description="The stage's model: best, the epoch with the best validation accuracy (stream); or "
                            "average, its weights averaged over the last average_epochs epochs (no choice on "
                            "validation, so no maximum of noisy readings).")
    average_epochs: int = Field(5, ge=1, description="keep: average: how many of the last epochs are averaged.")
    validate_every: int = Field(1, ge=1, description="Score the validation split after every this many epochs, and "
                                "always after the last. Nothing is trained on it, so the weights are the same at any "
                                "setting; the curves get fewer points (a teacher with frozen encoders spends much of "
                                "each epoch scoring). keep: best chooses among scored epochs, so it needs 1.")
    keep_all_checkpoints: bool = Field(False, description="Keep every epoch's training checkpoint (its weights as "
                                                          "trained and the train state), to study them; by default a "
                                                          "stage keeps two: its kept model's and the last, which a "
                                                          "restart continues from.")
    num_workers: int = Field(1, ge=1, description="Ray Train workers per stage.")
    use_gpu: bool = Field(False, description="Train on GPUs (one per worker).")
    cpus_per_worker: float = Field(1, gt=0, description="CPUs Ray reserves per training worker (also its torch threads).")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast precision of training: bf16 (CPUs or GPUs) or fp16 (GPUs, with gradient scaling).")
    runner: Literal["auto", "local", "actor", "workers"] = Field(
        "auto", description="Where a stage trains. workers: a Ray Train worker group (GPUs, several workers, training "
                            "on another node, surviving a killed worker process; 10-13 s of start-up a stage). local: "
                            "Ray Train's local mode, in the driver's process, with no worker start-up; the platform "
                            "writes each epoch's checkpoint and restarts from the last one. actor: the same local mode "
                            "in one Ray actor per worker started for the stage on the driver's node (about 3 s for "
                            "one, 3.5 s for two; several join one process group, each with an equal shard), all "
                            "started again if one dies. auto, on a one-node cluster without GPUs: one worker local, or "
                            "actor where the driver is an actor (a pld sweep's Tune trials); several workers actor. "
                            "Else workers. One worker trains the same weights in each runner.")
    max_failures: int = Field(1, ge=0, description="Training failures a stage survives: Ray Train restarts the "
                                                   "workers (runner local: the loop), which continue from the last "
                                                   "epoch's checkpoint.")
    resource_wait_s: float = Field(600, gt=0, description="How long a stage waits for the cluster to place its training "
                                   "workers (an autoscaler adding nodes) before it fails, saying what it waited for; "
                                   "after 10 s of waiting it says so on the console.")

    @model_validator(mode="after")
    def _best_needs_every_epoch_scored(self) -> "TrainConfig":
        if self.keep == "best" and self.validate_every > 1:
            raise ValueError(f"train.validate_every: {self.validate_every} leaves epochs unscored, and keep: best "
                             "chooses the best-scored epoch; set keep: average (or validate_every: 1)")
        return self

    def resolved_runner(self, *, one_node: bool, client: bool = False, in_actor: bool = False) -> str:
        """``runner``, with auto resolved: on a one-node cluster without GPUs, one worker trains in
        the driver (``local``), or, when the driver is itself an actor, in one actor of its own;
        several workers in as many actors (``actor``); anything else in a Ray Train worker group
        (``workers``). ``client``: the driver is a Ray Client (ray://), not on the cluster."""
        if self.runner != "auto":
            return self.runner
        if self.use_gpu or client or not one_node:
            return "workers"
        # several processes on this node: actors, without a worker group's helpers; a Tune trial
        # (pld sweep) is an actor, where Ray Train's local mode refuses ray.train's API
        return "actor" if self.num_workers > 1 or in_actor else "local"

    @model_validator(mode="after")
    def _local_is_one_cpu_process(self) -> "TrainConfig":
        if self.runner == "local" and (self.num_workers > 1 or self.use_gpu):
            raise ValueError("train.runner: local trains in the driver's one process on its CPUs; set runner: "
                             "actor for several workers on the driver's node, or workers (or auto) for GPUs")
        if self.runner == "actor" and self.use_gpu:
            raise ValueError("train.runner: actor trains on the driver's node's CPUs; set runner: workers (or auto) "
                             "for GPUs")
        return self


class StageLabels(_Strict):
    """``labels`` keys a stage may set for itself (unset: the top-level ``labels`` section's)."""
    mode: Literal["hard", "soft"] | None = None
    temperature: float | None = Field(None, gt=0)
    original_weight: float | None = Field(None, ge=0, le=1)
    min_confidence: float | None = Field(None, ge=0, lt=1)


class StageTrain(_Strict):
    """``train`` keys a stage may set for itself (unset: the top-level ``train`` section's). How
    and where it trains (workers, GPUs, runner, retries) stays the chain's."""
    optimizer: Literal["adamw", "sgd"] | None = None
    lr: float | None = Field(None, gt=0)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    keep: Literal["best", "average"] | None = None
    average_epochs: int | None = Field(None, ge=1)
    validate_every: int | None = Field(None, ge=1)


class StageRecipe(_Strict):
    """What one stage, or a group of them, does differently from the chain's sections (as
    torchdistill's per-stage configs): its epochs, its labels and loss, its optimisation."""
    epochs: int | None = Field(None, ge=1, description="Passes over the stage's dataset.")
    labels: StageLabels = Field(default_factory=StageLabels)
    train: StageTrain = Field(default_factory=StageTrain)


# a stage kind → its group's key in `stages:` (the other keys name one stage)
STAGE_GROUPS = {"teacher": "teacher", "student": "students", "baseline": "baselines"}


class RelabelConfig(_Strict):
    batch_size: int = Field(256, ge=1, description="Crops per teacher forward pass.")
    actors: int = Field(1, ge=1, description="GPU relabeling: teacher actors in the Ray Data actor pool. On CPUs the "
                        "teacher runs in Ray Data tasks (fused with cropping) on every free CPU instead.")
    cpus_per_actor: float = Field(1, gt=0, description="CPUs per teacher actor or task (also its torch threads).")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast precision of the teacher's forward pass: bf16 (CPUs or GPUs) or fp16 (GPUs).")
    gpus_per_actor: float = Field(0, ge=0, description="GPUs per teacher actor (fractions allowed); > 0 selects the actor pool.")


class EvalConfig(_Strict):
    stream_hop_ms: int = Field(100, gt=0, description="Hop of the sliding window of the stream protocol.")
    batch_size: int = Field(256, ge=1, description="Windows per forward pass during evaluation.")
    held_out_parts: bool = Field(True, description="After the chain, evaluate every stage on the corpus's held-out "
                                                   "parts that exist (a pld data synth corpus: unseen accents, the "
                                                   "unseen-engine validation and test parts), logged as "
                                                   "<part>_acc_<protocol>.")


class StorageConfig(_Strict):
    root: str = Field("pld-runs", description="Where every chain writes its datasets, manifests, models and checkpoints: "
                                             "a directory (on a cluster, one every node mounts at the same path) or a "
                                             "URI pyarrow.fs opens (s3://bucket/prefix, gs://bucket/prefix).")

    @field_validator("root")
    @classmethod
    def _no_credentials(cls, root: str) -> str:
        return refuse_credentials(root, "the URI", "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the store's own "
                                                   "variables) in the environment")


class TrackingConfig(_Strict):
    uri: str | None = Field(None, description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db).")
    experiment: str = Field("pld", description="MLflow experiment name.")
    max_retries: int = Field(7, ge=0, le=10, description="Retries of a request to a tracking server that does not "
                                                         "answer (MLflow's HTTP retry; also $MLFLOW_HTTP_REQUEST_MAX_RETRIES).")
    backoff_factor: int = Field(2, ge=0, le=120, description="Exponential back-off between those retries, in s "
                                                                 "(waits 0, 2f, 4f, … up to 120 s; the defaults ride "
                                                                 "out about 4 minutes of outage per request).")

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, uri: str | None) -> str | None:
        return refuse_credentials(uri, "the URI", TRACKING_CREDENTIALS)


class RayConfig(_Strict):
    address: str | None = Field(None, description="Existing cluster to join (default: $RAY_ADDRESS, else a local Ray).")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started when no address is given.")
    autoscaling: bool = Field(False, description="The cluster can still add nodes (Ray autoscaler, KubeRay): a training "
                              "worker that no current node can hold is let through the pre-flight check, and the "
                              "stage waits for it at most train.resource_wait_s.")

    def resolved_address(self, override: str | None = None) -> str | None:
        """The cluster a chain joins: --address, else ``address``, else $RAY_ADDRESS; None: a local Ray."""
        return override or self.address or os.environ.get("RAY_ADDRESS")


class ExperimentConfig(_Strict):
    name: str = Field("pld", description="Name of the chain (MLflow parent run name).")
    seed: int = Field(0, description="Seed of crops, initialisation and data order.")
    data: DatasetOptions = Field(default_factory=lambda: parse_dataset_options({}),
                                 description="Dataset: a registry name plus that dataset's options.")
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    teacher_model: ModelConfig | None = Field(
        None, description="The teacher's network (the first stage), when it is not the students' and baselines' "
                          "`model` (a bigger teacher, as in torchtune's knowledge-distillation configs); "
                          "default: model.")
    chain: ChainConfig = Field(default_factory=ChainConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    stages: dict[str, StageRecipe] = Field(
        default_factory=dict, description="Per-stage recipes over the sections above: `teacher`, `students` (every PLD "
                                          "student), `baselines`, or one stage by name (`student_500ms`, "
                                          "`direct_500ms`), which wins over its group; e.g. "
                                          "`stages: {student_500ms: {epochs: 40, labels: {temperature: 4}}}`.")
    relabel: RelabelConfig = Field(default_factory=RelabelConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @field_validator("data", mode="before")
    @classmethod
    def _dataset(cls, v: Any) -> DatasetOptions:
        return parse_dataset_options(v)

    @model_validator(mode="after")
    def _fits(self) -> "ExperimentConfig":
        if self.chain.lengths_ms[0] > self.data.clip_ms:
            raise ValueError(f"chain.lengths_ms: {self.chain.lengths_ms[0]} ms is longer than data.clip_ms ({self.data.clip_ms} ms)")
        if self.train.precision == "fp16" and not self.train.use_gpu:
            raise ValueError("train.precision: fp16 needs train.use_gpu: true (CPUs: use bf16 or fp32)")
        if self.relabel.precision == "fp16" and not self.relabel.gpus_per_actor:
            raise ValueError("relabel.precision: fp16 needs relabel.gpus_per_actor > 0 (CPUs: use bf16 or fp32)")
        if self.features.sample_rate != self.data.sample_rate:
            raise ValueError(f"features.sample_rate ({self.features.sample_rate}) must equal data.sample_rate ({self.data.sample_rate})")
        from distill.stages import plan_chain, stage_train  # the plan names the stages (stages.py imports this module)

        plan = plan_chain(self)
        names = [s.name for s in plan]
        for stage in plan:
            self._check_network(stage)
            train = stage_train(self.train, stage)  # a stage's own keep or validate_every over the chain's
            if train.keep == "best" and train.validate_every > 1:
                raise ValueError(f"stages: {stage.name} would keep its best-scored epoch with validate_every: "
                                 f"{train.validate_every}, which leaves epochs unscored; set its keep: average "
                                 "(or validate_every: 1)")
        for key in self.stages:
            if key not in names and key not in STAGE_GROUPS.values():
                raise ValueError(f"stages.{key}: no such stage in this chain; its stages are {', '.join(names)}, and "
                                 f"the groups {', '.join(STAGE_GROUPS.values())}")
        return self

    def _check_network(self, stage: Any) -> None:
        """A stage's network: its options checked and their defaults written in; and a network with
        its own front end cannot take the augmentations that act on the log-mel."""
        from distill.core.models import MODELS

        net, augment = self.model_for(stage.kind), self.train.augment
        try:
            builder = MODELS.get(net.name)
        except KeyError:
            return  # an unknown name is refused, with the registered ones, where the network is built
        field = "teacher_model" if net is self.teacher_model else "model"
        if hasattr(builder, "check_options"):  # options a builder can check without building (an ensemble's members)
            try:
                builder.check_options(net.options)
            except ValueError as exc:
                raise ValueError(f"{field}.options: {exc}") from None
        if hasattr(builder, "option_defaults"):  # resolved here, so config.json and model.json name them
            net.options = {**builder.option_defaults(), **net.options}
        waveform = getattr(builder, "takes_waveform", False)
        if waveform and augment.enabled and (augment.spec_time_masks or augment.spec_freq_masks
                                             or augment.warp_prob > 0 or augment.mixstyle_prob > 0):
            raise ValueError(f"stage {stage.name}: model {net.name} takes the waveform, and SpecAugment, the frequency "
                             "warp and Freq-MixStyle act on the log-mel it does not read: set "
                             "train.augment.spec_time_masks and spec_freq_masks to 0, warp_prob and mixstyle_prob to 0")

    def model_for(self, kind: str) -> ModelConfig:
        """The network of a stage of this kind (teacher, student or baseline)."""
        return self.teacher_model if kind == "teacher" and self.teacher_model is not None else self.model

    def flat_params(self) -> dict[str, str]:
        """The resolved config as dotted keys, for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = str(value)

        walk("", self.model_dump(mode="json"))
        return out


class ConfigError(ValueError):
    """A config that cannot run; the message names the file and the fields."""


def _allowed(raw: dict[str, Any], error: dict) -> str:
    """For an unknown key, the keys that section does accept."""
    if error["type"] != "extra_forbidden":
        return ""
    model: Any = ExperimentConfig
    for part in error["loc"][:-1]:
        if part == "data" and model is ExperimentConfig:
            try:
                model = type(parse_dataset_options({k: v for k, v in raw.get("data", {}).items() if k in ("name", "path")}
                                                   | {"path": "."}))
            except (ValueError, TypeError):
                return ""
            continue
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return ""
    return f" (allowed: {', '.join(model.model_fields)})"


def _where(loc: str, overrides: dict[str, Any] | None, flag: str | None) -> str:
    """A validation error's field, as the user wrote it: ``--set KEY`` (``flag``) when a ``--set``
    put it there."""
    for key in (overrides or {}) if flag else ():
        if loc == key or loc.startswith(key + ".") or key.startswith(loc + "."):
            return f"{flag} {key}" + ("" if loc == key else f" ({loc})")
    return loc or "(top level)"


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                overrides_flag: str | None = None) -> ExperimentConfig:
    """The config at ``path`` with dotted ``overrides`` over it; ``overrides_flag`` (``--set``):
    the command-line flag they came from, which an error in one of them names."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}  # safe_load: never constructs objects
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a YAML text file") from None
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"{path}: not valid YAML: {str(exc) or type(exc).__name__}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
    for key, value in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{_where('.'.join(str(x) for x in e['loc']), overrides, overrides_flag)}: "
                 f"{e['msg'].removeprefix('Value error, ')}{_allowed(raw, e)}" for e in exc.errors()]
        raise ConfigError(f"{path or 'config'}: invalid config\n  " + "\n  ".join(lines)) from None
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None
