"""``pld export``: a chain's (or a stage's) model out of MLflow, as ONNX with its labels and a
model card, checked against its checkpoint, optionally registered in the MLflow Model Registry.

The model comes from the stage run's weights-only ``checkpoint/`` artifact; the clips that check
the export, calibrate int8 and measure the card's figures come from the chain's sealed source
dataset (its test split). Everything on the card is measured here or read from the runs.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import mlflow
import numpy as np

from distill.core.checkpoint import load_model_dir
from distill.core.crops import num_samples
from distill.core.detection import keyword_spotting_metrics, threshold_for
from distill.core.export import (INT8_MIN_SPEEDUP, ExportError, OnnxSpotter, check_equivalence, export_onnx,
                                 latencies, onnx_latency, quantize_int8)
from distill.core.stream_export import OnnxStream, check_stream_equivalence, export_stream_step
from distill.core.models import CausalRes8, count_macs, latency_per_decision
from distill.core.protocols import predict
from distill.names import INPUT_MS, KIND, METHOD, PROTOCOLS, RUN_DIR, SILENCE, TEACHER_RUN
from distill.runtime.infra import storage
from distill.runtime.execution.chain_eval import chain_runs
from distill.runtime.deployment.serving import LogPosteriors
from distill.runtime.infra.errors import find_run

ONNX_FILE, INT8_FILE, LABELS_FILE, CARD_FILE, CARD_JSON = "model.onnx", "model.int8.onnx", "labels.json", "model.md", "card.json"
STREAM_FILE = "stream.onnx"  # a streaming network's hop, with its state (core.stream_export.export_stream_step)
STREAM_CHECK = (8, 10)  # streams x test clips each that check the stream step
ALIAS = "current"  # MLflow reserves "latest"; models:/NAME/latest is MLflow's own newest version
CHECK_CROPS = 400


def pick_stage(client: mlflow.MlflowClient, run_id: str, stage: str | None):
    """(chain run, stage run): a chain's named stage or its final PLD student; or a stage run's own chain."""
    run = find_run(client, run_id)
    if run.data.tags.get(KIND) != "chain":
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if run.data.tags.get(KIND) not in ("teacher", "student", "baseline") or not parent_id:
            raise ValueError(f"run {run_id} is neither a PLD chain nor one of its stage runs (pld.kind="
                             f"{run.data.tags.get(KIND)!r})")
        if stage and stage != run.info.run_name:
            raise ValueError(f"--stage {stage}: run {run_id} is the stage run of {run.info.run_name}")
        return client.get_run(parent_id), run
    parent, children = chain_runs(client, run_id)
    if stage:
        named = [r for r in children if r.info.run_name == stage]
        if not named:
            raise ValueError(f"--stage {stage}: chain {run_id} has no finished stage of that name "
                             f"(it has {[r.info.run_name for r in children]})")
        return parent, named[0]
    students = [r for r in children if r.data.tags.get(METHOD) == "pld"]
    return parent, min(students or children, key=lambda r: int(r.data.tags.get(INPUT_MS, 10 ** 9)))


def check_crops(waveforms: np.ndarray, input_samples: int, hop: int, limit: int = CHECK_CROPS) -> np.ndarray:
    """``limit`` crops of the model's input length from clips ``(n, samples)``: every window the
    stream protocol looks at, spread evenly over the clips; when the clips hold fewer windows
    (a model as long as its clips), also the clips shifted by multiples of ``hop`` (zero-filled)."""
    starts = range(0, max(waveforms.shape[1] - input_samples, 0) + 1, hop)
    crops = [w[s:s + input_samples] for w in waveforms for s in starts]
    shift = 1
    while len(crops) < limit and shift * hop < input_samples:
        for sign in (1, -1):
            moved = np.zeros_like(waveforms[:, :input_samples])
            k = shift * hop
            if sign > 0:
                moved[:, k:] = waveforms[:, :input_samples - k]
            else:
                moved[:, :-k] = waveforms[:, k:input_samples]
            crops += list(moved)
        shift += 1
    crops = np.stack(crops)
    return crops[np.linspace(0, len(crops) - 1, limit).round().astype(int)] if len(crops) > limit else crops


def accuracies(model, waves: np.ndarray, labels: np.ndarray, input_samples: int, hop: int, silence: int | None) -> dict:
    return {p: float((predict(model, waves, input_samples, p, hop_samples=hop, silence_index=silence) == labels).mean())
            for p in PROTOCOLS}


def export_run(run_id: str, *, stage: str | None = None, out: str | Path | None = None, register: str | None = None,
               int8: bool = False, tracking: str | None = None, say: Callable[[str], None] = print) -> dict:
    """Export a stage's model; returns its card (also written, with the ONNX files, to ``out``)."""
    from distill.runtime.infra.session import quiet_logs, resolve_tracking_uri
    from distill.runtime.execution.source import load_split_arrays

    quiet_logs()
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking))
    chain, run = pick_stage(mlflow.MlflowClient(), run_id, stage)
    out = Path(out or f"export-{run.info.run_name}-{run.info.run_id[:8]}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pld-export-") as tmp:
        model_dir = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoint", dst_path=tmp)
        model, spec = load_model_dir(model_dir)
    source = chain_source(chain)
    splits = {name: load_split_arrays(source, name) for name in ("test", "validation", "train")}
    n, rate = spec.input_samples, int(spec.features["sample_rate"])
    hop = num_samples(int(chain.data.params.get("eval.stream_hop_ms", 100)), rate)
    say(f"exporting {run.info.run_name} (run {run.info.run_id}, {spec.input_ms} ms, {len(spec.labels)} classes) "
        f"of chain {chain.info.run_id}")
    onnx_path = export_onnx(model, n, out / ONNX_FILE)
    crops = check_crops(np.concatenate([w for w, _ in splits.values() if len(w)]), n, hop)
    equivalence = checked_equivalence(model, onnx_path, crops, run.info.run_name, say)
    (out / LABELS_FILE).write_text(json.dumps(spec.labels, indent=2))
    int8_check = int8_if_faster(onnx_path, out / INT8_FILE, check_crops(splits["train"][0], n, hop, limit=200), n,
                                say) if int8 else None
    variants = {"fp32": onnx_path, **({"int8": out / INT8_FILE} if int8_check and int8_check["kept"] else {})}
    streaming = exported_stream(model, splits["test"][0], n, hop, out / STREAM_FILE, run.info.run_name, say) \
        if isinstance(model.net, CausalRes8) and model.features.cfg.normalize == "none" else None
    measured, curve = measure_variants(variants, splits["test"], spec, hop, say)
    manifest = json.loads(storage.read_text(storage.join(chain.data.tags[RUN_DIR], "stages", run.info.run_name,
                                                         "manifest.json")))
    card = {"name": register or run.info.run_name, "stage": run.info.run_name, "method": run.data.tags.get(METHOD),
            "input_ms": spec.input_ms, "input_samples": n, "sample_rate": rate, "hop_samples": hop,
            "labels": spec.labels, "silence": SILENCE if spec.silence_index is not None else None,
            "input": "float32 waveforms in [-1, 1], shape (batch, samples), mono at sample_rate",
            "macs": count_macs(model, n), "test_clips": int(len(splits["test"][1])),
            "test_acc_checkpoint": {p: run.data.metrics.get(f"test_acc_{p}") for p in PROTOCOLS},
            "onnx": measured, "torch_latency_us": latency_per_decision(model, n) * 1e6, "int8_check": int8_check,
            "stream": streaming,
            "threshold": (measured["fp32"]["threshold_at_90_recall"] or 0.5),
            # thresholds by false accepts per hour on the test split's silence and unknown clips,
            # with the test keywords' recall: what pld predict --max-fa-per-hour chooses from
            "operating_points": curve and curve["points"],
            "negative_hours": curve and curve["negative_hours"],  # one false accept = 1 / this per hour
            "equivalence": {"clips": equivalence.clips, "max_abs_diff": equivalence.max_abs_diff,
                            "argmax_disagreements": equivalence.argmax_disagreements},
            "chain_run_id": chain.info.run_id, "stage_run_id": run.info.run_id,
            "teacher_run_id": run.data.tags.get(TEACHER_RUN) or None,
            "dataset_sha256": manifest.get("content_sha256"), "source_sha256": manifest.get("source_sha256")}
    (out / CARD_JSON).write_text(json.dumps(card, indent=2))
    (out / CARD_FILE).write_text(model_card(card))
    say(f"   wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    if register:
        version = register_model(card, out, register)
        card["registered"] = {"name": register, "version": version, "alias": ALIAS}
        say(f"   registered models:/{register}/{version} (alias @{ALIAS}; serve with: mlflow models serve "
            f"-m models:/{register}@{ALIAS} --env-manager local -h 127.0.0.1 -p 5001)")
    return card


def chain_source(chain) -> str:
    """The chain's sealed source dataset, which the export checks and measures on."""
    run_dir = chain.data.tags.get(RUN_DIR)
    if not run_dir or not storage.is_dir(storage.join(run_dir, "source")):
        raise ValueError(f"chain {chain.info.run_id}: its run directory {run_dir!r} (pld.run_dir) is not readable "
                         "here; export where the chain's storage.root is mounted")
    return storage.join(run_dir, "source")


def checked_equivalence(model, onnx_path: Path, crops: np.ndarray, name: str, say: Callable[[str], None]):
    """onnxruntime against the PyTorch checkpoint on ``crops`` (int16); the ONNX file is removed
    and the export refused unless their argmax agree everywhere."""
    equivalence = check_equivalence(model, OnnxSpotter(onnx_path), crops.astype(np.float32) / 32768.0)
    say(f"   onnxruntime vs PyTorch: {equivalence.describe()}")
    if not equivalence.ok:
        onnx_path.unlink()
        raise ExportError(f"export of {name} refused: onnxruntime and the PyTorch checkpoint disagree on "
                          f"{equivalence.describe()}, argmax must agree everywhere")
    return equivalence


def exported_stream(model, test_waves: np.ndarray, n: int, hop: int, path: Path, name: str,
                    say: Callable[[str], None]) -> dict:
    """A streaming network's hop as ONNX beside the windowed export, checked against
    ``CausalStream`` on streams of test clips end to end, and timed (batch 1, one thread)."""
    import statistics
    import time

    export_stream_step(model, n, hop, path)
    streams, per_stream = STREAM_CHECK
    clips = test_waves[:streams * per_stream]
    if len(clips) < streams * per_stream:
        path.unlink()
        raise ExportError(f"export of {name}: the test split has {len(clips)} clips, {streams * per_stream} are "
                          "needed to check the stream step")
    audio = clips.reshape(streams, -1)
    stream = OnnxStream(path)
    equivalence = check_stream_equivalence(model, stream, audio, n, hop)
    said = equivalence.describe().replace(" clips:", " hops:", 1)  # each compared hop of each stream
    say(f"   stream step, onnxruntime vs PyTorch: {said}")
    if not equivalence.ok:
        path.unlink()
        raise ExportError(f"export of {name} refused: the stream step and CausalStream disagree on {said}, argmax "
                          "must agree everywhere")
    stream.state, chunk, times = None, np.zeros((1, hop), np.float32), []  # a new stream of one, from zeros
    for i in range(220):
        t = time.perf_counter()
        stream.step(chunk)
        if i >= 20:
            times.append(time.perf_counter() - t)
    return {"file": path.name, "hop_samples": hop, "state": [i.name for i in stream.spotter.session.get_inputs()],
            "latency_us": statistics.median(times) * 1e6,
            "equivalence": {"hops": equivalence.clips, "max_abs_diff": equivalence.max_abs_diff}}


def int8_if_faster(onnx_path: Path, int8_path: Path, calibration: np.ndarray, n: int,
                   say: Callable[[str], None]) -> dict:
    """Quantize to int8 and keep the file only if it is at least INT8_MIN_SPEEDUP× faster than
    fp32, timed side by side (no faster, and a little less accurate: not offered)."""
    quantize_int8(onnx_path, int8_path, calibration)
    timed = latencies({"fp32": OnnxSpotter(onnx_path), "int8": OnnxSpotter(int8_path)}, n)
    speedup = timed["fp32"] / timed["int8"]
    check = {"speedup": speedup, "required": INT8_MIN_SPEEDUP, "kept": speedup >= INT8_MIN_SPEEDUP}
    if not check["kept"]:
        int8_path.unlink()
    say(f"   int8: {speedup:.2f}x fp32's speed side by side ({timed['fp32'] * 1e6:.0f} vs {timed['int8'] * 1e6:.0f} µs); "
        + ("written" if check["kept"] else f"not written (it must be {INT8_MIN_SPEEDUP}x faster to be worth "
           "its accuracy cost)"))
    return check


def measure_variants(variants: dict[str, Path], test: tuple[np.ndarray, np.ndarray], spec, hop: int,
                     say: Callable[[str], None]) -> tuple[dict, dict | None]:
    """Each ONNX variant's test accuracy, latency and 90 %-recall operating point; and fp32's
    curve of thresholds by false accepts per hour (None without negative clips)."""
    test_waves, test_labels = test
    n = spec.input_samples
    measured, curve = {}, None
    for name, path in variants.items():
        spotter = OnnxSpotter(path)
        wrapped = LogPosteriors(spotter)
        kws = keyword_spotting_metrics(wrapped, spec, test_waves, test_labels, hop)
        measured[name] = {"test_acc": accuracies(wrapped, test_waves, test_labels, n, hop, spec.silence_index),
                          "latency_us": onnx_latency(spotter, n) * 1e6,
                          "threshold_at_90_recall": kws and kws["threshold_at_recall"],
                          "fa_per_hour_at_90_recall": kws and kws["fa_per_hour_at_recall"]}
        if name == "fp32" and kws:
            curve = {"negative_hours": kws["negative_hours"], "points": kws["operating_points"]}
        say(f"   {name}: test acc " + "  ".join(f"{p} {a:.4f}" for p, a in measured[name]["test_acc"].items())
            + f"  latency {measured[name]['latency_us']:.0f} µs (onnxruntime, batch 1, one thread)")
    return measured, curve


def model_card(card: dict) -> str:
    rows = [("stage", f"{card['stage']} ({card['method']})"), ("input", f"{card['input_ms']} ms = {card['input_samples']} "
            f"samples at {card['sample_rate']} Hz; {card['input']}"), ("classes", ", ".join(card["labels"])),
            ("MACs per decision", f"{card['macs']:,} (network, front end excluded)"),
            ("test clips", str(card["test_clips"]))]
    for p in PROTOCOLS:
        rows.append((f"test accuracy, {p}", f"checkpoint {card['test_acc_checkpoint'][p]}, onnx fp32 "
                     f"{card['onnx']['fp32']['test_acc'][p]:.4f}"
                     + (f", int8 {card['onnx']['int8']['test_acc'][p]:.4f}" if "int8" in card["onnx"] else "")))
    rows += [("latency per decision", f"PyTorch eager {card['torch_latency_us']:.0f} µs; onnxruntime "
              + ", ".join(f"{k} {v['latency_us']:.0f} µs" for k, v in card["onnx"].items()) + " (batch 1, one thread)"),
             *([("int8", f"{card['int8_check']['speedup']:.2f}× fp32's speed, measured side by side at export: "
                  + ("written" if card["int8_check"]["kept"] else
                     f"not written (below the {card['int8_check']['required']}× that would make it worth its accuracy cost)"))]
               if card.get("int8_check") else []),
             ("detection threshold", f"{card['threshold']:.4f} (90 % recall on the test keywords; "
              f"{card['onnx']['fp32']['fa_per_hour_at_90_recall']} false accepts per hour there)"
              if card["onnx"]["fp32"]["threshold_at_90_recall"] is not None else
              f"{card['threshold']:.4f} (the test split has no keyword or no negative clips to choose it on)"),
             *([("operating points", "; ".join(
                 f"≤ {budget:g} FA/h: threshold {p['threshold']:.4f}, recall {p['recall']:.3f}"
                 for budget in (1, 10, 100) for p in [threshold_for(card["operating_points"], budget)])
                 + f" (false accepts counted on {card['negative_hours'] * 60:.1f} min of the test split's silence "
                   f"and unknown words: one is {1 / card['negative_hours']:.0f} per hour)")]
               if card.get("operating_points") else []),
             *([("streaming", f"{card['stream']['file']}: one {card['stream']['hop_samples']}-sample hop a call, "
                  f"its state in and out; {card['stream']['latency_us']:.0f} µs a hop (onnxruntime, batch 1, one "
                  f"thread); equal to the stream in PyTorch on {card['stream']['equivalence']['hops']} hops, max "
                  f"|Δ posterior| {card['stream']['equivalence']['max_abs_diff']:.2e}")] if card.get("stream") else []),
             ("export check", f"{card['equivalence']['clips']} crops, max |Δ posterior| "
              f"{card['equivalence']['max_abs_diff']:.2e}, argmax differs on {card['equivalence']['argmax_disagreements']}"),
             ("chain run", card["chain_run_id"]), ("stage run", card["stage_run_id"]),
             ("teacher run", card["teacher_run_id"] or "- (labels from the clips)"),
             ("distilled dataset (content sha256)", card["dataset_sha256"])]
    lines = [f"# {card['name']}", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def register_model(card: dict, out: Path, name: str) -> str:
    """Log the export as an MLflow pyfunc model in the stage's run (input: clips of any length, a
    longer one scored by the stream protocol; ``serving.py``), register it as ``name``, tag
    the version with the card's facts and point the alias ``current`` at it; returns the version."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from distill.runtime.deployment.serving import KeywordSpotterModel
    from distill.runtime.execution.tracking import PIP_REQUIREMENTS

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
        outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]
                       + [ColSpec("double", label) for label in card["labels"]]))
    example = np.zeros((1, card["input_samples"]), dtype=np.float32)
    client = mlflow.MlflowClient()
    with mlflow.start_run(run_id=card["stage_run_id"]), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's advice to type-hint predict (the signature is given)
        info = mlflow.pyfunc.log_model(name="kws", python_model=KeywordSpotterModel(), signature=signature,
                                       input_example=example, registered_model_name=name,
                                       artifacts={"onnx": str(out / ONNX_FILE), "card": str(out / CARD_JSON)},
                                       pip_requirements=[*PIP_REQUIREMENTS, "onnxruntime"])
    version = str(info.registered_model_version)
    tags = {"pld.stage": card["stage"], "pld.method": card["method"], "pld.input_ms": card["input_ms"],
            "pld.chain_run_id": card["chain_run_id"], "pld.stage_run_id": card["stage_run_id"],
            "pld.teacher_run_id": card["teacher_run_id"] or "", "pld.dataset_sha256": card["dataset_sha256"],
            "pld.macs": card["macs"], "pld.threshold": f"{card['threshold']:.6f}", "pld.labels": ",".join(card["labels"]),
            **{f"pld.test_acc_{p}": f"{card['onnx']['fp32']['test_acc'][p]:.4f}" for p in PROTOCOLS}}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, ALIAS, version)
    return version

