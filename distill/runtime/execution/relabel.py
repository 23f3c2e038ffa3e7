"""The relabel step of a stage, on Ray Data: seeded crops of every training clip (K random
ones, or every position of a sliding window), labelled by the previous stage's model — which
sees each crop as it is or zero-padded to its own input length — written as Parquet with
provenance columns; crops the teacher is unsure of can be dropped. A row references its crop
(clip id, offset, length) instead of holding its audio: ``read_training_crops`` cuts the crops
from the sealed source when a stage reads them, on whichever node reads them, so a stage writes
labels, not a copy of the audio. With no teacher, crops keep
their clip's label (the teacher stage and the ``direct`` baseline). The manifest says what the
relabeling did to the data: agreement with the clips' own labels and the share turned into
silence or unknown.

On CPUs the teacher runs in Ray Data tasks fused with cropping, each worker
process keeping the teacher it loaded (``_cached_teacher``); with GPUs, on an actor pool, one
model per actor on its GPU (docs/design-notes.md: why tasks on CPUs)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow.parquet as pq
import ray.data

from distill.names import MANIFEST
from distill.core.crops import crop_batch, cut_crops, pad_to
from distill.core.labels import LabelSpec, label_stats
from distill.config import RelabelConfig
from distill.runtime.infra import storage
from distill.runtime.infra.manifest import IntegrityError, read_manifest, verify
from distill.runtime.execution.source import read_split
from distill.stages import StageSpec

COLUMNS = ("clip_id", "crop_index", "offset", "length", "source_label", "source_label_index", "speaker",
           "teacher_label", "teacher_label_index", "teacher_probs", "teacher_confidence", "teacher_run_id")
FORMAT = "crop-references/1"  # the manifest's "format": rows reference crops of the source (no waveforms)
TRAIN_COLUMNS = ("teacher_label_index", "teacher_probs", "source_label_index")  # what a stage trains on, beside the crop


def label_with_clip_labels(batch: dict[str, np.ndarray], n_classes: int) -> dict[str, np.ndarray]:
    n = len(batch["clip_id"])
    batch["teacher_label"] = batch["source_label"]
    batch["teacher_label_index"] = batch["source_label_index"]
    probs = np.zeros((n, n_classes), dtype=np.float32)
    probs[np.arange(n), batch["source_label_index"]] = 1.0
    batch["teacher_probs"] = probs
    batch["teacher_confidence"] = np.ones(n, dtype=np.float32)
    batch["teacher_run_id"] = np.full(n, "", dtype=object)
    return batch


@dataclass(frozen=True)
class LabelJob:
    """How a teacher labels crops: which run it is, its precision, the stage's labels (how the
    teacher reads a crop, its temperature, the confidence kept) and the seed of random padding."""
    run_id: str
    precision: str = "fp32"
    labels: LabelSpec = LabelSpec()
    seed: int = 0


def _apply_teacher(batch: dict[str, np.ndarray], model, labels: np.ndarray, device, teacher_samples: int,
                   job: LabelJob) -> dict[str, np.ndarray]:
    import torch

    from distill.core.labels import keep_confident, teacher_labels
    from distill.core.models import autocast

    spec = job.labels
    x = batch["waveform"]
    if spec.view == "pad" and x.shape[1] < teacher_samples:
        keys = [f"{c}/{i}" for c, i in zip(batch["clip_id"], batch["crop_index"])]
        x = pad_to(x, teacher_samples, spec.pad_position, job.seed, keys)
    with torch.inference_mode(), autocast(device, job.precision):
        logits = model(torch.from_numpy(x).to(device))
    out = teacher_labels(logits.float(), spec.temperature)
    index = out.label.cpu().numpy()
    batch["teacher_label"] = labels[index]
    batch["teacher_label_index"] = index.astype(np.int64)
    batch["teacher_probs"] = out.probs.cpu().numpy().astype(np.float32)
    batch["teacher_confidence"] = out.confidence.cpu().numpy().astype(np.float32)
    batch["teacher_run_id"] = np.full(len(index), job.run_id, dtype=object)
    if spec.min_confidence > 0:
        keep = keep_confident(batch["teacher_confidence"], spec.min_confidence)
        batch = {k: v[keep] for k, v in batch.items()}
    return batch


_TEACHERS: dict[tuple, tuple] = {}  # per worker process: (model dir, weights mtime) → (model, labels, input samples)


def _cached_teacher(model_dir: str):
    from distill.core.checkpoint import WEIGHTS, load_model_dir

    key = (model_dir, storage.version(storage.join(model_dir, WEIGHTS)))
    if key not in _TEACHERS:
        _TEACHERS.clear()  # a chain moves on from teacher to teacher: keep only the newest
        model, spec = load_model_dir(storage.local_copy(model_dir))
        _TEACHERS[key] = (model, np.array(spec.labels, dtype=object), spec.input_samples)
    return _TEACHERS[key]


def label_with_teacher(batch: dict[str, np.ndarray], model_dir: str, job: LabelJob, threads: int) -> dict[str, np.ndarray]:
    """Ray Data task UDF (CPU): label a batch of crops with the teacher cached in this process."""
    import torch

    torch.set_num_threads(max(1, threads))  # the CPUs Ray gave this task, whatever the process ran before
    model, labels, teacher_samples = _cached_teacher(model_dir)
    return _apply_teacher(batch, model, labels, torch.device("cpu"), teacher_samples, job)


class TeacherLabeler:
    """Ray Data actor (GPU relabeling): loads the teacher once onto its GPU, then labels batches of crops."""

    def __init__(self, model_dir: str, job: LabelJob, threads: int, use_gpu: bool):
        import torch

        from distill.core.checkpoint import load_model_dir
        from distill.runtime.execution.evaluate import worker_device

        torch.set_num_threads(max(1, threads))
        self.device = worker_device(use_gpu, "relabel.gpus_per_actor")
        self.model, spec = load_model_dir(storage.local_copy(model_dir), map_location=self.device)
        self.model.to(self.device)
        self.labels = np.array(spec.labels, dtype=object)
        self.teacher_samples = spec.input_samples
        self.job = job

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _apply_teacher(batch, self.model, self.labels, self.device, self.teacher_samples, self.job)


def dataset_label_stats(data_dir: str | Path, labels: list[str]) -> dict:
    """``label_stats`` of a written distilled dataset (two columns read, not the waveforms)."""
    fs, path = storage.filesystem(data_dir)
    table = pq.read_table(path, filesystem=fs, columns=["source_label_index", "teacher_label_index"])
    return label_stats(table.column("source_label_index").to_numpy(), table.column("teacher_label_index").to_numpy(),
                       labels)


class Teacher(NamedTuple):
    """The model that labels a stage's crops: its checkpoint directory and its MLflow run."""
    model_dir: str
    run_id: str


def relabel_crops(source_dir: str | Path, out_dir: str | Path, stage: StageSpec, relabel: RelabelConfig,
                  teacher: Teacher | None = None, labels: list[str] | None = None) -> dict:
    """Write the distilled dataset of one stage to ``out_dir/data``: the crops ``stage`` asks
    for, labelled by ``teacher`` (None: the clips' own labels) as ``stage.labels`` says. Returns
    its manifest, written last to ``out_dir/manifest.json`` (beside the Parquet, so any Parquet
    reader can open the data directory); with ``labels`` it holds ``label_stats``."""
    data_dir = storage.join(out_dir, "data")
    storage.remove_tree(data_dir)  # Ray's writer adds files to a directory: never mix two runs' rows
    started = time.perf_counter()
    source = json.loads(storage.read_text(storage.join(source_dir, MANIFEST)))
    crop_samples, stride_samples = stage.input_samples, stage.stride_samples
    if (stage.placement == "whole") != (crop_samples == source["clip_samples"]):
        raise ValueError(f"{stage.name}: placement {stage.placement!r} with {crop_samples}-sample crops of "
                         f"{source['clip_samples']}-sample clips (plan the stage with the source's clip length)")
    k = stage.crops_per_clip  # the plan's count: 1 for the whole clip, every position when sliding
    threads = int(max(1, relabel.cpus_per_actor))
    job = LabelJob(teacher.run_id, relabel.precision, stage.labels, stage.seed) if teacher else None
    ds = read_split(source_dir, "train").select_columns(["clip_id", "label", "label_index", "speaker", "waveform"])
    # Ray Data reserves every running operator one task's CPUs: the read held one of 2 CPUs while
    # the teacher labelled on the other alone (docs/design-notes.md: no per-operator reservation).
    ds.context.op_resource_reservation_enabled = False
    ds = ds.map_batches(crop_batch, batch_format="numpy", batch_size=64,
                        fn_kwargs=dict(crop_samples=crop_samples, k=k, seed=stage.seed, stride_samples=stride_samples))
    if teacher is None:
        ds = ds.map_batches(label_with_clip_labels, batch_format="numpy",
                            fn_kwargs=dict(n_classes=len(source["labels"])))
    elif not relabel.gpus_per_actor:
        # Tasks: each with ``cpus_per_actor`` CPUs (and as many torch threads), on every free CPU.
        ds = ds.map_batches(
            label_with_teacher, batch_format="numpy", batch_size=relabel.batch_size, num_cpus=relabel.cpus_per_actor,
            fn_kwargs=dict(model_dir=str(teacher.model_dir), job=job, threads=threads))
    else:
        ds = ds.map_batches(
            TeacherLabeler, batch_format="numpy", batch_size=relabel.batch_size,
            compute=ray.data.ActorPoolStrategy(size=relabel.actors), num_cpus=relabel.cpus_per_actor,
            num_gpus=relabel.gpus_per_actor,
            fn_constructor_kwargs=dict(model_dir=str(teacher.model_dir), job=job, threads=threads, use_gpu=True))
    ds.select_columns(list(COLUMNS)).write_parquet(data_dir)
    clips = source["rows"].get("train", 0)
    min_confidence = stage.labels.min_confidence if teacher else 0.0
    if not storage.list_files(data_dir):  # Ray writes no file for a dataset without rows
        raise ValueError(f"{out_dir}: no crops left to train on: "
                         + (f"labels.min_confidence {min_confidence} dropped all {clips * k} crops "
                            "(the teacher is less sure than that of every crop); lower it"
                            if min_confidence else f"the source has {clips} training clips"))
    fs, path = storage.filesystem(data_dir)
    written = pq.ParquetDataset(path, filesystem=fs)  # footers only: no Ray job to count rows
    rows = sum(f.metadata.num_rows for f in written.fragments)
    manifest = {
        "rows": rows,
        "crops": clips * k,
        "dropped_low_confidence": clips * k - rows,
        "schema": {field.name: str(field.type) for field in written.schema},
        **dataset_recipe(stage, teacher),
        "teacher_dir": str(teacher.model_dir) if teacher else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if labels is not None:
        manifest["label_stats"] = dataset_label_stats(data_dir, labels)
    storage.write_text(storage.join(out_dir, MANIFEST), json.dumps(manifest, indent=2))
    return manifest


def dataset_recipe(stage: StageSpec, teacher: Teacher | None) -> dict:
    """What a stage's distilled dataset is made of, as its manifest records it (and as a resumed
    chain checks it before reusing the dataset)."""
    spec = stage.labels
    return {"format": FORMAT, "crop_samples": stage.input_samples, "crops_per_clip": stage.crops_per_clip, "placement": stage.placement,
            "stride_samples": stage.stride_samples,
            "teacher_view": {"mode": spec.view, "pad_position": spec.pad_position} if teacher else None,
            "min_confidence": spec.min_confidence if teacher else 0.0, "temperature": spec.temperature,
            "seed": stage.seed, "teacher_run_id": teacher.run_id if teacher else ""}


def cut_referenced_crops(batch: dict[str, np.ndarray], refs: dict[str, np.ndarray], spans: dict[str, tuple[int, int]],
                         order: np.ndarray, crop_samples: int) -> dict[str, np.ndarray]:
    """Source clips → the crops the distilled rows reference in them (``refs``, row ``order[i]``
    for ``i`` in a clip's ``spans``), clip by clip in the batch's order: the distilled rows'
    own order when the source is read in order."""
    ranges = [spans.get(str(c), (0, 0)) for c in batch["clip_id"]]
    rows = np.concatenate([order[lo:hi] for lo, hi in ranges]) if ranges else np.zeros(0, np.int64)
    clip_rows = np.repeat(np.arange(len(ranges)), [hi - lo for lo, hi in ranges])
    waves = batch["waveform"]
    out = {"waveform": cut_crops(waves, refs["offset"][rows], crop_samples, clip_rows) if len(rows)
           else np.zeros((0, crop_samples), dtype=waves.dtype)}
    return {**out, **{name: column[rows] for name, column in refs.items() if name != "offset"}}


def _numpy_column(table, name: str) -> np.ndarray:
    return table.column(name).combine_chunks().to_numpy(zero_copy_only=False)  # tensor columns: (rows, …)


def check_crop_references(manifest: dict, stage_dir: str | Path, source_dir: str | Path,
                          source_sha256: str | None) -> None:
    """A distilled dataset's references can be cut from ``source_dir``: the dataset is of this
    format and was made from the source that is there (``source_sha256``: its verified hash)."""
    if manifest.get("format") != FORMAT:
        raise IntegrityError(f"{stage_dir}: a distilled dataset of format {manifest.get('format')!r}, not "
                             f"{FORMAT!r} (written by an older pld, with the audio in it): delete the directory "
                             "and run the stage again (`pld run --resume` relabels it)")
    made_from = manifest.get("source_sha256")
    if not made_from:
        return
    if source_sha256 is None:
        verify(source_dir, {"content_sha256": made_from})
    elif source_sha256 != made_from:
        raise IntegrityError(f"{stage_dir}: made from the source {made_from[:12]}…, but the chain's source "
                             f"{source_dir} is {source_sha256[:12]}…; delete the directory and run the stage again")


def read_training_crops(stage_dir: str | Path, source_dir: str | Path, columns: tuple[str, ...] = TRAIN_COLUMNS,
                        source_sha256: str | None = None) -> ray.data.Dataset:
    """A stage's training inputs: ``waveform`` (each distilled row's crop, cut from the source's
    training clips as Ray Data reads them) and ``columns`` of the row, in the rows' order. The
    references are read on the driver (labels only: small); the audio never is. A dataset sealed
    with its source's hash is refused if the source no longer has it: ``source_sha256`` is the
    hash of a source the caller has verified already (a chain, once, when it opened it), which
    saves hashing the whole source again for every stage; without it the source is hashed here."""
    manifest = read_manifest(stage_dir) or {}
    check_crop_references(manifest, stage_dir, source_dir, source_sha256)
    fs, path = storage.filesystem(storage.join(stage_dir, "data"))
    table = pq.read_table(path, filesystem=fs, columns=["clip_id", "offset", "length", *columns])
    lengths = np.unique(_numpy_column(table, "length"))
    if len(lengths) != 1:
        raise IntegrityError(f"{stage_dir}: crops of {len(lengths)} lengths ({lengths[:4].tolist()}); a stage's "
                             "crops all have its input length — delete the directory and run the stage again")
    clip_ids = _numpy_column(table, "clip_id").astype(str)
    order = np.argsort(clip_ids, kind="stable")  # each clip's rows together, in their written order
    names, first, counts = np.unique(clip_ids[order], return_index=True, return_counts=True)
    spans = {str(n): (int(lo), int(lo + k)) for n, lo, k in zip(names, first, counts)}
    refs = {name: _numpy_column(table, name) for name in ("offset", *columns)}
    return read_split(source_dir, "train").select_columns(["clip_id", "waveform"]).map_batches(
        cut_referenced_crops, batch_format="numpy", batch_size=None,
        fn_kwargs=dict(refs=refs, spans=spans, order=order, crop_samples=int(lengths[0])))
