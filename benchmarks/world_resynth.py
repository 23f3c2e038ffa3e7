"""A corpus whose training clips are partly WORLD resyntheses with a new voice source.

    python benchmarks/world_resynth.py SRC DST [--share 0.5] [--seed 0]

An experiment for the corpus issue (not part of `pld data synth`): every engine the project may use
has been tried, so this makes new voices from the old ones. DST is a hard-linked copy of SRC (a
`pld data synth` corpus) in which a ``--share`` of the training clips (not in validation_list.txt
or testing_list.txt, not in the unseen-engine parts) are analysed with the WORLD vocoder (pyworld:
DIO + StoneMask pitch, CheapTrick envelope, D4C aperiodicity) and synthesized again with
- the pitch level scaled by a factor drawn log-uniformly from [0.75, 1.33] and its excursions
  around the median by one from [0.3, 1.7] (flat to lively intonation);
- the spectral envelope's frequency axis scaled by one from [0.88, 1.14] (vocal tract length);
- WORLD's own vocoder as the voice source, which no engine of the corpus uses;
each clip's RMS kept. A replaced clip is written to a new file and renamed over the link, so SRC
is never touched. Validation and test clips are SRC's, so a teacher trained on DST is scored on
the same clips as one trained on SRC (`benchmarks/engine_choice.py --extra NAME=data.path=DST`).
Needs `pip install pyworld-prebuilt` (a wheel of pyworld 0.3.x; not a project dependency).
"""

from __future__ import annotations

import argparse
import os
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf


def resynthesize(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    import pyworld as pw

    f0, t = pw.dio(x, sr, f0_floor=60.0, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, sr)
    sp, ap = pw.cheaptrick(x, f0, t, sr), pw.d4c(x, f0, t, sr)
    level, spread = np.exp(rng.uniform(np.log(0.75), np.log(1.33))), rng.uniform(0.3, 1.7)
    voiced = f0 > 0
    if voiced.any():
        centre = np.median(np.log(f0[voiced]))
        f0 = np.where(voiced, np.exp(centre + spread * (np.log(np.maximum(f0, 1e-3)) - centre)) * level, 0.0)
    bins = np.arange(sp.shape[1])
    alpha = rng.uniform(0.88, 1.14)
    sp = np.stack([np.interp(bins / alpha, bins, row) for row in sp])
    y = pw.synthesize(f0, np.ascontiguousarray(sp), ap, sr, frame_period=5.0)[: len(x)]
    y = np.pad(y, (0, len(x) - len(y)))
    y *= np.sqrt(np.mean(x ** 2) / max(np.mean(y ** 2), 1e-12))
    return np.clip(y, -1.0, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--share", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.dst.exists():
        raise SystemExit(f"{args.dst} exists; remove it or name another")
    subprocess.run(["cp", "-al", str(args.src), str(args.dst)], check=True)
    held = set()
    for name in ("validation_list.txt", "testing_list.txt"):
        held |= set((args.src / name).read_text().split())
    files = sorted(p for p in args.src.glob("*/*.wav") if not p.parent.name.startswith("_"))
    train = [p for p in files if f"{p.parent.name}/{p.name}" not in held]
    rng = np.random.default_rng(args.seed)
    done = 0
    for p in train:
        if rng.random() >= args.share:
            continue
        x, sr = sf.read(p, dtype="float64")
        out = args.dst / p.parent.name / p.name
        tmp = out.with_suffix(".tmp.wav")
        sf.write(tmp, resynthesize(x, sr, rng), sr, subtype=sf.info(p).subtype)
        os.replace(tmp, out)  # a new inode: SRC, hard-linked, keeps its file
        done += 1
    print(f"{len(train)} training clips of {len(files)}; {done} resynthesized into {args.dst}")


if __name__ == "__main__":
    main()
