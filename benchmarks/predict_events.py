"""`pld predict` on one long recording made of a chain's held-out test clips: hits, misses,
repeated detections and false alarms per hour of silence and of non-keyword speech.

    python benchmarks/predict_events.py --model EXPORT/model.onnx --source RUN_DIR/source [--json OUT]

The recording: every test clip that is not `_silence_`, in a seeded random order, each after
1 s of a `_silence_` clip of the same split (background noise), so the words are 2 s apart.
A detection counts where its window's centre lies: in a keyword clip of its own keyword (the
first is a hit, more are repeats), in a keyword clip of another keyword (a substitution), in an
`_unknown_` word (a false alarm on speech), or in a silence gap (a false alarm on silence; one
whose window already reaches into the next word is an *onset* detection, counted apart by
whether it names that word or another: the phantoms before a word). Run
with `--merge-ms 0` (every threshold crossing) and with the default merging, at the card's
threshold (90 % recall of single clips), at pld predict's default operating point (at most 10
false accepts per hour on the test split's silence and unknown clips) and at 0.9, so the table
shows what merging removes and what each threshold costs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.core.export import OnnxSpotter  # noqa: E402
from distill.names import SILENCE, UNKNOWN  # noqa: E402
from distill.runtime.deployment.predict import MERGE_MS, detect, merge_events, operating_point, window_scores  # noqa: E402
from distill.runtime.execution.source import load_split_arrays  # noqa: E402

RATE = 16000


def long_recording(waves: np.ndarray, labels: np.ndarray, names: list[str], seed: int):
    """(audio float32, intervals [(start, end, label name)] of the words and the gaps)."""
    rng = np.random.default_rng(seed)
    silence = waves[labels == names.index(SILENCE)]
    words = rng.permutation(np.flatnonzero(labels != names.index(SILENCE)))
    parts, intervals, at = [], [], 0
    for k, i in enumerate(words):
        gap = silence[k % len(silence)][:RATE]
        for piece, name in ((gap, SILENCE), (waves[i], names[labels[i]])):
            parts.append(piece)
            intervals.append((at, at + len(piece), name))
            at += len(piece)
    return np.concatenate(parts).astype(np.float32) / 32768.0, intervals


def tally(detections, intervals) -> dict:
    ends = np.array([e for _, e, _ in intervals])
    keyword_clips = [i for i, (_, _, name) in enumerate(intervals) if name not in (SILENCE, UNKNOWN)]
    seconds = {kind: sum(e - s for s, e, name in intervals if (name == kind) == (kind != "keyword")
                         and (kind != "keyword" or name not in (SILENCE, UNKNOWN))) / RATE
               for kind in (SILENCE, UNKNOWN, "keyword")}
    hit, out = set(), {"hits": 0, "repeats": 0, "substitutions": 0, "fa_speech": 0, "fa_silence": 0,
                       "onset_same": 0, "onset_other": 0}
    for d in detections:
        centre = (d.start_ms + d.end_ms) / 2 * RATE / 1000
        i = int(np.searchsorted(ends, centre, side="right"))
        name = intervals[min(i, len(intervals) - 1)][2]
        if name == d.keyword:
            out["repeats" if i in hit else "hits"] += 1
            hit.add(i)
        elif name == SILENCE:
            out["fa_silence"] += 1
            nxt = intervals[i + 1] if i + 1 < len(intervals) else None
            if nxt is not None and nxt[2] != SILENCE and d.end_ms * RATE / 1000 > nxt[0]:
                out["onset_same" if nxt[2] == d.keyword else "onset_other"] += 1
        elif name == UNKNOWN:
            out["fa_speech"] += 1
        else:
            out["substitutions"] += 1
    out.update(keyword_clips=len(keyword_clips), misses=len(keyword_clips) - len(hit),
               silence_hours=seconds[SILENCE] / 3600, unknown_hours=seconds[UNKNOWN] / 3600,
               fa_per_hour_silence=out["fa_silence"] / (seconds[SILENCE] / 3600),
               fa_per_hour_speech=out["fa_speech"] / (seconds[UNKNOWN] / 3600) if seconds[UNKNOWN] else float("nan"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="an exported model.onnx (card.json beside it)")
    ap.add_argument("--source", required=True, help="the chain's sealed source dataset (RUN_DIR/source)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hop-ms", type=float, default=100.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    spotter = OnnxSpotter(args.model)
    card = json.loads(Path(args.model).with_name("card.json").read_text())
    waves, labels = load_split_arrays(args.source, args.split)
    audio, intervals = long_recording(waves, labels, card["labels"], args.seed)
    scores, classes, starts = window_scores(spotter, card, audio, args.hop_ms)
    rows = []
    default, _ = operating_point(card, None, None)  # pld predict's default: ≤ 10 false accepts per hour
    for threshold in dict.fromkeys((card["threshold"], default, 0.9)):
        raw = detect(scores, classes, starts, threshold, card["labels"], RATE, card["input_samples"], "long")
        for merge_ms in (0.0, MERGE_MS):
            rows.append({"threshold": threshold, "merge_ms": merge_ms,
                         **tally(merge_events(raw, merge_ms), intervals)})
    print(f"{card['stage']} ({card['input_ms']} ms) on {len(audio) / RATE / 60:.1f} min of its {args.split} clips; "
          f"card threshold {card['threshold']:.4f} (90 % recall on the test keywords); pld predict's default "
          f"{default:.4f}")
    print("| threshold | merge ms | keyword words | hits | misses | repeats | substitutions | "
          "FA on unknown words (/h) | FA in silence (/h) | of which at a word's onset: its word / another |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threshold']:.4f} | {r['merge_ms']:.0f} | {r['keyword_clips']} | {r['hits']} | {r['misses']} | "
              f"{r['repeats']} | {r['substitutions']} | {r['fa_speech']} ({r['fa_per_hour_speech']:.0f}) | "
              f"{r['fa_silence']} ({r['fa_per_hour_silence']:.0f}) | {r['onset_same']} / {r['onset_other']} |")
    if args.json:
        args.json.write_text(json.dumps({"card_threshold": card["threshold"], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
