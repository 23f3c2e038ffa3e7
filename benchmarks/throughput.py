"""Throughput of the platform next to the plain PyTorch it wraps, and the cost of PLD's short inputs.

    python benchmarks/throughput.py [--quick] [--gpu] [--json OUT]

One run, one machine, the same cores, model (the quickstart's), data and batch sizes on both
sides of every comparison:

1. quickstart  `pld data synth` + `pld run configs/quickstart.yaml` in subprocesses, as a user
               runs them: synthesis, Ray start, source dataset and each stage's relabel / train /
               eval seconds, read back from the chain's MLflow runs. (--quick: a small corpus and
               a two-stage chain of one epoch each.) Its source dataset and teacher feed 2-4.
2. relabel     the platform's Ray Data relabel stage (`relabel_crops`: source Parquet → crops →
               teacher → Parquet) vs a plain single-process loop over the same crops (read the
               Parquet, crop, features + model, softmax / argmax, write Parquet) with torch on
               every core. Crops/s; one warm-up run each, then the median of repeats.
3. train       a Ray Train stage (`train_stage`) vs a plain PyTorch loop on the same crops: same
               epochs, batch size, optimizer, schedule, per-epoch validation and checkpoint.
               Samples/s = rows × epochs / seconds, from reading the Parquet to the best model.
               Both again at one epoch split each side into a cost paid once per stage and a
               cost per epoch (their ratio: `train_epoch_ratio`).
4. scaling     relabel seconds at 1×, 2×, 4× the training clips (copies with new clip ids, so
               new crops) on 2 CPUs, and at 1× on a Ray of 1 CPU, next to the plain loop; a
               least-squares line through 1×/2×/4× splits each side into a cost paid once per
               stage and a cost per crop (their ratio: `relabel_marginal_ratio`).
5. input       MACs per decision (`torch.utils.flop_counter`, front end excluded) and CPU latency
               per decision at batch 1 (one torch thread, median of repeated runs, lengths
               interleaved so load drifts hit all alike) for every length of the default chain,
               each as a ratio to 1000 ms, with the fixed/per-MAC split of the latency; the same
               for res8 (45 maps), where the fixed cost is a smaller share. Beside eager PyTorch,
               the streaming spotter's step per 100 ms hop (eager), and the model as `pld export`
               writes it, under onnxruntime (fp32 with the folded front end, fp32 with the
               convolution front end before it, int8; one thread), with the streaming real-time
               factor at a 100 ms hop. `--only-input`: this alone, with the onnxruntime figures
               for res8 too and the int8 quantization variants side by side.

Ratios "platform ÷ plain" are throughputs: higher is better, 1.0 means no overhead.

``--gpu`` (benchmarks/gpu_check.sh): the quickstart chain trains in a Ray Train worker on the
GPU with bf16 autocast and relabels on a GPU actor; sections 2 and 3 compare the platform and the
plain loop on the same GPU (bf16 on both sides); 4 and 5, figures of CPUs, are left out. With
``--quick`` on a GPU, section 3 trains 3 epochs (not 1) and again 1, so that the per-epoch ratio
is told apart from the stage's start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.core.checkpoint import ModelSpec, load_model_dir  # noqa: E402
from distill.config import ChainConfig, load_config  # noqa: E402
from distill.core.crops import cut_crops, sample_crop_offsets  # noqa: E402
from distill.core.features import FeatureConfig, num_samples  # noqa: E402
from distill.core.fit import Augmentation, fit_state, start_fit, steps_per_epoch, train_epoch, Validation  # noqa: E402
from distill.core.models import autocast, build_model, count_macs  # noqa: E402

if TYPE_CHECKING:  # for the annotations only: the stage module imports at run time where it is used
    from distill.stages import StageSpec

CONFIG = ROOT / "configs" / "quickstart.yaml"
SYNTH_FULL = ["--speakers", "150", "--unknown-words", "10"]  # the Makefile's `make data`
SYNTH_QUICK = ["--speakers", "12", "--unknown-words", "4"]
ESPEAK_ONLY = ["--engines", "espeak=1", "--unseen-engine-speakers", "0"]  # its pip wheel alone: no apt packages
CHAIN_QUICK = ["chain.lengths_ms=[1000,500]", "chain.baselines=[]", "train.epochs=1", "train.teacher_epochs=1"]
ON_GPU = ["train.use_gpu=true", "train.precision=bf16", "relabel.gpus_per_actor=1", "relabel.actors=1",
          "relabel.precision=bf16"]  # training in a Ray Train worker on the GPU, relabeling on a GPU actor


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def say(msg: str) -> None:
    print(msg, flush=True)


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def pld(*args: str, env: dict, cwd: Path, log: Path | None = None) -> float:
    """Run the `pld` CLI as a user would (its console kept in ``log``); returns its wall-clock seconds."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if log:
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"pld {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return time.perf_counter() - t


# ---------------------------------------------------------------- 1. the quickstart, as a user runs it
def quickstart(work: Path, quick: bool, gpu: bool = False, espeak_only: bool = False) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("RAY_ADDRESS", None)
    corpus, uri = work / "corpus", f"sqlite:///{work / 'mlflow.db'}"
    synth_s = pld("data", "synth", "--out", str(corpus), *(SYNTH_QUICK if quick else SYNTH_FULL),
                  *(ESPEAK_ONLY if espeak_only else []), env=env, cwd=work)
    sets = [f"data.path={corpus}", f"storage.root={work / 'runs'}"] + (CHAIN_QUICK if quick else []) + (ON_GPU if gpu else [])
    run_s = pld("run", str(CONFIG), *[a for s in sets for a in ("--set", s)], "--tracking-uri", uri, env=env, cwd=work,
                log=work / "quickstart.log")

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pld").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("pld.kind") == "chain")
    stages = []
    for name in parent.data.tags["pld.stages"].split(","):
        run = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and r.info.run_name == name)
        m = run.data.metrics
        wall = (run.info.end_time - run.info.start_time) / 1000
        parts = {k: m[f"{k}_seconds"] for k in ("relabel", "train", "eval")}
        stages.append({"stage": name, **parts, "logging": wall - sum(parts.values()), "wall": wall,
                       "epochs": int(run.data.params["epochs"]), "rows": int(run.data.params["rows"])})
    pm = parent.data.metrics
    return {"synthesis_s": synth_s, "run_s": run_s, "quickstart_s": synth_s + run_s, "chain_s": pm["chain_seconds"],
            "ray_start_s": pm.get("ray_start_seconds"), "source_s": pm["source_seconds"], "stages": stages,
            "run_dir": parent.data.tags["pld.run_dir"], "teacher_run_id": next(
                r.info.run_id for r in runs if r.info.run_name == "teacher")}


# ---------------------------------------------------------------- plain-side helpers (pyarrow + torch only)
def waveforms(column: pa.ChunkedArray) -> np.ndarray:
    """A Parquet tensor column (Ray's tensor extension or its list storage: waveforms, teacher
    probabilities) → (rows, width) numpy."""
    arr = column.combine_chunks()
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(arr), -1)


def read_split_plain(source_dir: Path, split: str, columns: list[str]) -> pa.Table:
    return pq.read_table(source_dir / "data" / f"split={split}", columns=columns, partitioning=None)


def plain_relabel(source_dir: Path, out_file: Path, model_dir: str, crop_samples: int, k: int, seed: int,
                  batch_size: int, threads: int, device: str = "cpu") -> int:
    """The reference: one process, no Ray, the same crops and outputs as ``relabel_crops``."""
    torch.set_num_threads(threads)
    table = read_split_plain(source_dir, "train", ["clip_id", "label", "label_index", "speaker", "waveform"])
    waves = waveforms(table["waveform"])
    clip_ids = table["clip_id"].to_numpy(zero_copy_only=False)
    offsets = np.stack([sample_crop_offsets(str(c), waves.shape[1], crop_samples, k, seed) for c in clip_ids]).reshape(-1)
    rows = np.repeat(np.arange(len(waves)), k)
    crops = cut_crops(waves, offsets, crop_samples, rows)
    model, spec = load_model_dir(model_dir, map_location=device)
    model.to(device)
    precision = "bf16" if device != "cpu" else "fp32"  # as the --gpu platform side relabels
    probs = []
    with torch.inference_mode(), autocast(device, precision):
        for lo in range(0, len(crops), batch_size):
            x = torch.from_numpy(crops[lo:lo + batch_size]).to(device)
            probs.append(torch.softmax(model(x).float(), dim=-1).cpu())
    p = torch.cat(probs)
    confidence, label = p.max(dim=-1)
    names = np.array(spec.labels, dtype=object)[label.numpy()]
    out = pa.table({
        "clip_id": pa.array(clip_ids[rows]), "crop_index": np.tile(np.arange(k, dtype=np.int32), len(waves)),
        "offset": offsets, "length": np.full(len(rows), crop_samples, np.int64),
        "source_label": table["label"].take(rows), "source_label_index": table["label_index"].take(rows),
        "speaker": table["speaker"].take(rows), "teacher_label": pa.array(names), "teacher_label_index": label.numpy(),
        "teacher_probs": pa.FixedSizeListArray.from_arrays(pa.array(p.numpy().reshape(-1)), p.shape[1]),
        "teacher_confidence": confidence.numpy(), "teacher_run_id": pa.array(np.full(len(rows), "bench", dtype=object))})
    pq.write_table(out, out_file)
    return len(rows)


def plain_train(data_dir: Path, source_dir: Path, spec: ModelSpec, validation, stage: StageSpec, train,
                hop_samples: int, eval_batch_size: int, out_dir: Path, device: str = "cpu") -> int:
    """The reference: the platform's own loop (core/fit.py) for one worker, without Ray: the
    distilled rows and the source clips read with pyarrow, each row's crop cut from its clip
    (as ``read_training_crops`` does), batched with torch, a checkpoint per epoch written with torch.save."""
    torch.set_num_threads(int(train.num_workers * train.cpus_per_worker))
    torch.manual_seed(stage.seed)
    table = pq.read_table(data_dir, columns=["clip_id", "offset", "teacher_label_index", "teacher_probs",
                                             "source_label_index"])
    clips = read_split_plain(source_dir, "train", ["clip_id", "waveform"])
    row_of = {c: i for i, c in enumerate(clips["clip_id"].to_pylist())}
    clip_rows = np.array([row_of[c] for c in table["clip_id"].to_pylist()], dtype=np.int64)
    crops = cut_crops(waveforms(clips["waveform"]), table["offset"].to_numpy(), stage.input_samples, clip_rows)
    with warnings.catch_warnings():  # a read-only view of the Arrow buffer: training only reads it
        warnings.simplefilter("ignore", UserWarning)
        columns = {"waveform": torch.from_numpy(crops),
                   "teacher_probs": torch.from_numpy(waveforms(table["teacher_probs"])),
                   **{c: torch.from_numpy(table[c].to_numpy()) for c in ("teacher_label_index", "source_label_index")}}
    rows, device = len(table), torch.device(device)
    fit = start_fit(spec.build().to(device), train, epochs=stage.epochs, steps_per_epoch=steps_per_epoch(rows, 1, train.batch_size),
                    device=device)
    augmentation = Augmentation(None, None, spec.features["sample_rate"], spec.features["hop_ms"],
                                spec.features["n_mels"])
    scorer = Validation(validation, input_samples=stage.input_samples, hop_samples=hop_samples,
                        silence_index=spec.silence_index, batch_size=eval_batch_size, device=device,
                        precision=train.precision)
    best = -1.0
    for epoch in range(stage.epochs):
        batches = ({k: v[idx].to(device) for k, v in columns.items()} for idx in torch.randperm(rows).split(train.batch_size))
        train_epoch(fit, batches, stage, train, augmentation, epoch=epoch, rank=0, device=device)
        correct, clips = scorer.counts(fit.net)
        acc = float(correct / max(clips, 1))
        torch.save(fit_state(fit, epoch), out_dir / f"epoch{epoch}.pt")  # as the platform checkpoints every epoch
        if acc > best:
            best = acc
            shutil.copy(out_dir / f"epoch{epoch}.pt", out_dir / "best.pt")
    return rows


def scaled_source(source_dir: Path, out: Path, factor: int) -> Path:
    """The training split ``factor`` times, each copy with new clip ids (so new crop offsets)."""
    if factor == 1:
        return source_dir
    table = read_split_plain(source_dir, "train", None)
    copies = [table.set_column(table.schema.get_field_index("clip_id"), "clip_id",
                               pc.binary_join_element_wise(table["clip_id"], pa.scalar(f"~{r}"), ""))
              for r in range(factor)]
    big = pa.concat_tables(copies)
    part = out / "data" / "split=train"
    part.mkdir(parents=True)
    for i in range(0, len(big), 200):  # the source dataset's own block size
        pq.write_table(big.slice(i, 200), part / f"part-{i // 200:05d}.parquet")
    manifest = json.loads((source_dir / "manifest.json").read_text())  # relabel_crops reads clip counts from it
    manifest["rows"] = {"train": len(big)}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


# ---------------------------------------------------------------- 5. input efficiency
def input_efficiency(cfg, n_classes: int, repeats: int, name: str | None = None, onnx: bool = False) -> list[dict]:
    """MACs and batch-1 latency per chain length of the config's model (or the registered ``name``):
    eager PyTorch, the streaming spotter's step per 100 ms hop (eager), and with ``onnx`` the
    exported model under onnxruntime (one thread): fp32 as ``pld export`` writes it (the folded
    front end), fp32 with the earlier convolution front end, and int8."""
    from distill.core.streaming import StreamingSpotter

    torch.set_num_threads(1)
    torch.manual_seed(0)
    options = cfg.model.options if name is None else {}
    model = build_model(name or cfg.model.name, n_classes, options, FeatureConfig(**cfg.features.model_dump())).eval()
    lengths = ChainConfig().lengths_ms
    sr = cfg.features.sample_rate
    xs = {ms: torch.randn(1, num_samples(ms, sr)) * 1000 for ms in lengths}
    feats = {ms: model.features(xs[ms]) for ms in lengths}
    hop = num_samples(100, sr)
    streams = {ms: StreamingSpotter(model, num_samples(ms, sr), hop) for ms in lengths}
    for ms, stream in streams.items():  # a full window first: from then on each step is one hop's work
        for lo in range(0, num_samples(ms, sr), hop):
            stream.step(xs[ms][:, lo:lo + hop])
    runners = {"latency_us": lambda ms: model(xs[ms]), "net_us": lambda ms: model.net(feats[ms]),
               "stream_us": lambda ms: streams[ms].step(xs[ms][:, :hop])}
    if onnx:  # one file per variant: batch and length are dynamic axes
        from distill.core.export import OnnxSpotter, export_onnx, quantize_int8

        tmp = Path(tempfile.mkdtemp(prefix="pld-onnx-"))
        fp32 = export_onnx(model, num_samples(1000, sr), tmp / "m.onnx")
        conv = export_onnx(model, num_samples(1000, sr), tmp / "conv.onnx", frontend="conv")
        calib = (np.random.default_rng(0).normal(0, 0.05, (50, num_samples(1000, sr))) * 32768).astype(np.int16)
        spotters = {"onnx_us": OnnxSpotter(fp32), "onnx_conv_us": OnnxSpotter(conv),
                    "onnx_int8_us": OnnxSpotter(quantize_int8(fp32, tmp / "q.onnx", calib))}
        arrays = {ms: (xs[ms] / 32768).numpy() for ms in lengths}
        runners.update({key: (lambda ms, s=spotter: s(arrays[ms])) for key, spotter in spotters.items()})
    times = {key: {ms: [] for ms in lengths} for key in runners}
    # one engine at a time (PyTorch, the stream, onnxruntime fp32, conv, int8), lengths interleaved
    # within it: load changes during the run reach every length alike, and one engine's buffers do
    # not evict another's. The onnxruntime variants, compared with each other, run in alternating
    # order over several passes (a study sharing the machine changes its load within minutes).
    onnx_keys = [k for k in runners if k.startswith("onnx")]
    passes = 4
    groups = [["latency_us", "net_us"], ["stream_us"]]
    for p in range(passes):
        groups += [[k] for k in (onnx_keys if p % 2 == 0 else onnx_keys[::-1])]
    with torch.inference_mode():
        for group in groups:
            share = repeats // passes if group[0].startswith("onnx") else repeats
            for _ in range(20):
                for ms in lengths:
                    for key in group:
                        runners[key](ms)
            for _ in range(share):
                for ms in lengths:
                    for key in group:
                        t = time.perf_counter()
                        runners[key](ms)
                        times[key][ms].append(time.perf_counter() - t)
    rows = [{"input_ms": ms, "macs": count_macs(model, num_samples(ms, sr)),
             **{key: statistics.median(times[key][ms]) * 1e6 for key in runners}} for ms in lengths]
    ref = next(r for r in rows if r["input_ms"] == 1000)
    for r in rows:
        r["features_us"] = r["latency_us"] - r["net_us"]
        r["macs_ratio"] = r["macs"] / ref["macs"]
        r["latency_ratio"] = r["latency_us"] / ref["latency_us"]
        r["net_ratio"] = r["net_us"] / ref["net_us"]
        r["stream_share"] = r["stream_us"] / r["latency_us"]  # a hop's step against the windowed decision
        for key in ("onnx_us", "onnx_conv_us", "onnx_int8_us"):
            if key in r:
                r[key.replace("_us", "_ratio")] = r[key] / ref[key]
                # streaming: one decision per 100 ms hop, so audio seconds per compute second
                r[key.replace("_us", "_stream_rtf")] = 0.1 / (r[key] / 1e6)
        if "onnx_int8_us" in r:
            r["int8_speedup"] = r["onnx_us"] / r["onnx_int8_us"]
    return rows


def int8_variants(cfg, n_classes: int, names: tuple[str, ...], repeats: int) -> list[dict]:
    """The int8 quantizations next to fp32 (the folded export), at 1000 and 500 ms, per network:
    onnxruntime, batch 1, one thread, in alternating order over four passes."""
    from distill.core.export import OnnxSpotter, export_onnx, latencies, quantize_int8

    variants = {"S8S8 QDQ per-channel, every op (before)": dict(qdq=True, activations="int8", ops=None),
                "U8S8 QDQ per-channel, every op": dict(qdq=True, ops=None),
                "U8S8 QDQ per-channel, Conv": dict(qdq=True),
                "U8S8 QOperator per-channel, every op": dict(ops=None),
                "U8S8 QOperator per-tensor, Conv": dict(per_channel=False),
                "U8S8 QOperator per-channel, Conv (pld export)": dict()}
    sr = cfg.features.sample_rate
    rows = []
    for name in names:
        torch.manual_seed(0)
        model = build_model(name, n_classes, {}, FeatureConfig(**cfg.features.model_dump())).eval()
        tmp = Path(tempfile.mkdtemp(prefix="pld-int8-"))
        fp32 = export_onnx(model, num_samples(1000, sr), tmp / "m.onnx")
        calib = np.random.default_rng(0).normal(0, 0.05, (50, num_samples(1000, sr))).astype(np.float32)
        spotters = {"fp32": OnnxSpotter(fp32)}
        check = calib[:20]
        reference = spotters["fp32"](check)
        gaps = {}
        for i, (label, kw) in enumerate(variants.items()):
            spotters[label] = OnnxSpotter(quantize_int8(fp32, tmp / f"q{i}.onnx", calib, **kw))
            gaps[label] = float(np.abs(spotters[label](check) - reference).max())
        for ms in (1000, 500):
            timed = latencies(spotters, num_samples(ms, sr), repeats=repeats)
            rows += [{"model": name, "input_ms": ms, "variant": label, "us": t * 1e6,
                      "speedup": timed["fp32"] / t, "max_posterior_gap": gaps.get(label, 0.0)}
                     for label, t in timed.items()]
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def fit_fixed(rows: list[dict], key: str) -> tuple[float, float]:
    """Least-squares ``key ≈ fixed + per_mmac · MMACs``: the part of a decision that no shorter input removes."""
    slope, fixed = np.polyfit([r["macs"] / 1e6 for r in rows], [r[key] for r in rows], 1)
    return float(fixed), float(slope)


# ---------------------------------------------------------------- the run
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small corpus and chain: a smoke run of a few minutes")
    ap.add_argument("--json", type=Path, help="write the results as one JSON object to this file")
    ap.add_argument("--only-input", action="store_true", help="section 5 alone (MACs and latency, eager and "
                                                                  "onnxruntime): seconds, no chain")
    ap.add_argument("--workdir", type=Path, help="keep the corpus, runs and Parquet here (default: a temp dir, removed)")
    ap.add_argument("--gpu", action="store_true", help="train and relabel on the GPU, both sides (sections 1-3)")
    ap.add_argument("--espeak-only", action="store_true", help="synthesize the corpus with espeak-ng alone (its pip "
                                                               "wheel: a machine without the apt engines)")
    args = ap.parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        print("throughput.py: --gpu, but torch sees no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    device = "cuda" if args.gpu else "cpu"
    quick = args.quick
    repeats = 1 if quick else 3
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pld-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cfg = load_config(CONFIG, dict(s.split("=", 1) for s in ON_GPU) if args.gpu else None)
    cpus = cfg.ray.num_cpus
    result: dict = {"mode": "quick" if quick else "full", "cpus": cpus, "os_cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "device": torch.cuda.get_device_name(0) if args.gpu else "cpu",
                    "load_start": load()}
    say(f"benchmark ({result['mode']}) in {work}; load average {result['load_start']}")

    if args.only_input:
        eff = input_efficiency(cfg, 12, 100 if quick else 500, onnx=True)
        fit = dict(zip(("fixed_us", "us_per_mmac"), fit_fixed(eff, "latency_us")))
        fit.update(zip(("net_fixed_us", "net_us_per_mmac"), fit_fixed(eff, "net_us")))
        # res8 (45 maps): its export pads them to 48, and int8 has more work to save there
        big = input_efficiency(cfg, 12, 50 if quick else 200, name="res8", onnx=True)
        variants = int8_variants(cfg, 12, (cfg.model.name, "res8"), 40 if quick else 400)
        report = {"input": eff, "latency_fit": fit, "input_res8": big, "int8_variants": variants}
        print("\n".join(input_report(report)))
        if args.json:
            args.json.write_text(json.dumps({"mode": result["mode"], **report, "load_start": result["load_start"],
                                             "load_end": load()}, indent=2) + "\n")
        return 0
    say("[1/5] quickstart: pld data synth + pld run …")
    qs = quickstart(work, quick, args.gpu, args.espeak_only)
    result["quickstart"] = qs
    result["quickstart_s"] = qs["quickstart_s"]
    say(f"      {qs['quickstart_s']:.0f} s (synthesis {qs['synthesis_s']:.0f} s, pld run {qs['run_s']:.0f} s)")

    import ray
    from ray.util.queue import Queue

    from distill.core.augment import AugmentConfig
    from distill.core.labels import LabelSpec
    from distill.runtime.execution.relabel import Teacher, read_training_crops, relabel_crops
    from distill.runtime.infra.session import init_ray
    from distill.runtime.execution.train import StageData, train_stage
    from distill.stages import StageSpec

    run_dir = Path(qs["run_dir"])
    source = run_dir / "source"
    teacher = str(run_dir / "stages" / "teacher" / "model")
    labels = json.loads((source / "manifest.json").read_text())["labels"]
    sr = cfg.data.sample_rate
    final_ms = cfg.chain.lengths_ms[-1]  # 500 ms, as in CHAIN_QUICK
    crop = num_samples(final_ms, sr)  # the crops of the final stage (the one_shot baseline's relabel)
    k, seed = cfg.chain.crops_per_clip, cfg.seed
    # the one_shot baseline's relabel: the final length's random crops, labelled by the teacher
    one_shot = StageSpec("bench", "baseline", "one_shot", final_ms, "teacher", cfg.train.epochs, sample_rate=sr,
                         placement="random", crops_per_clip=k, seed=seed,
                         labels=LabelSpec(temperature=cfg.labels.temperature))

    def platform_relabel(src: Path, out: Path) -> int:
        return relabel_crops(src, out, one_shot, cfg.relabel, Teacher(teacher, qs["teacher_run_id"]))["rows"]

    def plain(src: Path, out: Path, threads: int) -> int:
        out.mkdir(parents=True, exist_ok=True)
        return plain_relabel(src, out / "crops.parquet", teacher, crop, k, seed, cfg.relabel.batch_size, threads, device)

    t = time.perf_counter()
    init_ray(cfg)
    result["ray_start_s"] = time.perf_counter() - t
    ray.data.DataContext.get_current().enable_progress_bars = False

    say(f"[2/5] relabel: {final_ms} ms crops of the training clips, labelled by the quickstart's teacher …")
    rows = platform_relabel(source, work / "relabel" / "platform")  # warm-up: worker processes, model caches
    plain(source, work / "relabel" / "plain", cpus)
    p_s, p_all = median_time(lambda: platform_relabel(source, work / "relabel" / "platform"), repeats)
    r_s, r_all = median_time(lambda: plain(source, work / "relabel" / "plain", cpus), repeats)
    result["relabel"] = {"rows": rows, "crop_ms": final_ms, "platform_s": p_s, "plain_s": r_s, "platform_runs_s": p_all,
                         "plain_runs_s": r_all, "platform_crops_per_s": rows / p_s, "plain_crops_per_s": rows / r_s}
    result["relabel_ratio"] = r_s / p_s

    # --quick: 1 epoch, but 3 on a GPU, where a stage's start-up (worker group, CUDA context) would
    # hide the epochs: with the 1-epoch runs below they give the per-epoch ratio apart from it
    epochs, bs = cfg.train.epochs if not quick else (3 if args.gpu else 1), cfg.train.batch_size
    say(f"[3/5] train: {rows} crops × {epochs} epochs, batch {bs} …")
    val = read_split_plain(source, "validation", ["waveform", "label_index"])
    validation = (waveforms(val["waveform"]), val["label_index"].to_numpy())
    spec = ModelSpec(model=cfg.model.name, options=cfg.model.options, labels=labels, input_ms=final_ms,
                     features=cfg.features.model_dump())
    hop = num_samples(cfg.eval.stream_hop_ms, sr)
    data_dir = work / "relabel" / "platform" / "data"
    progress = Queue(actor_options={"num_cpus": 0})

    # plain_train has no augmentation: neither has the platform's run it is compared with
    train_cfg = cfg.train.model_copy(update={"use_gpu": args.gpu, "augment": AugmentConfig(enabled=False)})

    def platform_train(n_epochs: int = epochs, runner: str = "auto") -> None:
        """train.runner auto: one CPU worker on this one node trains in the driver; workers: in a
        Ray Train worker group, as on a cluster (the same weights, more start-up)."""
        shutil.rmtree(work / "train", ignore_errors=True)
        stage = StageSpec("bench", "student", "pld", final_ms, None, n_epochs, sample_rate=sr, seed=seed)
        data = StageData(read_training_crops(data_dir.parent, source), rows, validation, storage_dir=work / "train" / "ray",
                         model_dir=work / "train" / "model")
        train_stage(stage, spec, data, train_cfg.model_copy(update={"runner": runner}), cfg.eval, progress,
                    on_epoch=lambda m: None)

    def plain_train_run(n_epochs: int = epochs) -> None:
        out = work / "train" / "plain"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        stage = StageSpec("bench", "student", "pld", final_ms, None, n_epochs, sample_rate=sr, seed=seed)
        plain_train(data_dir, source, spec, validation, stage, train_cfg, hop_samples=hop, eval_batch_size=cfg.eval.batch_size,
                    out_dir=out, device=device)

    # Train figures are single runs of seconds that vary by several seconds between runs on a
    # shared 2-core machine: the full benchmark takes the median of three.
    tp_s, tp_all = median_time(platform_train, repeats)
    tr_s, tr_all = median_time(plain_train_run, repeats)
    samples = rows * epochs
    result["train"] = {"rows": rows, "epochs": epochs, "batch_size": bs, "platform_s": tp_s, "plain_s": tr_s,
                       "platform_samples_per_s": samples / tp_s, "plain_samples_per_s": samples / tr_s,
                       "platform_runs_s": tp_all, "plain_runs_s": tr_all}
    result["train_ratio"] = tr_s / tp_s
    if epochs > 1:  # the same at one epoch: what each side pays once per stage, and per epoch
        tp1, tp1_all = median_time(lambda: platform_train(1), repeats)
        tr1, tr1_all = median_time(lambda: plain_train_run(1), repeats)
        per_p, per_r = (tp_s - tp1) / (epochs - 1), (tr_s - tr1) / (epochs - 1)
        result["train"]["split"] = {"platform_1_epoch_s": tp1, "plain_1_epoch_s": tr1, "platform_fixed_s": tp1 - per_p,
                                    "plain_fixed_s": tr1 - per_r, "platform_per_epoch_s": per_p, "plain_per_epoch_s": per_r,
                                    "platform_1_epoch_runs_s": tp1_all, "plain_1_epoch_runs_s": tr1_all}
        result["train_epoch_ratio"] = per_r / per_p
    if epochs > 1 and not args.gpu:  # (on a GPU the stage trains in a worker group already)
        # the same stage in a Ray Train worker group, and in one actor (runner actor, as in a pld
        # sweep's trials): what the local runner saves, side by side
        for runner in ("workers", "actor"):
            tw, tw_all = median_time(lambda: platform_train(epochs, runner), repeats)
            tw1, tw1_all = median_time(lambda: platform_train(1, runner), repeats)
            per_w = (tw - tw1) / (epochs - 1)
            result["train"][runner] = {f"{runner}_s": tw, f"{runner}_1_epoch_s": tw1, f"{runner}_fixed_s": tw1 - per_w,
                                       f"{runner}_per_epoch_s": per_w, f"{runner}_runs_s": tw_all,
                                       f"{runner}_1_epoch_runs_s": tw1_all}

    if args.gpu:  # sections 4 and 5 measure CPUs
        return finish(result, args.json, started, None if args.workdir else work)
    say("[4/5] scaling: relabel at 1×, 2×, 4× the clips on 2 CPUs, and 1× on 1 CPU …")
    scaling = []
    for factor in (1, 2, 4):
        src = scaled_source(source, work / f"source-x{factor}", factor)
        p, _ = median_time(lambda: platform_relabel(src, work / "relabel" / f"platform-x{factor}"), 1)
        r, _ = median_time(lambda: plain(src, work / "relabel" / f"plain-x{factor}", cpus), 1)
        n = rows * factor
        scaling.append({"data": f"{factor}x", "cpus": cpus, "crops": n, "platform_s": p, "plain_s": r})
    ray.shutdown()
    cfg1 = load_config(CONFIG, {"ray.num_cpus": 1})
    init_ray(cfg1)
    ray.data.DataContext.get_current().enable_progress_bars = False
    platform_relabel(source, work / "relabel" / "platform-1cpu")  # warm-up of this new Ray
    p, _ = median_time(lambda: platform_relabel(source, work / "relabel" / "platform-1cpu"), 1)
    r, _ = median_time(lambda: plain(source, work / "relabel" / "plain-1cpu", 1), 1)
    scaling.append({"data": "1x", "cpus": 1, "crops": rows, "platform_s": p, "plain_s": r})
    ray.shutdown()
    result["scaling"] = scaling
    # least squares over 1×, 2×, 4×: seconds = fixed + crops × per-crop cost, for each side
    xs = np.array([s["crops"] for s in scaling if s["cpus"] == cpus], dtype=float)
    fit = {side: np.polyfit(xs, [s[f"{side}_s"] for s in scaling if s["cpus"] == cpus], 1) for side in ("platform", "plain")}
    result["relabel_split"] = {f"{side}_{k}": v for side, (slope, icpt) in fit.items()
                               for k, v in (("fixed_s", icpt), ("ms_per_1000_crops", slope * 1e6))}
    result["relabel_marginal_ratio"] = fit["plain"][0] / fit["platform"][0]

    say("[5/5] input efficiency: MACs and batch-1 latency per decision …")
    eff = input_efficiency(cfg, len(labels), 100 if quick else 500, onnx=True)
    result["input"] = eff
    result["macs_ratio"] = {str(r["input_ms"]): r["macs_ratio"] for r in eff}
    result["latency_ratio"] = {str(r["input_ms"]): r["latency_ratio"] for r in eff}
    result["onnx_latency_ratio"] = {str(r["input_ms"]): r["onnx_ratio"] for r in eff}
    result["onnx_int8_latency_ratio"] = {str(r["input_ms"]): r["onnx_int8_ratio"] for r in eff}
    fixed, per = fit_fixed(eff, "latency_us")
    nfixed, nper = fit_fixed(eff, "net_us")
    result["latency_fit"] = {"fixed_us": fixed, "us_per_mmac": per, "net_fixed_us": nfixed, "net_us_per_mmac": nper}
    # The same for res8 (45 maps, ~5x the MACs): how the latency ratio moves once the fixed
    # per-decision cost is a smaller share — the breakdown behind the narrow model's ratio.
    big = input_efficiency(cfg, len(labels), 50 if quick else 200, name="res8")
    result["input_res8"] = big
    result["latency_ratio_res8"] = {str(r["input_ms"]): r["latency_ratio"] for r in big}
    result["macs_ratio_res8"] = {str(r["input_ms"]): r["macs_ratio"] for r in big}
    return finish(result, args.json, started, None if args.workdir else work)


def finish(result: dict, json_path: Path | None, started: float, remove: Path | None) -> int:
    result["load_end"] = load()
    result["benchmark_s"] = time.perf_counter() - started
    print()
    print(report(result))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    if remove:
        shutil.rmtree(remove, ignore_errors=True)
    return 0


def input_report(r: dict) -> list[str]:
    out = ["input efficiency per decision (batch 1, 1 torch thread; ratio to 1000 ms; stream: the streaming "
           "spotter's step per 100 ms hop, share of the windowed decision)",
           "{:>8} {:>11} {:>7} {:>12} {:>7} {:>10} {:>10} {:>10} {:>7}".format(
               "input", "MACs", "ratio", "latency µs", "ratio", "net µs", "front µs", "stream µs", "share")]
    for e in r["input"]:
        out.append("{:>5} ms {:>11,} {:>7.3f} {:>12.0f} {:>7.3f} {:>10.0f} {:>10.0f} {:>10.0f} {:>7.2f}".format(
            e["input_ms"], e["macs"], e["macs_ratio"], e["latency_us"], e["latency_ratio"], e["net_us"], e["features_us"],
            e["stream_us"], e["stream_share"]))
    f = r["latency_fit"]
    out.append(f"latency ≈ {f['fixed_us']:.0f} µs fixed + {f['us_per_mmac']:.0f} µs per million MACs "
               f"(network alone: {f['net_fixed_us']:.0f} µs + {f['net_us_per_mmac']:.0f} µs/MMAC)")
    big = {e["input_ms"]: e for e in r.get("input_res8", [])}
    if big:
        out.append("res8 (45 maps), eager: " + ", ".join(
            f"{ms} ms {big[ms]['macs'] / 1e6:.1f} MMAC {big[ms]['latency_us']:.0f} µs ({big[ms]['latency_ratio']:.3f})"
            for ms in sorted(big, reverse=True)))
    for label, rows in (("", r["input"]), ("res8 (45 maps, exported as 48) ", r.get("input_res8", []))):
        if rows and "onnx_us" in rows[0]:
            out += ["", f"{label}the exported model under onnxruntime (batch 1, 1 thread; ratio to 1000 ms; fp32 as "
                    "pld export writes it: the folded front end; conv: the convolution front end before it; "
                    "RTF: streaming real-time factor at a 100 ms hop)",
                    "{:>8} {:>10} {:>7} {:>8} {:>10} {:>7} {:>10} {:>7} {:>8}".format(
                        "input", "fp32 µs", "ratio", "RTF", "conv µs", "ratio", "int8 µs", "ratio", "int8 ×")]
            for e in rows:
                out.append("{:>5} ms {:>10.0f} {:>7.3f} {:>8.0f} {:>10.0f} {:>7.3f} {:>10.0f} {:>7.3f} {:>8.2f}".format(
                    e["input_ms"], e["onnx_us"], e["onnx_ratio"], e["onnx_stream_rtf"], e["onnx_conv_us"],
                    e["onnx_conv_ratio"], e["onnx_int8_us"], e["onnx_int8_ratio"], e["int8_speedup"]))
    if r.get("int8_variants"):
        out += ["", "int8 variants beside fp32 (onnxruntime, batch 1, 1 thread; × = fp32 µs / variant µs; "
                "gap: max |Δ posterior| to fp32 on 20 noise crops)",
                "{:<12} {:>6} {:<46} {:>9} {:>6} {:>9}".format("model", "input", "variant", "µs", "×", "gap")]
        for v in r["int8_variants"]:
            out.append("{:<12} {:>3} ms {:<46} {:>9.0f} {:>6.2f} {:>9.1e}".format(
                v["model"], v["input_ms"], v["variant"], v["us"], v["speedup"], v["max_posterior_gap"]))
    return out


def report(r: dict) -> str:
    rl, tr, qs = r["relabel"], r["train"], r["quickstart"]
    out = [f"PLD platform throughput ({r['mode']}; {r.get('device', 'cpu')}; Ray {r['cpus']} CPUs on a {r['os_cpu_count']}-core machine; "
           f"torch {r['torch']}; load average at start {r['load_start']}, at end {r['load_end']})", ""]
    w = "{:<46} {:>14} {:>14} {:>8}"
    out.append(w.format("figure", "platform", "plain torch", "ratio"))
    out.append(w.format(f"relabel crops/s ({rl['rows']} crops of {rl['crop_ms']} ms)", f"{rl['platform_crops_per_s']:.0f}",
                        f"{rl['plain_crops_per_s']:.0f}", f"{r['relabel_ratio']:.2f}"))
    out.append(w.format("  relabel seconds (median)", f"{rl['platform_s']:.2f}", f"{rl['plain_s']:.2f}", ""))
    out.append(w.format(f"train samples/s ({tr['rows']} × {tr['epochs']} ep, batch {tr['batch_size']})",
                        f"{tr['platform_samples_per_s']:.0f}", f"{tr['plain_samples_per_s']:.0f}", f"{r['train_ratio']:.2f}"))
    out.append(w.format("  train seconds", f"{tr['platform_s']:.2f}", f"{tr['plain_s']:.2f}", ""))
    if "split" in tr:
        sp = tr["split"]
        out.append(w.format("  train seconds at 1 epoch", f"{sp['platform_1_epoch_s']:.2f}", f"{sp['plain_1_epoch_s']:.2f}", ""))
        out.append(w.format("  → once per stage (s)", f"{sp['platform_fixed_s']:.2f}", f"{sp['plain_fixed_s']:.2f}", ""))
        out.append(w.format("  → per epoch (s)", f"{sp['platform_per_epoch_s']:.2f}", f"{sp['plain_per_epoch_s']:.2f}",
                            f"{r['train_epoch_ratio']:.2f}"))
    # the platform column is the local runner; here a Ray Train worker group and one stage actor
    for runner, label in (("workers", "worker group"), ("actor", "one actor")):
        if runner in tr:
            wk = tr[runner]
            out.append(w.format(f"  {label}: seconds", f"{wk[f'{runner}_s']:.2f}", "", ""))
            out.append(w.format("  → once per stage (s)", f"{wk[f'{runner}_fixed_s']:.2f}", "", ""))
            out.append(w.format("  → per epoch (s)", f"{wk[f'{runner}_per_epoch_s']:.2f}", "", ""))
    if "scaling" in r:  # sections 4 and 5 (not with --gpu)
        out += ["", "scaling (relabel seconds)", w.format("data × CPUs", "platform", "plain torch", "ratio")]
        for s in r["scaling"]:
            out.append(w.format(f"{s['data']} ({s['crops']} crops), {s['cpus']} CPU", f"{s['platform_s']:.2f}",
                                f"{s['plain_s']:.2f}", f"{s['plain_s'] / s['platform_s']:.2f}"))
        sp = r["relabel_split"]
        out.append(w.format("  fit: once per stage (s)", f"{sp['platform_fixed_s']:.2f}", f"{sp['plain_fixed_s']:.2f}", ""))
        out.append(w.format("  fit: per 1000 crops (ms)", f"{sp['platform_ms_per_1000_crops']:.0f}",
                            f"{sp['plain_ms_per_1000_crops']:.0f}", f"{r['relabel_marginal_ratio']:.2f}"))
        out += [""] + input_report(r)
    out += ["", f"quickstart: {qs['quickstart_s']:.0f} s = synthesis {qs['synthesis_s']:.1f} s + pld run {qs['run_s']:.1f} s "
                f"(chain {qs['chain_s']:.1f} s; Ray start {qs['ray_start_s'] or float('nan'):.1f} s, "
                f"source dataset {qs['source_s']:.1f} s)",
            "{:<16} {:>6} {:>6} {:>9} {:>8} {:>7} {:>8} {:>8}".format("stage", "epochs", "rows", "relabel", "train", "eval",
                                                                    "logging", "total")]
    for s in qs["stages"]:
        out.append("{:<16} {:>6} {:>6} {:>9.1f} {:>8.1f} {:>7.1f} {:>8.1f} {:>8.1f}".format(
            s["stage"], s["epochs"], s["rows"], s["relabel"], s["train"], s["eval"], s["logging"], s["wall"]))
    tot = {k: sum(s[k] for s in qs["stages"]) for k in ("relabel", "train", "eval", "logging", "wall")}
    out.append("{:<16} {:>6} {:>6} {:>9.1f} {:>8.1f} {:>7.1f} {:>8.1f} {:>8.1f}".format(
        "all stages", "", "", tot["relabel"], tot["train"], tot["eval"], tot["logging"], tot["wall"]))
    out.append(f"\nbenchmark wall time {r['benchmark_s']:.0f} s")
    return "\n".join(out)


if __name__ == "__main__":
    code = main()
    if "ray" in sys.modules:  # the --gpu path returns with Ray up; elsewhere a no-op
        sys.modules["ray"].shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file is written and Ray is down; skip the interpreter's teardown, where native thread
    # pools (torch, onnxruntime, Ray's) once segfaulted after a finished run (exit 139 in the suite).
    os._exit(code or 0)
