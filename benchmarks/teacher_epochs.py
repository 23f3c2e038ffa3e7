"""Which of a stage's epochs to keep: every kept epoch of a stage, and the mean of its last K
epochs' weights, scored on a corpus's validation parts.

    python benchmarks/teacher_epochs.py RUN_DIR/stages/teacher/train/teacher-local \
        --corpus data/synth-sc [--first 15] [--average 5] [--test] [--json OUT]

The stage must have been trained with ``train.keep_all_checkpoints: true`` (every epoch's
weights as trained). Each epoch, and the mean of the last ``--average`` epochs' weights (what
``train.keep: average`` keeps), is evaluated with the stream protocol on the corpus's
validation split and its unseen-engine validation part; ``--test`` adds the test split, the
unseen-accent part and the unseen-engine test part, for the record. Score a teacher on a corpus
it did not train on, so that no number here chose its epoch.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from distill.core.checkpoint import load_model_dir  # noqa: E402
from distill.data.base import parse_dataset_options  # noqa: E402
from distill.runtime.execution.chain_eval import HELD_OUT_PARTS, eval_set_clips  # noqa: E402
from distill.runtime.execution.evaluate import evaluate_model_dir  # noqa: E402


def parts(corpus: str, test: bool) -> dict[str, tuple[dict, str]]:
    """(dataset options, split) of each part scored: the corpus's own splits and its held-out parts
    as a chain reads them (``HELD_OUT_PARTS``)."""
    chosen = {"validation": ({"name": "speech_commands", "path": corpus}, "validation"),
              "unseen_engine_validation": (HELD_OUT_PARTS["unseen_engine_validation"](corpus), "test")}
    if test:
        chosen |= {"test": ({"name": "speech_commands", "path": corpus}, "test"),
                   **{part: (HELD_OUT_PARTS[part](corpus), "test")
                      for part in ("unseen_accent_test", "unseen_engine_test")}}
    return chosen


def mean_weights(epoch_dirs: list[Path], out: Path) -> Path:
    """A model directory holding the mean of ``epoch_dirs``' weights (batch-norm statistics too,
    as ``AveragedModel(use_buffers=True)`` averages them; integer buffers from the last)."""
    states = [torch.load(d / "model.pt", weights_only=True) for d in epoch_dirs]
    mean = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[-1].items()}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(mean, out / "model.pt")
    shutil.copy(epoch_dirs[-1] / "model.json", out / "model.json")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train_dir", type=Path, help="a stage's checkpoint folder (epoch-NNNN subfolders)")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--first", type=int, default=0, help="score epochs from this one (0-based)")
    ap.add_argument("--average", type=int, default=5, help="the last K epochs averaged")
    ap.add_argument("--test", action="store_true", help="also the test parts (for the record)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    epochs = sorted(p for p in args.train_dir.glob("epoch-*") if (p / "model.pt").exists())
    if len(epochs) < args.average:
        raise SystemExit(f"{args.train_dir}: {len(epochs)} epochs with weights; train the stage with "
                         "train.keep_all_checkpoints: true")
    _, spec = load_model_dir(epochs[-1])
    corpus = str(Path(args.corpus).resolve())
    clips = {name: eval_set_clips(parse_dataset_options(options), labels=spec.labels,
                                  sample_rate=spec.features["sample_rate"], clip_ms=spec.input_ms, split=split,
                                  say=lambda _: None)
             for name, (options, split) in parts(corpus, args.test).items()}

    def score(model_dir: Path) -> dict[str, float]:
        return {name: round(evaluate_model_dir(str(model_dir), waves, labels, hop_samples=1600, batch_size=256,
                                               latency_repeats=1)["test_acc_stream"], 4)
                for name, (_, waves, labels) in clips.items()}

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows[f"mean of the last {args.average}"] = score(mean_weights(epochs[-args.average:], Path(tmp) / "mean"))
    for epoch in epochs:
        extra = json.loads((epoch / "model.json").read_text()).get("extra", {})
        if extra.get("epoch", 0) >= args.first:
            rows[epoch.name] = {"own_validation": round(extra.get("val_acc", float("nan")), 4), **score(epoch)}
    for name, row in rows.items():
        print(f"{name:>20}  " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
