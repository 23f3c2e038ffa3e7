"""``pld predict``: spot keywords in audio files of any length with an exported model.

The model slides over each file (one decision of the model's input length every ``hop_ms``);
a detection is a run of consecutive windows whose top keyword posterior is at or above the
threshold — the event rule of the false-alarm evaluation (``core.detection.count_events``) —
reported at the run's peak window: keyword, start_ms, end_ms, score. Detections of the same
keyword whose peaks lie within ``merge_ms`` of a stronger one are merged into it (non-maximum
suppression over events): one spoken word crosses the threshold in several runs when its
posterior dips between them. The threshold is the model card's operating point for at most 10
false accepts per hour (``--max-fa-per-hour``), or ``--threshold``.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from distill.core.export import OnnxSpotter
from distill.data.audio import AudioError, ClipPolicy, audio_frames, load_clip
from distill.names import SILENCE, UNKNOWN
from distill.runtime.infra.errors import tracking_refused

BATCH = 256
PROGRESS_AFTER_S = 60.0  # files longer than this report progress


@dataclass
class Detection:
    file: str
    keyword: str
    start_ms: int
    end_ms: int
    score: float


RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id


def load_model(model: str, tracking: str | None = None, say: Callable[[str], None] = print) -> tuple[OnnxSpotter, dict]:
    """An ONNX file (its ``card.json`` beside it) or the folder `pld export` wrote, a ``models:/``
    URI, or a chain/stage run id (exported on the fly, without int8)."""
    if Path(model).is_dir() and (Path(model) / "model.onnx").is_file():
        model = str(Path(model) / "model.onnx")
    if not model.endswith(".onnx") and not model.startswith("models:/") and not RUN_ID.fullmatch(model):
        what = ("a folder without model.onnx" if Path(model).is_dir() else "a file" if Path(model).exists()
                else "no such file, and not a run id")
        raise ValueError(f"MODEL {model!r} ({what}) is not a model: give a chain or stage run id (32 hex digits), "
                         "models:/NAME@ALIAS (or /VERSION), or an exported .onnx file or its folder")
    if model.endswith(".onnx"):
        card_path = Path(model).with_name("card.json")
        if not Path(model).is_file():
            raise FileNotFoundError(f"{model}: no such ONNX file")
        if not card_path.is_file():
            raise ValueError(f"{model}: no card.json beside it; use the folder `pld export` wrote")
        return OnnxSpotter(model), json.loads(card_path.read_text())
    import mlflow

    from distill.runtime.infra.session import quiet_logs, resolve_tracking_uri

    quiet_logs()
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking))
    if model.startswith("models:/"):
        uri = model[:-len("@latest")] + "/latest" if model.endswith("@latest") else model  # MLflow reserves @latest
        try:
            python_model = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        except Exception as exc:  # MlflowException, or a model that is not a pld export
            if tracking_refused(exc):
                raise
            raise ValueError(f"{model}: cannot load it from {mlflow.get_tracking_uri()} ({exc})") from None
        if not hasattr(python_model, "spotter"):
            raise ValueError(f"{model}: not a model registered by `pld export --register`")
        return python_model.spotter, python_model.card
    from distill.runtime.deployment.export import ONNX_FILE, export_run

    out = Path(tempfile.mkdtemp(prefix="pld-predict-"))
    card = export_run(model, out=out, int8=False, tracking=tracking, say=lambda line: None)
    say(f"model: {card['stage']} of chain {card['chain_run_id']}, exported to {out}")
    return OnnxSpotter(out / ONNX_FILE), card


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """A whole file as float32 mono at ``sample_rate`` (resampled and downmixed as datasets are)."""
    if not Path(path).is_file():
        raise AudioError(f"{path}: no such file")
    frames, rate = audio_frames(path)
    clip = load_clip(path, 0, max(1, math.ceil(frames * sample_rate / rate)), sample_rate, ClipPolicy())
    if clip.waveform is None:
        raise AudioError(f"{path}: {clip.problem}")
    return clip.waveform.astype(np.float32) / 32768.0


def detect(scores: np.ndarray, classes: np.ndarray, starts: np.ndarray, threshold: float, labels: list[str],
           rate: int, input_samples: int, file: str) -> list[Detection]:
    """One detection per maximal run of windows with ``scores`` ≥ ``threshold``, at its peak."""
    above = scores >= threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], above.astype(np.int8), [0]])))
    out = []
    for lo, hi in zip(edges[::2], edges[1::2]):
        peak = lo + int(np.argmax(scores[lo:hi]))
        start = int(starts[peak])
        out.append(Detection(file, labels[classes[peak]], round(start * 1000 / rate),
                             round((start + input_samples) * 1000 / rate), round(float(scores[peak]), 4)))
    return out


def merge_events(detections: list[Detection], merge_ms: float) -> list[Detection]:
    """Non-maximum suppression over events: strongest first, a detection is kept unless a kept
    one of the same keyword in the same file starts within ``merge_ms`` of it. In time order."""
    kept: list[Detection] = []
    for d in sorted(detections, key=lambda d: -d.score):
        if not any(k.file == d.file and k.keyword == d.keyword and abs(k.start_ms - d.start_ms) < merge_ms
                   for k in kept):
            kept.append(d)
    return sorted(kept, key=lambda d: (d.file, d.start_ms))


def spot_file(spotter: OnnxSpotter, card: dict, path: str, hop_ms: float, threshold: float,
              progress: Callable[[str], None] | None = None, merge_ms: float = 0.0) -> tuple[list[Detection], float, float]:
    """Detections in one file, its seconds of audio and the seconds it took to score them."""
    rate, n = card["sample_rate"], card["input_samples"]
    audio = read_audio(path, rate)
    seconds = len(audio) / rate
    t = time.perf_counter()
    report = (lambda share: progress(f"{path}: {share}% of {seconds:.0f} s")) if progress and seconds > PROGRESS_AFTER_S \
        else None
    scores, classes, starts = window_scores(spotter, card, audio, hop_ms, report)
    compute = time.perf_counter() - t
    return merge_events(detect(scores, classes, starts, threshold, card["labels"], rate, n, path), merge_ms), seconds, compute


def window_scores(spotter: OnnxSpotter, card: dict, audio: np.ndarray, hop_ms: float,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per window of ``audio`` (float32, one every ``hop_ms``; padded to one window when
    shorter): its top keyword posterior, that keyword's class and the window's start.
    ``progress`` gets the share done, in tens of per cent."""
    rate, n = card["sample_rate"], card["input_samples"]
    if len(audio) < n:
        audio = np.pad(audio, (0, n - len(audio)))
    hop = max(1, round(hop_ms * rate / 1000))
    starts = np.arange(0, len(audio) - n + 1, hop)
    keyword = np.array([label not in (SILENCE, UNKNOWN) for label in card["labels"]])
    scores, classes = np.empty(len(starts), np.float32), np.empty(len(starts), np.int64)
    shown = 0
    for lo in range(0, len(starts), BATCH):
        batch = starts[lo:lo + BATCH]
        post = spotter(np.stack([audio[s:s + n] for s in batch]))[:, keyword]
        scores[lo:lo + len(batch)], classes[lo:lo + len(batch)] = post.max(-1), np.flatnonzero(keyword)[post.argmax(-1)]
        done = int(10 * (lo + len(batch)) / len(starts))
        if progress and done > shown:
            shown = done
            progress(10 * done)
    return scores, classes, starts


MERGE_MS = 1000.0  # one word per second and keyword: a command is not repeated faster
# The default operating point: a spotter that fires on other speech hundreds of times an hour
# (the 90 %-recall point of single clips, docs/deploy.md) is not usable on a recording.
DEFAULT_MAX_FA_PER_HOUR = 10.0


def operating_point(card: dict, threshold: float | None, max_fa_per_hour: float | None) -> tuple[float, str]:
    """The threshold to fire at and how to describe it: ``--threshold`` as given, else the card's
    point for ``--max-fa-per-hour`` (default 10) with its measured false accepts and recall; a
    card without operating points (exported before they existed) falls back to its threshold."""
    from distill.core.detection import threshold_for

    if threshold is not None:
        return threshold, f"threshold {threshold:.4f} (--threshold)"
    points = card.get("operating_points")
    if not points:
        if max_fa_per_hour is not None:
            raise ValueError("--max-fa-per-hour: this model's card has no operating points; export it again with "
                             "this version of pld export")
        return card["threshold"], f"threshold {card['threshold']:.4f} (the card's 90 % recall point)"
    budget = DEFAULT_MAX_FA_PER_HOUR if max_fa_per_hour is None else max_fa_per_hour
    point = threshold_for(points, budget)
    minutes = f" in {card['negative_hours'] * 60:.1f} min of negatives" if card.get("negative_hours") else ""
    return point["threshold"], (f"threshold {point['threshold']:.4f} (≤ {budget:g} false accepts per hour: "
                                f"{point['fa_per_hour']:.1f} per hour and recall {point['recall']:.3f} measured on the "
                                f"test split{minutes})")


def predict_files(spotter: OnnxSpotter, card: dict, paths: list[str], point: tuple[float, str], *,
                  hop_ms: float = 100.0, merge_ms: float = MERGE_MS, as_json: bool = False,
                  say: Callable[[str], None] = print) -> int:
    """Spot keywords in every file at the operating ``point`` (``operating_point``: the threshold
    and how to describe it); prints detections (a table, or JSON lines) and a summary on stderr.
    Returns the exit code: 0, or 1 when some file could not be read (the others are done)."""
    threshold, described = point
    errors, audio_s, compute_s, found = 0, 0.0, 0.0, 0
    if not as_json:
        say(f"{'file':<40} {'keyword':<10} {'start_ms':>9} {'end_ms':>9} {'score':>7}")
    err = lambda line: print(line, file=sys.stderr)  # noqa: E731
    for path in paths:
        try:
            detections, seconds, compute = spot_file(spotter, card, path, hop_ms, threshold, progress=err,
                                                     merge_ms=merge_ms)
        except (AudioError, OSError) as exc:
            errors += 1
            err(f"pld: error: {exc}")
            continue
        audio_s, compute_s, found = audio_s + seconds, compute_s + compute, found + len(detections)
        for d in detections:
            say(json.dumps(asdict(d)) if as_json else
                f"{d.file:<40} {d.keyword:<10} {d.start_ms:>9} {d.end_ms:>9} {d.score:>7.4f}")
    speed = f"; real-time factor {audio_s / compute_s:.0f}× (audio seconds per compute second)" if compute_s > 0 else ""
    err(f"{found} detection(s) in {len(paths) - errors} file(s), {audio_s:.1f} s of audio at {described}{speed}"
        + (f"; {errors} file(s) could not be read" if errors else ""))
    return 1 if errors else 0
