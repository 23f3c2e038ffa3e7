"""Relabel stage: seeded crops of every training clip (K random ones, or every position of a
sliding window), labelled by the previous stage's model — which sees each crop as it is or
zero-padded to its own input length — written as Parquet with provenance columns; crops the
teacher is unsure of can be dropped. With no teacher, crops keep their clip's label (the
teacher stage and the ``direct`` baseline). The manifest says what the relabeling did to the
data: agreement with the clips' own labels and the share turned into silence or unknown.

On CPUs the teacher runs in Ray Data *tasks* fused with reading and cropping, and each
worker process keeps the models it has loaded (``_cached_teacher``): Ray reuses its worker
processes from stage to stage, so a stage pays neither a process start nor a torch import,
and a model is loaded once per process. (An actor pool, the earlier design, starts a fresh
process per stage: ≈19 s of a ≈20 s relabel stage on 2 cores was that start-up.) With GPUs
the teacher runs on an actor pool, one model per actor on its GPU."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray.data

from distill.crops import cut_crops, pad_to, sample_crop_offsets, sliding_crop_offsets
from distill.data.base import SILENCE, UNKNOWN
from distill.runtime import storage
from distill.runtime.source import read_split

MANIFEST = "manifest.json"
COLUMNS = ("clip_id", "crop_index", "offset", "length", "source_label", "source_label_index", "speaker",
           "teacher_label", "teacher_label_index", "teacher_probs", "teacher_confidence", "teacher_run_id", "waveform")


def crop_batch(batch: dict[str, np.ndarray], crop_samples: int, k: int, seed: int,
               stride_samples: int | None = None) -> dict[str, np.ndarray]:
    """Clips → crops (rows of the distilled dataset, still unlabelled by a teacher): ``k``
    random ones per clip, or with ``stride_samples`` every position of a sliding window."""
    waves = batch["waveform"]
    n, clip_samples = waves.shape
    if stride_samples:
        offsets = np.tile(sliding_crop_offsets(clip_samples, crop_samples, stride_samples), (n, 1))
        k = offsets.shape[1]
    else:
        offsets = np.stack([sample_crop_offsets(str(c), clip_samples, crop_samples, k, seed) for c in batch["clip_id"]])
    rows = np.repeat(np.arange(n), k)
    flat = offsets.reshape(-1)
    crops = cut_crops(waves, flat, crop_samples, rows)
    return {
        "clip_id": batch["clip_id"][rows],
        "crop_index": np.tile(np.arange(k, dtype=np.int32), n),
        "offset": flat,
        "length": np.full(n * k, crop_samples, dtype=np.int64),
        "source_label": batch["label"][rows],
        "source_label_index": batch["label_index"][rows],
        "speaker": batch["speaker"][rows],
        "waveform": crops,
    }


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
class TeacherView:
    """How the teacher reads a crop shorter than its own input and which of its labels are kept."""
    mode: str = "native"  # native: the crop as it is; pad: zero-padded to the teacher's input length
    pad_position: str = "center"  # pad: center, or random (seeded per crop)
    seed: int = 0
    min_confidence: float = 0.0  # crops labelled with less confidence are dropped


def _apply_teacher(batch: dict[str, np.ndarray], model, labels: np.ndarray, device, run_id: str,
                   temperature: float, precision: str = "fp32", view: TeacherView = TeacherView(),
                   teacher_samples: int = 0) -> dict[str, np.ndarray]:
    import torch

    from distill.labels import keep_confident, teacher_labels
    from distill.models import autocast

    x = batch["waveform"]
    if view.mode == "pad" and x.shape[1] < teacher_samples:
        keys = [f"{c}/{i}" for c, i in zip(batch["clip_id"], batch["crop_index"])]
        x = pad_to(x, teacher_samples, view.pad_position, view.seed, keys)
    with torch.inference_mode(), autocast(device, precision):
        logits = model(torch.from_numpy(x).to(device))
    out = teacher_labels(logits.float(), temperature)
    index = out.label.cpu().numpy()
    batch["teacher_label"] = labels[index]
    batch["teacher_label_index"] = index.astype(np.int64)
    batch["teacher_probs"] = out.probs.cpu().numpy().astype(np.float32)
    batch["teacher_confidence"] = out.confidence.cpu().numpy().astype(np.float32)
    batch["teacher_run_id"] = np.full(len(index), run_id, dtype=object)
    if view.min_confidence > 0:
        keep = keep_confident(batch["teacher_confidence"], view.min_confidence)
        batch = {k: v[keep] for k, v in batch.items()}
    return batch


_TEACHERS: dict[tuple, tuple] = {}  # per worker process: (model dir, weights mtime) → (model, labels, input samples)


def _cached_teacher(model_dir: str):
    from distill.checkpoint import WEIGHTS, load_model_dir

    key = (model_dir, storage.version(storage.join(model_dir, WEIGHTS)))
    if key not in _TEACHERS:
        _TEACHERS.clear()  # a chain moves on from teacher to teacher: keep only the newest
        model, spec = load_model_dir(storage.local_copy(model_dir))
        _TEACHERS[key] = (model, np.array(spec.labels, dtype=object), spec.input_samples)
    return _TEACHERS[key]


def label_with_teacher(batch: dict[str, np.ndarray], model_dir: str, teacher_run_id: str, temperature: float,
                       threads: int, precision: str = "fp32", view: TeacherView = TeacherView()) -> dict[str, np.ndarray]:
    """Ray Data task UDF (CPU): label a batch of crops with the teacher cached in this process."""
    import torch

    torch.set_num_threads(max(1, threads))  # the CPUs Ray gave this task, whatever the process ran before
    model, labels, teacher_samples = _cached_teacher(model_dir)
    return _apply_teacher(batch, model, labels, torch.device("cpu"), teacher_run_id, temperature, precision, view,
                          teacher_samples)


class TeacherLabeler:
    """Ray Data actor (GPU relabeling): loads the teacher once onto its GPU, then labels batches of crops."""

    def __init__(self, model_dir: str, teacher_run_id: str, temperature: float, threads: int, use_gpu: bool,
                 precision: str = "fp32", view: TeacherView = TeacherView()):
        import torch

        from distill.checkpoint import load_model_dir

        torch.set_num_threads(max(1, threads))
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.model, spec = load_model_dir(storage.local_copy(model_dir), map_location=self.device)
        self.model.to(self.device)
        self.labels = np.array(spec.labels, dtype=object)
        self.teacher_samples = spec.input_samples
        self.run_id, self.temperature, self.precision, self.view = teacher_run_id, temperature, precision, view

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _apply_teacher(batch, self.model, self.labels, self.device, self.run_id, self.temperature,
                              self.precision, self.view, self.teacher_samples)


def label_stats(data_dir: str | Path, labels: list[str]) -> dict:
    """What the relabeling did to the data: the share of crops whose teacher label is the
    clip's own, and the shares of crops of other classes the teacher turned into silence or
    unknown (the word is not in the crop, or not recognisably)."""
    fs, path = storage.filesystem(data_dir)
    table = pq.read_table(path, filesystem=fs, columns=["source_label_index", "teacher_label_index"])
    source = table.column("source_label_index").to_numpy()
    teacher = table.column("teacher_label_index").to_numpy()
    out = {"agreement": float((source == teacher).mean()) if len(source) else float("nan")}
    for name, key in ((SILENCE, "to_silence"), (UNKNOWN, "to_unknown")):
        if name in labels:
            i = labels.index(name)
            other = source != i
            out[key] = float((teacher[other] == i).mean()) if other.any() else 0.0
    return out


def relabel_crops(source_dir: str | Path, out_dir: str | Path, *, crop_samples: int, crops_per_clip: int, seed: int,
                  n_classes: int, teacher_dir: str | None = None, teacher_run_id: str = "", temperature: float = 1.0,
                  batch_size: int = 256, actors: int = 1, cpus_per_actor: float = 1, gpus_per_actor: float = 0,
                  precision: str = "fp32", stride_samples: int | None = None, view: TeacherView = TeacherView(),
                  labels: list[str] | None = None) -> dict:
    """Write the distilled dataset of one stage to ``out_dir/data``; returns its manifest,
    written last to ``out_dir/manifest.json`` (beside the Parquet, so any Parquet reader can
    open the data directory). ``stride_samples`` selects sliding crops; ``view`` how the
    teacher reads them; with ``labels`` the manifest holds ``label_stats``."""
    data_dir = storage.join(out_dir, "data")
    storage.remove_tree(data_dir)  # Ray's writer adds files to a directory: never mix two runs' rows
    started = time.perf_counter()
    source = json.loads(storage.read_text(storage.join(source_dir, MANIFEST)))
    if crop_samples == source["clip_samples"]:
        crops_per_clip, stride_samples = 1, None  # a crop as long as the clip is the clip: one row per clip
    ds = read_split(source_dir, "train").select_columns(["clip_id", "label", "label_index", "speaker", "waveform"])
    ds = ds.map_batches(crop_batch, batch_format="numpy", batch_size=64,
                        fn_kwargs=dict(crop_samples=crop_samples, k=crops_per_clip, seed=seed, stride_samples=stride_samples))
    if teacher_dir is None:
        ds = ds.map_batches(label_with_clip_labels, batch_format="numpy", fn_kwargs=dict(n_classes=n_classes))
    elif not gpus_per_actor:
        # Tasks: at most ``actors`` at a time, each with ``cpus_per_actor`` CPUs (and as many torch threads).
        ds = ds.map_batches(
            label_with_teacher, batch_format="numpy", batch_size=batch_size, num_cpus=cpus_per_actor,
            fn_kwargs=dict(model_dir=str(teacher_dir), teacher_run_id=teacher_run_id, temperature=temperature,
                           threads=int(max(1, cpus_per_actor)), precision=precision, view=view))
    else:
        ds = ds.map_batches(
            TeacherLabeler, batch_format="numpy", batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
            fn_constructor_kwargs=dict(model_dir=str(teacher_dir), teacher_run_id=teacher_run_id, temperature=temperature,
                                       threads=int(max(1, cpus_per_actor)), use_gpu=gpus_per_actor > 0,
                                       precision=precision, view=view))
    ds.select_columns(list(COLUMNS)).write_parquet(data_dir)
    clips = source["rows"].get("train", 0)
    if stride_samples:
        crops_per_clip = len(sliding_crop_offsets(source["clip_samples"], crop_samples, stride_samples))
    if not storage.list_files(data_dir):  # Ray writes no file for a dataset without rows
        raise ValueError(f"{out_dir}: no crops left to train on: "
                         + (f"labels.min_confidence {view.min_confidence} dropped all {clips * crops_per_clip} crops "
                            "(the teacher is less sure than that of every crop); lower it"
                            if teacher_dir and view.min_confidence else f"the source has {clips} training clips"))
    fs, path = storage.filesystem(data_dir)
    written = pq.ParquetDataset(path, filesystem=fs)  # footers only: no Ray job to count rows
    rows = sum(f.metadata.num_rows for f in written.fragments)
    manifest = {
        "rows": rows,
        "crops": clips * crops_per_clip,
        "dropped_low_confidence": clips * crops_per_clip - rows,
        "schema": {field.name: str(field.type) for field in written.schema},
        "crop_samples": crop_samples,
        "crops_per_clip": crops_per_clip,
        "placement": "whole" if crop_samples == source["clip_samples"] else "sliding" if stride_samples else "random",
        "stride_samples": stride_samples,
        "teacher_view": {"mode": view.mode, "pad_position": view.pad_position} if teacher_dir else None,
        "min_confidence": view.min_confidence if teacher_dir else 0.0,
        "temperature": temperature,
        "seed": seed,
        "teacher_run_id": teacher_run_id,
        "teacher_dir": str(teacher_dir) if teacher_dir else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if labels is not None:
        manifest["label_stats"] = label_stats(data_dir, labels)
    storage.write_text(storage.join(out_dir, MANIFEST), json.dumps(manifest, indent=2))
    return manifest
