"""Where augmentation runs: its cost inside the training step, beside the step itself.

    python benchmarks/augment_cost.py [--model res8_narrow] [--batch 64] [--seconds 3] [--threads 2]

For 500 ms and 1000 ms inputs, one process: the median time of a training step (forward,
backward, AdamW) without augmentation, of the augmentation alone (shift + noise + SpecAugment
masks, seeded per batch, on the step's device), and their ratio. Doing the same work in Ray
Data instead would add a map task per block and a new copy of every epoch's rows (augmented
rows differ per epoch), on top of the same arithmetic.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from distill.core.augment import AugmentConfig, NoiseBank, augment_waveforms, batch_generator, spectrogram_masks
from distill.core.models import build_model


def timed(fn, seconds: float) -> float:
    fn()  # warm-up
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="res8_narrow")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = AugmentConfig(spec_time_masks=2, spec_freq_masks=2)
    bank = NoiseBank.generated(0, 30 * 16000)
    print(f"{'input_ms':>8}  {'step_ms':>8}  {'augment_ms':>10}  {'augment/step':>12}")
    for ms in (500, 1000):
        samples = ms * 16
        model = build_model(args.model, 12)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = (torch.randn(args.batch, samples) * 3000).to(torch.int16)
        y = torch.randint(0, 12, (args.batch,))
        step_no = iter(range(10**9))

        def augment():
            g = batch_generator(0, 0, 0, next(step_no))
            waves = augment_waveforms(x, cfg, bank, 16000, g)
            return waves, spectrogram_masks((args.batch, 1, 40, model.features.frames(samples)), cfg, 10.0, g)

        def step():
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step_s, aug_s = timed(step, args.seconds), timed(augment, args.seconds)
        print(f"{ms:>8}  {step_s * 1e3:>8.1f}  {aug_s * 1e3:>10.2f}  {aug_s / step_s:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
