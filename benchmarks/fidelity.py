"""Does PLD beat direct learning and one-shot distillation? The quickstart chain over several
seeds, with hard and with soft labels, reported as mean ± std per method, length and protocol.

    python benchmarks/fidelity.py [--seeds 0 1 2] [--labels hard soft] [--temperature 2]
                                  [--quick] [--json OUT] [--workdir DIR] [--corpus DIR]

Every chain is `configs/quickstart.yaml` (the README quickstart: res8-narrow, 1000 → … → 500 ms,
the synthetic Speech Commands corpus of `make data`) with its seed and label mode changed, run
one after another in this process on one local Ray, tracked in a SQLite MLflow store in the
work directory (compare any two with `pld compare`). The seed moves the model initialisation,
the crops and the data order; the corpus stays the same.

The teacher and the ``direct`` baseline never see a teacher's labels, so the label mode does
not change them: soft-label chains skip ``direct`` and the table shows the hard chain's (same
seed) for both. Each row's accuracies are on the test split; ``fa/h@90%`` is false accepts per
hour at 90 % keyword recall on the split's silence + unknown stream (lower is better).
``--quick`` runs a 12-speaker corpus and a 1000 → 500 ms chain of one epoch: a smoke run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import load_config  # noqa: E402
from distill.runtime.tracking import format_table  # noqa: E402

CONFIG = ROOT / "configs" / "quickstart.yaml"
SYNTH_FULL = ["--speakers", "150", "--unknown-words", "10"]  # the Makefile's `make data`
SYNTH_QUICK = ["--speakers", "12", "--unknown-words", "4"]
QUICK = {"chain.lengths_ms": [1000, 500], "train.epochs": 1, "train.teacher_epochs": 1}
METRICS = {"window": "test_acc_window", "stream": "test_acc_stream", "center": "test_acc_center",
           "fa/h@90%": "test_fa_per_hour_at_90_recall"}


def say(msg: str) -> None:
    print(msg, flush=True)


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    big = max(abs(v) for v in values) >= 10  # false accepts per hour: integers; accuracies: three places
    return f"{statistics.mean(values):.0f} ± {std:.0f}" if big else f"{statistics.mean(values):.3f} ± {std:.3f}"


def run_chains(args, corpus: Path, work: Path) -> list[dict]:
    from distill.runtime.chain import run_chain
    from distill.runtime.report import load_chain

    import mlflow

    uri = f"sqlite:///{work / 'mlflow.db'}"
    rows = []
    for seed in args.seeds:
        for mode in args.labels:
            overrides = {"seed": seed, "name": f"fidelity-{mode}-s{seed}", "data.path": str(corpus),
                         "storage.root": str(work / "runs"), "labels.mode": mode, "tracking.experiment": "fidelity",
                         **({"labels.temperature": args.temperature} if mode == "soft" else {}),
                         **({"chain.baselines": ["one_shot"]} if mode == "soft" and "hard" in args.labels else {}),
                         **(QUICK if args.quick else {})}
            cfg = load_config(CONFIG, overrides)
            say(f"== seed {seed}, {mode} labels")
            t = time.perf_counter()
            result = run_chain(cfg, tracking=uri, new=True, out=lambda line: None)
            say(f"   chain {result.parent_run_id}: {time.perf_counter() - t:.0f} s")
            report = load_chain(mlflow.MlflowClient(uri), result.parent_run_id)
            for r in report.rows:
                rows.append({"seed": seed, "labels": mode, "chain": result.parent_run_id, **r})
    if "soft" in args.labels and "hard" in args.labels:  # the label mode does not reach these: share them
        for r in [r for r in rows if r["labels"] == "hard" and r["method"] == "direct"]:
            rows.append({**r, "labels": "soft"})
    return rows


def summarise(rows: list[dict], modes: list[str]) -> tuple[list[dict], list[dict]]:
    """Mean ± std per (method, length, protocol); and per seed, PLD's final student minus each baseline."""
    keys = []
    for r in rows:
        key = ("teacher" if r["stage"] == "teacher" else r["method"], r["input_ms"])
        if key not in keys:
            keys.append(key)
    table = []
    for method, ms in keys:
        for col, metric in METRICS.items():
            line = {"method": method, "input_ms": ms, "metric": col}
            for mode in modes:
                values = [r[metric] for r in rows if r["labels"] == mode and r["input_ms"] == ms and r[metric] is not None
                          and ("teacher" if r["stage"] == "teacher" else r["method"]) == method]
                line[mode] = mean_std(values)
            table.append(line)
    final = min(r["input_ms"] for r in rows)
    diffs = []
    for mode in modes:
        for baseline in ("direct", "one_shot"):
            for col, metric in METRICS.items():
                per_seed = []
                for seed in sorted({r["seed"] for r in rows}):
                    pick = lambda m: [r[metric] for r in rows if r["seed"] == seed and r["labels"] == mode  # noqa: E731
                                      and r["method"] == m and r["input_ms"] == final and r["stage"] != "teacher"]
                    pld, base = pick("pld"), pick(baseline)
                    if pld and base and pld[0] is not None and base[0] is not None:
                        per_seed.append(pld[0] - base[0])
                if per_seed:
                    diffs.append({"labels": mode, "vs": baseline, "metric": col, "pld_minus_baseline": mean_std(per_seed),
                                  "seeds_pld_better": sum((d < 0) if col.startswith("fa") else (d > 0) for d in per_seed),
                                  "seeds": len(per_seed)})
    return table, diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--labels", nargs="+", choices=["hard", "soft"], default=["hard", "soft"])
    ap.add_argument("--temperature", type=float, default=2.0, help="temperature of the soft labels (default 2)")
    ap.add_argument("--quick", action="store_true", help="a small corpus and a two-stage one-epoch chain")
    ap.add_argument("--json", type=Path, help="write every row and the summary as JSON here")
    ap.add_argument("--workdir", type=Path, help="keep runs and the MLflow store here (default: a temp dir)")
    ap.add_argument("--corpus", type=Path, help="an existing synthetic corpus (default: synthesize one in the workdir)")
    args = ap.parse_args(argv)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="pld-fidelity-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus or work / "corpus"
    if not (corpus / "synth.json").exists():
        say(f"synthesizing the corpus in {corpus} …")
        subprocess.run([sys.executable, "-m", "distill.cli", "data", "synth", "--out", str(corpus),
                        *(SYNTH_QUICK if args.quick else SYNTH_FULL)], check=True, cwd=ROOT)
    started = time.perf_counter()
    rows = run_chains(args, corpus, work)
    table, diffs = summarise(rows, args.labels)
    say(f"\nfidelity: {len(args.seeds)} seeds × {'/'.join(args.labels)} labels"
        + (f" (soft at temperature {args.temperature})" if "soft" in args.labels else "")
        + f", {'quick' if args.quick else 'quickstart'} chain, {time.perf_counter() - started:.0f} s; MLflow store "
          f"sqlite:///{work / 'mlflow.db'}, experiment 'fidelity'\n")
    say("mean ± std over seeds (test split; accuracies, and false accepts per hour at 90 % recall)")
    say(format_table(table, ["method", "input_ms", "metric", *args.labels]))
    say("final PLD student minus baseline at the same length, mean ± std over seeds (paired by seed)")
    say(format_table(diffs, ["labels", "vs", "metric", "pld_minus_baseline", "seeds_pld_better", "seeds"]))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "table": table, "diffs": diffs, "seeds": args.seeds,
                                         "labels": args.labels, "temperature": args.temperature, "quick": args.quick,
                                         "seconds": time.perf_counter() - started}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
