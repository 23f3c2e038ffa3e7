"""How intelligible each engine's voices are: PocketSphinx, a recogniser of human speech (its
bundled en-us acoustic model), restricted to the corpus's vocabulary, on every clip of a
`pld data synth` corpus, per engine and voice.

    python benchmarks/intelligibility.py data/synth-sc [--max-per-voice 200] [--out FILE.json]

A crude but independent check: it was trained on people, not on any engine we use, so a voice
it cannot follow at all says its words in a way no person does. Needs `pip install pocketsphinx`
(a benchmark-only dependency). Reports accuracy with a Wilson 95 % interval per voice.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.stats import binomtest


def decoder(words: list[str]):
    from pocketsphinx import Config, Decoder, get_model_path
    model = Path(get_model_path()) / "en-us"
    grammar = Path(tempfile.mkdtemp()) / "words.gram"
    grammar.write_text("#JSGF V1.0;\ngrammar words;\npublic <w> = " + " | ".join(words) + " ;\n")
    return Decoder(Config(hmm=str(model / "en-us"), dict=str(model / "cmudict-en-us.dict"), jsgf=str(grammar),
                          loglevel="FATAL"))


def recognise(dec, clip: np.ndarray) -> str:
    pad = np.zeros(3200, np.float32)  # 200 ms of silence either side: the recogniser wants a lead-in
    pcm = (np.clip(np.concatenate([pad, clip, pad]), -1, 1) * 32767).astype(np.int16).tobytes()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    return hyp.hypstr.strip() if hyp else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--max-per-voice", type=int, default=200)
    ap.add_argument("--out")
    args = ap.parse_args()
    root = Path(args.corpus)
    meta = json.loads((root / "synth.json").read_text())
    rows = list(csv.DictReader(open(root / "synth_manifest.csv")))
    dec = decoder(meta["words"])
    by_voice: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_voice[f"{r['engine']}:{r['voice']}"].append(r)
    rng = np.random.default_rng(0)
    result = {}
    for voice, group in sorted(by_voice.items()):
        pick = [group[i] for i in sorted(rng.permutation(len(group))[:args.max_per_voice])]
        hits = sum(recognise(dec, sf.read(str(root / r["path"]), dtype="float32")[0]) == r["word"] for r in pick)
        ci = binomtest(hits, len(pick)).proportion_ci(method="wilson")
        result[voice] = {"clips": len(pick), "accuracy": round(hits / len(pick), 4),
                         "ci95": [round(ci.low, 4), round(ci.high, 4)], "part": group[0]["part"]}
        print(f"{voice:32s} {result[voice]['part']:14s} {hits / len(pick):.3f} [{ci.low:.3f}, {ci.high:.3f}] "
              f"n={len(pick)}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"corpus": str(root), "words": meta["words"], "voices": result},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
