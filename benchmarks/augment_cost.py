"""Where augmentation runs: its cost inside the training step, beside the step itself.

    python benchmarks/augment_cost.py [--model res8_narrow] [--batch 64] [--seconds 3] [--threads 2] [--each]

For 500 ms and 1000 ms inputs, one process: the median time of a training step (forward,
backward, AdamW) without augmentation, of the augmentation alone (shift + noise + SpecAugment
masks, seeded per batch, on the step's device), and their ratio. ``--each`` adds a row per
augmentation that is off by default (speed, reverb, gain, band, codec, warp, mixstyle, mixup), each alone on
every input (prob 1: its worst case) with shift and noise off. The frequency warp (in the front
end) and Freq-MixStyle (on the features) run inside the step: their cost is a step with them less
a step without. Doing the same work in Ray
Data instead would add a map task per block and a new copy of every epoch's rows (augmented
rows differ per epoch), on top of the same arithmetic.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from distill.core.augment import (AugmentConfig, NoiseBank, RoomBank, augment_waveforms, batch_generator,
                                  frequency_warps, mix_inputs, mixups, spectrogram_masks, style_mixes)
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
    ap.add_argument("--each", action="store_true", help="also time each off-by-default augmentation alone")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    configs = {"standard": AugmentConfig(spec_time_masks=2, spec_freq_masks=2)}
    if args.each:
        alone = dict(time_shift_ms=0, noise_prob=0)
        configs |= {name: AugmentConfig(**alone, **{f"{name}_prob": 1.0})
                    for name in ("speed", "reverb", "gain", "band", "codec", "warp", "mixstyle", "mixup")}
    bank = NoiseBank.generated(0, 30 * 16000)
    rooms = RoomBank.generated(0, 64, 16000) if args.each else None
    print(f"{'input_ms':>8}  {'augmentation':>12}  {'step_ms':>8}  {'augment_ms':>10}  {'augment/step':>12}")
    for ms in (500, 1000):
        samples = ms * 16
        model = build_model(args.model, 12)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = (torch.randn(args.batch, samples) * 3000).to(torch.int16)
        y = torch.randint(0, 12, (args.batch,))
        step_no = iter(range(10**9))

        def augment(cfg: AugmentConfig):
            g = batch_generator(0, 0, 0, next(step_no))
            waves = augment_waveforms(x, cfg, bank, 16000, g, rooms)
            mixup = mixups(args.batch, cfg, g)
            if mixup is not None:  # on the waveforms, after the rest (its second loss term is not counted)
                waves = mix_inputs(waves, *mixup)
            return waves, spectrogram_masks((args.batch, 1, 40, model.features.frames(samples)), cfg, 10.0, g)

        def step(warp: torch.Tensor | None = None, mix: tuple[torch.Tensor, torch.Tensor] | None = None):
            loss = torch.nn.functional.cross_entropy(model(x, None, warp, mix), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step_s = timed(step, args.seconds)
        for name, cfg in configs.items():
            if cfg.warp_prob > 0:  # in the front end: a warped step less a plain one
                aug_s = timed(lambda: step(frequency_warps(args.batch, cfg, batch_generator(0, 0, 0, 0))),
                              args.seconds) - step_s
            elif cfg.mixstyle_prob > 0:  # on the features: a mixed step less a plain one
                aug_s = timed(lambda: step(None, style_mixes(args.batch, cfg, batch_generator(0, 0, 0, 0))),
                              args.seconds) - step_s
            else:
                aug_s = timed(lambda: augment(cfg), args.seconds)
            print(f"{ms:>8}  {name:>12}  {step_s * 1e3:>8.1f}  {aug_s * 1e3:>10.2f}  {aug_s / step_s:>12.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
