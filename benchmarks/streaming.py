"""What a 100 ms hop costs on a stream, against one decision on a whole 500 ms window.

    python benchmarks/streaming.py [--repeats 2000] [--json OUT]

For each network: the windowed decision (front end and network on the 500 ms window, eager
PyTorch, batch 1, one thread) against one hop's step of its streaming executor, which gives the
same answer: ``StreamingSpotter`` for the windowed networks (res8_narrow, res8: it shares the
window's log-mel frames, the network runs on the whole window) and ``CausalStream`` for the
streaming ones (res8_narrow_causal, res8_causal: each layer computes only its new frames and
columns). Multiply-adds are counted with ``torch.utils.flop_counter`` with the folded front end
both ways (torch.stft's FFT is not counted). Times are medians over ``repeats`` calls, the window
and the hop interleaved call by call, so that the machine's load reaches both alike. For the
streaming networks the same under onnxruntime (one thread): the window as ``pld export`` writes
it against the hop as ``export_stream_step`` writes it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from distill.core.features import FeatureConfig, FoldedLogMel  # noqa: E402
from distill.core.models import build_model  # noqa: E402
from distill.core.streaming import CausalStream, StreamingSpotter  # noqa: E402

WINDOW, HOP = 8000, 1600  # 500 ms and 100 ms at 16 kHz
NETWORKS = {"res8_narrow": "utterance", "res8": "utterance", "res8_narrow_causal": "none", "res8_causal": "none"}


def flops(run) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        run()
    return counter.get_total_flops()


def interleaved_medians_us(runs, repeats: int, warmup: int = 50) -> list[float]:
    """Median µs of each of ``runs``, called in turn ``warmup + repeats`` times (the warm-up untimed)."""
    times = [[] for _ in runs]
    for i in range(warmup + repeats):
        for timed, run in zip(times, runs):
            t = time.perf_counter()
            run()
            if i >= warmup:
                timed.append(time.perf_counter() - t)
    return [statistics.median(t) * 1e6 for t in times]


def measure(name: str, normalize: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(name, 12, {}, FeatureConfig(normalize=normalize)).eval()
    audio = torch.randn(1, WINDOW + 2 * HOP) * 0.1
    causal = name.endswith("_causal")
    stream = (CausalStream if causal else StreamingSpotter)(model, WINDOW, HOP)
    for lo in range(0, WINDOW, HOP):  # a full window first: from then on each step is one hop's work
        stream.step(audio[:, lo:lo + HOP])
    chunk, window = audio[:, WINDOW:WINDOW + HOP], audio[:, :WINDOW]
    folded = FoldedLogMel(model.features)
    step_flops = flops(lambda: stream.step(chunk))
    window_flops = flops(lambda: model.net(folded(window)))
    with torch.inference_mode():
        window_us, hop_us = interleaved_medians_us([lambda: model(window), lambda: stream.step(chunk)], repeats)
    row = {"network": name, "streaming": "CausalStream" if causal else "StreamingSpotter",
           "window_flops": window_flops, "hop_flops": step_flops, "flops_ratio": step_flops / window_flops,
           "window_us": window_us, "hop_us": hop_us, "time_ratio": hop_us / window_us}
    if causal:
        row.update(onnx_times(model, audio.numpy(), repeats))
    return row


def onnx_times(model, audio, repeats: int) -> dict:
    import tempfile

    from distill.core.export import OnnxSpotter, export_onnx
    from distill.core.stream_export import OnnxStream, export_stream_step

    tmp = Path(tempfile.mkdtemp(prefix="pld-stream-"))
    spotter = OnnxSpotter(export_onnx(model, WINDOW, tmp / "window.onnx"))
    stream = OnnxStream(export_stream_step(model, WINDOW, HOP, tmp / "step.onnx"))
    window, chunk = audio[:, :WINDOW], audio[:, WINDOW:WINDOW + HOP]
    window_us, hop_us = interleaved_medians_us([lambda: spotter(window), lambda: stream.step(chunk)], repeats)
    return {"onnx_window_us": window_us, "onnx_hop_us": hop_us, "onnx_time_ratio": hop_us / window_us}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = [measure(name, normalize, args.repeats) for name, normalize in NETWORKS.items()]
    print(f"{'network':<20} {'streaming':<17} {'window MFLOP':>12} {'hop MFLOP':>10} {'ratio':>6} "
          f"{'window µs':>10} {'hop µs':>8} {'ratio':>6}")
    for r in rows:
        print(f"{r['network']:<20} {r['streaming']:<17} {r['window_flops'] / 1e6:>12.2f} {r['hop_flops'] / 1e6:>10.2f} "
              f"{r['flops_ratio']:>6.3f} {r['window_us']:>10.0f} {r['hop_us']:>8.0f} {r['time_ratio']:>6.3f}")
    print("\nonnxruntime, batch 1, one thread (the window as pld export writes it, the hop as export_stream_step does):")
    for r in rows:
        if "onnx_hop_us" in r:
            print(f"{r['network']:<20} window {r['onnx_window_us']:>6.0f} µs  hop {r['onnx_hop_us']:>6.0f} µs  "
                  f"ratio {r['onnx_time_ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
