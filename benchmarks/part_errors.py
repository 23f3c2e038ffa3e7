"""Where a model errs on a held-out part of a synthesized corpus: accuracy by voice and by word,
and its most frequent confusions (stream protocol, the part's clips as `pld eval` reads them).

    python benchmarks/part_errors.py RUN_DIR/stages/teacher/model data/synth-sc \
        [--part _unseen_engine_validation_ ...] [--json OUT.json]

A part is a prepared test folder of the corpus (`_unseen_engine_validation_`,
`_unseen_engine_test_`); each clip's engine and voice come from the corpus's
`synth_manifest.csv` (silence clips, cut from noise, have none). A diagnosis, not a choice: a
setting is chosen on the validation parts' accuracy (`benchmarks/engine_choice.py`).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from distill.core.checkpoint import load_model_dir
from distill.core.protocols import predict
from distill.data.audio import decode_clip
from distill.data.base import parse_data_spec, build_source_index

PARTS = ("_unseen_engine_validation_", "_unseen_engine_test_")


def part_errors(model_dir: str, corpus: Path, part: str, top: int = 12) -> dict:
    model, spec = load_model_dir(model_dir)
    index = build_source_index(parse_data_spec(f"speech_commands_test:{corpus / part}"))
    clips = index.clips.copy()
    rate = spec.features["sample_rate"]  # the model's own rate: clips resampled to it as `pld eval` does
    waves = np.stack([decode_clip(p, s, rate, rate) for p, s in zip(clips.path, clips.start)])
    with torch.no_grad():
        pred = predict(model.eval(), waves, spec.input_samples, "stream", silence_index=spec.silence_index)
    clips["pred"] = [spec.labels[i] for i in pred]
    manifest = pd.read_csv(corpus / "synth_manifest.csv", usecols=["path", "engine", "voice"])
    manifest["path"] = [str(corpus / p) for p in manifest.path]
    clips = clips.merge(manifest, on="path", how="left").fillna({"engine": "-", "voice": "-"})
    clips["ok"] = clips.pred == clips.label
    wrong = clips[~clips.ok]
    return {"part": part, "clips": len(clips), "accuracy": round(float(clips.ok.mean()), 4),
            "by_voice": {f"{e}:{v}": [round(float(g.ok.mean()), 3), len(g)] for (e, v), g in clips.groupby(["engine", "voice"])},
            "by_word": {w: [round(float(g.ok.mean()), 3), len(g)] for w, g in clips.groupby("label")},
            "confusions": {f"{a} -> {b}": int(n) for (a, b), n in
                           wrong.groupby(["label", "pred"]).size().sort_values(ascending=False).head(top).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="a model directory (model.pt and model.json), e.g. a chain's stages/teacher/model")
    ap.add_argument("corpus", type=Path, help="a corpus made by `pld data synth`")
    ap.add_argument("--part", nargs="*", default=list(PARTS))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    results = [part_errors(args.model_dir, args.corpus.resolve(), part) for part in args.part]
    for r in results:
        print(f"{r['part']}: {r['accuracy']:.3f} of {r['clips']} clips")
        print("  by voice: " + ", ".join(f"{k} {a:.3f} ({n})" for k, (a, n) in r["by_voice"].items()))
        print("  by word:  " + ", ".join(f"{k} {a:.2f}" for k, (a, n) in r["by_word"].items()))
        print("  confusions: " + ", ".join(f"{k} {n}" for k, n in r["confusions"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
