"""When does PLD help? The final PLD student's lead over the direct and the one-shot baseline
(test accuracy under the stream, window and center protocols) against how long the words are
and where they sit in the clip, over a few synthetic corpora and seeds.

    python benchmarks/sensitivity.py [--settings a b c] [--seeds 0 1] [--config configs/fidelity.yaml]
                                     [--workdir DIR] [--json OUT] [--quick]

Corpus settings (SETTINGS below; ``--settings`` picks among them):
    a  short words, uniform placement — espeak at 130-200 words/min, the old corpus
    b  long words, uniform placement  — the synthesizer's default rate
    c  long words, loudest 1 s        — the default rate, the loudest second of a longer
                                        recording (how Speech Commands was cut; the default)
    d  long words, centred ± 100 ms   — not run unless asked for

Each setting's corpus is synthesized at quickstart size (150 speakers, 10 unknown words,
seed 0) into ``<workdir>/corpus-<setting>``, reused when already there with the same
parameters. Its median word duration and the share of clips whose whole word lies in the
centred window of the final length come from its synth.json (else from synth_manifest.csv).
Then ``pld sweep`` runs ``--config`` for every (corpus, seed) as Ray Tune trials, one at a time
(``--grid data.path=[…] --grid seed=[…] --max-concurrent 1``), under one MLflow sweep run in
the SQLite store ``<workdir>/mlflow.db`` (experiment ``sensitivity``). The differences are
paired by seed within a setting; intervals are mean ± t(0.975, n−1)·s/√n (Student t).

Outputs (OUT defaults to <workdir>/sensitivity.json):
    OUT              every per-seed number, the aggregates, the commit id and the config
    OUT with .txt    the markdown tables, also printed to stdout
    OUT with .png    PLD − direct and PLD − one-shot against median word duration, per protocol

``--quick``: settings a and c at 12 speakers, seed 0, a one-epoch 1000 → 500 ms chain: a smoke run.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]  # this folder's stats.py, plots.py and fidelity.py, and the project

from fidelity import QUICK, chain_stage_rows, ensure_corpus, git_commit, say  # noqa: E402
from stats import ahead, fmt, fmt_ci, markdown_table, mean_ci, paired, whole_word_share  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "fidelity.yaml"
PROTOCOLS = ("stream", "window", "center")  # stream first: the protocol a deployed spotter runs
FULL_CORPUS = dict(seed=0, speakers=150, n_unknown=10)  # quickstart size, as `make data`
QUICK_CORPUS = dict(seed=0, speakers=12, n_unknown=4)


@dataclass(frozen=True)
class Setting:
    description: str
    synth: dict = field(default_factory=dict)  # synthesize_corpus keyword arguments beyond the defaults


SETTINGS = {
    "a": Setting("short words, uniform placement (the old corpus)", {"rate_range": (130, 200), "placement": "uniform"}),
    "b": Setting("long words, uniform placement", {"placement": "uniform"}),
    "c": Setting("long words, loudest 1 s of a longer recording (the default)", {"placement": "loudest"}),
    "d": Setting("long words, centred ± 100 ms", {"placement": "center", "center_jitter_ms": 100.0}),
}


def synth_kwargs(setting: Setting) -> dict:
    """The setting's synthesizer options with the default rate written out, so that a corpus made
    under an older default is not silently reused."""
    from distill.data.synth import RATE_RANGE

    return {"rate_range": tuple(RATE_RANGE), **setting.synth}


def word_stats(corpus: Path, meta: dict, window_ms: int) -> dict:
    """Median word duration in the clip and the share of clips whose whole word a centred
    ``window_ms`` window holds: synth.json's figures (it has the 500 ms share), else computed
    from synth_manifest.csv."""
    stats = meta.get("stats", {})
    median = stats.get("word_ms", {}).get("median")
    share = stats.get("share_whole_word_in_center_500ms") if window_ms == 500 else None
    if median is not None and share is not None:
        return {"median_word_ms": median, "share_whole_word_in_center": share, "source": "synth.json"}
    with open(corpus / "synth_manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    starts = [float(r["speech_start_ms"]) for r in rows]
    ends = [float(r["speech_end_ms"]) for r in rows]
    cuts = [float(r.get("speech_cut_ms") or 0) for r in rows]
    clip_ms = 1000 * meta.get("clip_samples", 16000) / meta.get("sample_rate", 16000)
    return {"median_word_ms": statistics.median(e - s for s, e in zip(starts, ends)),
            "share_whole_word_in_center": whole_word_share(starts, ends, cuts, clip_ms=clip_ms, window_ms=window_ms),
            "source": "synth_manifest.csv"}


def run_points(args, work: Path, corpora: dict[str, Path]) -> dict[tuple[str, int], dict]:
    """Every (setting, seed) chain as a Ray Tune trial of one ``pld sweep``: per point, the final
    student's and the baselines' test accuracies (or why the trial failed)."""
    import mlflow

    from distill.runtime.sweep import grid_points, run_sweep

    uri = f"sqlite:///{work / 'mlflow.db'}"
    by_path = {str(p): key for key, p in corpora.items()}
    grid = {"data.path": list(by_path), "seed": args.seeds}
    overrides = {"name": "sensitivity", "storage.root": str(work / "runs"), "tracking.experiment": "sensitivity",
                 **(QUICK if args.quick else {})}
    say(f"sweep: {len(corpora)} corpora × {len(args.seeds)} seeds as Ray Tune trials, one at a time "
        "(each trial's progress is in MLflow, not on this console)")
    rows = run_sweep(str(args.config), overrides, grid, tracking=uri, max_concurrent=1, out=say)
    points = grid_points(grid)
    client = mlflow.MlflowClient(uri)
    results = {}
    for row in rows:
        point = points[row["point"]]
        key = (by_path[point["data.path"]], point["seed"])
        if row["status"] != "ok":
            results[key] = {"status": "failed", "error": row.get("error")}
            continue
        stages = chain_stage_rows(client, row["chain_run_id"])
        final = min(r["input_ms"] for r in stages if r["method"] == "pld")
        pick = {m: next((r for r in stages if r["method"] == m and r["input_ms"] == final), {})
                for m in ("pld", "direct", "one_shot")}
        results[key] = {"status": "ok", "chain_run_id": row["chain_run_id"], "final_ms": final,
                        **{p: {m: r.get(f"test_acc_{p}") for m, r in pick.items()} for p in PROTOCOLS}}
    return results


# ---------------------------------------------------------------------------------------------
# Statistics and tables (pure: tests/test_fidelity_stats.py runs them on made-up results)

def aggregate(settings: list[dict]) -> list[dict]:
    """Per setting and protocol: mean ± CI of each method and of the paired differences, and on
    how many seeds PLD was ahead. ``settings``: dicts with ``seeds`` {seed: point result}."""
    out = []
    for s in settings:
        ok = {seed: r for seed, r in s["seeds"].items() if r.get("status") == "ok"}
        mean = {}
        for p in PROTOCOLS:
            acc = {m: {seed: r[p][m] for seed, r in ok.items()} for m in ("pld", "direct", "one_shot")}
            mean[p] = {m: {**mean_ci(v.values()), "per_seed": v} for m, v in acc.items()}
            for base in ("direct", "one_shot"):
                d = paired(acc["pld"], acc[base])
                mean[p][f"pld_minus_{base}"] = {**mean_ci(d.values()), "per_seed": d, "ahead": ahead(d.values())}
        out.append({**s, "mean": mean})
    return out


def _percent(share) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"


def render(settings: list[dict], header: list[str]) -> str:
    """The markdown report: the settings, then one table per protocol (every seed, then the mean)."""
    out = ["# When does PLD help? Final student vs baselines by word length and placement", "", *header, ""]
    out += [f"- **{s['setting']}** — {s['description']}: " + ", ".join(f"{k} {v}" for k, v in s["synth"].items())
            + f"; median word {fmt(s['median_word_ms'], 0)} ms, whole word in the centred {s['window_ms']} ms "
            f"{_percent(s['share_whole_word_in_center'])} ({s['stats_source']}); corpus {s['corpus']}" for s in settings]
    columns = ["setting", "median word ms", "whole word in centre", "seed", "PLD", "direct", "one-shot",
               "PLD − direct", "PLD − one-shot"]
    for p in PROTOCOLS:
        lines = []
        for s in settings:
            head = {"setting": s["setting"], "median word ms": fmt(s["median_word_ms"], 0),
                    "whole word in centre": fmt(s["share_whole_word_in_center"], 3)}
            for seed, r in s["seeds"].items():
                if r.get("status") != "ok":
                    lines.append({**head, "seed": seed, "PLD": f"failed: {r.get('error') or '?'}"[:60]})
                    continue
                acc = r[p]
                diff = lambda b: acc["pld"] - acc[b] if None not in (acc["pld"], acc[b]) else None  # noqa: E731
                lines.append({**head, "seed": seed, "PLD": fmt(acc["pld"]), "direct": fmt(acc["direct"]),
                              "one-shot": fmt(acc["one_shot"]), "PLD − direct": fmt(diff("direct"), signed=True),
                              "PLD − one-shot": fmt(diff("one_shot"), signed=True)})
            m = s["mean"][p]
            ahead_of = lambda k: f" ({m[k]['ahead']}/{m[k]['n']} ahead)" if m[k]["n"] else ""  # noqa: E731
            lines.append({**head, "seed": "mean", "PLD": fmt_ci(m["pld"]), "direct": fmt_ci(m["direct"]),
                          "one-shot": fmt_ci(m["one_shot"]),
                          "PLD − direct": fmt_ci(m["pld_minus_direct"], signed=True) + ahead_of("pld_minus_direct"),
                          "PLD − one-shot": fmt_ci(m["pld_minus_one_shot"], signed=True)
                          + ahead_of("pld_minus_one_shot")})
        out += ["", f"## Test accuracy, {p} protocol (mean ± 95 % CI over seeds, differences paired by seed)", "",
                markdown_table(lines, columns)]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), help="corpus settings (default a b c; --quick: a c)")
    ap.add_argument("--seeds", type=int, nargs="+", help="default 0 1 (--quick: 0)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the chain (default configs/fidelity.yaml)")
    ap.add_argument("--workdir", type=Path, help="corpora, runs and the MLflow store (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="results JSON; .txt and .png beside it (default <workdir>/sensitivity.json)")
    ap.add_argument("--quick", action="store_true", help="two tiny corpora, one seed, a one-epoch 1000 → 500 ms chain")
    args = ap.parse_args(argv)
    args.settings = list(dict.fromkeys(args.settings or (["a", "c"] if args.quick else ["a", "b", "c"])))
    args.seeds = args.seeds or ([0] if args.quick else [0, 1])
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="pld-sensitivity-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_json = (args.json or work / "sensitivity.json").resolve()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    import yaml

    from distill.config import load_config

    final_ms = load_config(args.config, QUICK if args.quick else {}).chain.lengths_ms[-1]
    corpora, settings = {}, []
    for key in args.settings:  # all corpora first: a synthesis problem shows before any chain runs
        corpora[key] = work / (f"corpus-quick-{key}" if args.quick else f"corpus-{key}")
        kwargs = synth_kwargs(SETTINGS[key])
        meta = ensure_corpus(corpora[key], **(QUICK_CORPUS if args.quick else FULL_CORPUS), **kwargs)
        ws = word_stats(corpora[key], meta, final_ms)
        settings.append({"setting": key, "description": SETTINGS[key].description, "corpus": str(corpora[key]),
                         "synth": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
                         "synth_stats": meta.get("stats"), "window_ms": final_ms,
                         "median_word_ms": ws["median_word_ms"],
                         "share_whole_word_in_center": ws["share_whole_word_in_center"], "stats_source": ws["source"]})
        say(f"setting {key}: median word {fmt(ws['median_word_ms'], 0)} ms, whole word in the centred {final_ms} ms "
            f"{_percent(ws['share_whole_word_in_center'])}")

    results = run_points(args, work, corpora)
    for s in settings:
        s["seeds"] = {seed: results.get((s["setting"], seed), {"status": "failed", "error": "no result"})
                      for seed in args.seeds}
    settings = aggregate(settings)

    git = git_commit()
    failed = sum(r["status"] != "ok" for r in results.values())
    header = [f"commit {git['commit']}{' (with local changes)' if git['dirty'] else ''}; config {args.config}"
              f"{' + --quick' if args.quick else ''}; seeds {args.seeds}; final length {final_ms} ms; "
              f"{time.perf_counter() - started:.0f} s",
              f"MLflow store sqlite:///{work / 'mlflow.db'}, experiment 'sensitivity'; chains "
              f"{len(results) - failed} ok, {failed} failed"]
    text = render(settings, header)
    say("\n" + text)
    out_json.with_suffix(".txt").write_text(text)
    from plots import sensitivity_figure

    sensitivity_figure(settings, out_json.with_suffix(".png"))
    out_json.write_text(json.dumps({
        **git, "config_file": str(args.config), "config": yaml.safe_load(args.config.read_text()),
        "quick": args.quick, "seeds": args.seeds, "final_ms": final_ms, "settings": settings,
        "seconds": time.perf_counter() - started}, indent=1, default=str))
    say(f"wrote {out_json}, {out_json.with_suffix('.txt')}, {out_json.with_suffix('.png')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
