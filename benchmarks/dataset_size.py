"""What a finished chain wrote, by kind, and what reading crops by reference costs.

    python benchmarks/dataset_size.py RUN_DIR [--repeats 5] [--json OUT]

RUN_DIR is a chain's run directory (``<storage.root>/<name>-<run id>``, the chain run's
``pld.run_dir`` tag). Per stage: rows, the bytes of its distilled dataset, and the bytes the
same rows take when they carry their crops' audio, as pld wrote them before crop references
(measured: the rows are read with their crops and written again with Ray Data, the old columns
and compression). For the chain: the source, the distilled datasets, the models, Ray Train's and
the local runner's checkpoints, and the rest, as bytes and as a multiple of the source.

Reading: the largest stage's training inputs materialized both ways, interleaved ``--repeats``
times: the old layout (audio in the rows: ``read_parquet``) and the new (rows cut from the
source as it is read: ``read_training_crops``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import ray
import ray.data

from distill.runtime.execution.relabel import COLUMNS, TRAIN_COLUMNS, read_training_crops
from distill.runtime.infra.session import configure_data
from scale import tree_bytes  # benchmarks/scale.py, beside this script


def inline_copy(stage_dir: Path, source_dir: Path, out: Path) -> int:
    """The stage's rows with each crop's audio in them (the layout before crop references); its bytes."""
    columns = tuple(c for c in COLUMNS if c not in ("clip_id", "offset", "length"))
    read_training_crops(stage_dir, source_dir, columns=columns).write_parquet(str(out))
    return tree_bytes(out)


def chain_bytes(run_dir: Path) -> dict[str, int]:
    kinds = {"source": tree_bytes(run_dir / "source"), "distilled": 0, "models": 0, "checkpoints": 0}
    for stage in sorted((run_dir / "stages").iterdir()):
        kinds["distilled"] += tree_bytes(stage / "data")
        kinds["models"] += tree_bytes(stage / "model")
        kinds["checkpoints"] += tree_bytes(stage / "train")
    kinds["other"] = tree_bytes(run_dir) - sum(kinds.values())
    return kinds


def median_interleaved(runs: dict[str, callable], repeats: int) -> dict[str, list[float]]:
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    run_dir, source = args.run_dir, args.run_dir / "source"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    configure_data()
    tmp = Path(tempfile.mkdtemp(prefix="pld-size-"))
    stages = []
    for stage in sorted((run_dir / "stages").iterdir()):
        manifest = json.loads((stage / "manifest.json").read_text())
        stages.append({"stage": stage.name, "rows": manifest["rows"], "crop_samples": manifest["crop_samples"],
                       "bytes": tree_bytes(stage / "data"), "inline_bytes": inline_copy(stage, source, tmp / stage.name)})
    for s in stages:
        s["share"] = s["bytes"] / s["inline_bytes"]
    kinds = chain_bytes(run_dir)
    before = {**kinds, "distilled": sum(s["inline_bytes"] for s in stages)}
    largest = max(stages, key=lambda s: s["rows"] * s["crop_samples"])
    stage_dir = run_dir / "stages" / largest["stage"]
    read = median_interleaved({
        "inline": lambda: ray.data.read_parquet(str(tmp / largest["stage"])).select_columns(
            ["waveform", *TRAIN_COLUMNS]).materialize(),
        "references": lambda: read_training_crops(stage_dir, source).materialize()}, args.repeats)
    result = {"run_dir": str(run_dir), "stages": stages, "chain_bytes": kinds, "chain_bytes_inline": before,
              "chain_ratio": sum(kinds.values()) / kinds["source"],
              "chain_ratio_inline": sum(before.values()) / kinds["source"],
              "read": {"stage": largest["stage"], "rows": largest["rows"],
                       **{f"{k}_s": statistics.median(v) for k, v in read.items()},
                       **{f"{k}_runs_s": v for k, v in read.items()}}}
    shutil.rmtree(tmp, ignore_errors=True)
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    print(f"{'stage':<18} {'rows':>6} {'references':>11} {'with audio':>11} {'share':>7}")
    for s in stages:
        print(f"{s['stage']:<18} {s['rows']:>6} {mb(s['bytes']):>11} {mb(s['inline_bytes']):>11} {s['share']:>7.1%}")
    print("chain: " + ", ".join(f"{k} {mb(v)}" for k, v in kinds.items())
          + f" = {result['chain_ratio']:.2f}× the source (with audio in the rows: {result['chain_ratio_inline']:.2f}×)")
    r = result["read"]
    print(f"reading {r['stage']}'s {r['rows']} training crops: {r['references_s']:.2f} s cut from the source, "
          f"{r['inline_s']:.2f} s with the audio in the rows (medians of {args.repeats}, interleaved)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
