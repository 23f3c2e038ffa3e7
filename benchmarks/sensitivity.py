"""When does PLD help? The final PLD student's lead over the direct and the one-shot baseline
(test accuracy under the stream, window and center protocols) against how long the words are
and where they sit in the clip, over a few synthetic corpora and seeds.

    python benchmarks/sensitivity.py [--settings a b c] [--seeds 0 1] [--config configs/fidelity.yaml]
                                     [--workdir DIR] [--json OUT] [--quick]
                                     [--from-fidelity FIDELITY_JSON [--from-fidelity-setting c] [--corpus DIR]]
    python benchmarks/sensitivity.py --merge SENSITIVITY_JSON --from-fidelity FIDELITY_JSON --json OUT
                                     [--from-fidelity-setting c] [--corpus DIR] [--workdir DIR]

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

Setting c's corpus is benchmarks/fidelity.py's default one, and its chains run the same config:
``--from-fidelity FIDELITY_JSON`` takes that setting's per-seed rows (``--from-fidelity-setting``,
default c) from a fidelity run's JSON instead of running them — the chains of the config's own
``labels.mode``, direct being the hard chain's of the same seed where the fidelity run shared it
(direct never sees a teacher's labels). ``--merge SENSITIVITY_JSON`` does so offline: an earlier
run's JSON (say settings a and b) plus the fidelity rows, its seeds and config, the aggregates
recomputed, OUT written as a run would. Either way the fidelity run must have used the same config
contents, per seed the same resolved chain config (less name, storage, tracking, ray, data.path)
and a corpus of the setting's parameters, else nothing is taken; the report says which checks
were done and where the rows came from. The setting's word statistics come from the fidelity
corpus's synth.json (the path in its JSON, else ``--corpus DIR``, else ``<workdir>/corpus-c``).
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
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

from fidelity import QUICK, _norm, chain_stage_rows, ensure_corpus, git_commit, say  # noqa: E402
from stats import ahead, fmt, fmt_ci, markdown_table, mean_ci, paired, whole_word_share  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "fidelity.yaml"
PROTOCOLS = ("stream", "window", "center")  # stream first: the protocol a deployed spotter runs
METHODS = ("pld", "direct", "one_shot")
FULL_CORPUS = dict(seed=0, speakers=150, n_unknown=10)  # the size of `make data` before the multi-engine corpus
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


def sweep_overrides(work: Path, quick: bool) -> dict:
    """What the sweep changes in ``--config`` besides each point's data.path and seed."""
    return {"name": "sensitivity", "storage.root": str(work / "runs"), "tracking.experiment": "sensitivity",
            **(QUICK if quick else {})}


def run_points(args, work: Path, corpora: dict[str, Path]) -> dict[tuple[str, int], dict]:
    """Every (setting, seed) chain as a Ray Tune trial of one ``pld sweep``: per point, the final
    student's and the baselines' test accuracies (or why the trial failed)."""
    import mlflow

    from distill.runtime.sweep import grid_points, run_sweep

    uri = f"sqlite:///{work / 'mlflow.db'}"
    by_path = {str(p): key for key, p in corpora.items()}
    grid = {"data.path": list(by_path), "seed": args.seeds}
    overrides = sweep_overrides(work, args.quick)
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
                for m in METHODS}
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
            acc = {m: {seed: r[p][m] for seed, r in ok.items()} for m in METHODS}
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
            f"{_percent(s['share_whole_word_in_center'])} ({s['stats_source']}); corpus {s['corpus']}"
            + (f"; rows from the fidelity JSON {s['from_fidelity']['json']}" if s.get("from_fidelity") else "")
            for s in settings]
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
# A setting's rows from a fidelity run's JSON (pure but for resolve_config, which imports the
# project's config and torch with it: tests/test_fidelity_stats.py swaps it for plain dicts)

class MergeError(ValueError):
    """The fidelity JSON cannot stand in for the setting's chains: every reason why."""


# Where a chain is tracked, stored and scheduled: not what it computes (data.path: the corpus is checked on its own)
BOOKKEEPING = ("name", "storage", "tracking", "ray", "data.path")


def fingerprint(obj) -> str:
    """A short content hash, pld's config_fingerprint's form: sha256 of the key-sorted JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_config(config: dict, overrides: dict) -> dict:
    """A chain's resolved config (defaults filled in, validated) from a config file's contents and
    dotted overrides, as load_config makes it."""
    from distill.config import load_config

    return load_config(None, {**copy.deepcopy(config), **overrides}).model_dump(mode="json")


def corpus_want(key: str, quick: bool) -> dict:
    """Setting ``key``'s synthesizer parameters in synth.json's terms (those ensure_corpus checks)."""
    from distill.data.synth import UNKNOWN_WORDS

    size = QUICK_CORPUS if quick else FULL_CORPUS
    return {"seed": size["seed"], "speakers": size["speakers"],
            "unknown_words": list(UNKNOWN_WORDS[:size["n_unknown"]]), **synth_kwargs(SETTINGS[key])}


def corpus_differences(meta: dict, want: dict) -> list[str]:
    """The parameters in ``want`` that a corpus's synth.json has otherwise (ensure_corpus's test for reuse)."""
    have = {"seed": meta.get("seed"), "unknown_words": meta.get("unknown_words"), **meta.get("params", {})}
    return [k for k, v in want.items() if _norm(have.get(k)) != _norm(v)]


def chain_identity(resolved: dict, drop: tuple[str, ...] = ()) -> dict:
    """What a chain computes: its resolved config less BOOKKEEPING and the dotted keys in ``drop``."""
    out = copy.deepcopy(resolved)
    for key in (*BOOKKEEPING, *drop):
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node.get(p), dict) else {}
        node.pop(leaf, None)
    return out


def diff_keys(a, b, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested dicts (a key on one side only counts)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if _norm(a) == _norm(b) else [prefix.rstrip(".") or "(whole)"]


def fidelity_chains(fid: dict, mode: str) -> dict[int, dict]:
    """The fidelity run's chain records of one label mode, by seed."""
    return {c["seed"]: c for c in fid.get("chains", []) if c.get("labels") == mode}


def fidelity_rows(fid: dict, mode: str, seed: int) -> list[dict]:
    return [r for r in fid.get("rows", []) if r.get("labels") == mode and r.get("seed") == seed]


def point_from_fidelity(chain: dict, rows: list[dict]) -> dict:
    """The row format conversion: one fidelity chain (its record and its per-stage rows, metrics
    test_acc_<protocol>) as run_points' per-seed result — the final PLD student's, direct's and
    one-shot's test accuracy per protocol. A soft chain's direct row may be the hard chain's of
    the same seed (shared_from): direct never sees a teacher's labels."""
    if chain.get("status") != "ok":
        return {"status": "failed", "error": f"fidelity chain: {chain.get('error') or '?'}"}
    pld_ms = [r["input_ms"] for r in rows if r["method"] == "pld"]
    if not pld_ms:
        return {"status": "failed", "error": "fidelity chain: no PLD student among its rows"}
    final = min(pld_ms)
    pick = {m: next((r for r in rows if r["method"] == m and r["input_ms"] == final), {}) for m in METHODS}
    point = {"status": "ok", "chain_run_id": chain.get("chain_run_id"), "final_ms": final,
             **{p: {m: r.get(f"test_acc_{p}") for m, r in pick.items()} for p in PROTOCOLS}}
    if pick["direct"].get("shared_from"):
        point["direct_chain_run_id"] = pick["direct"].get("chain")
    return point


def points_from_fidelity(fid: dict, mode: str, seeds: list[int]) -> dict[int, dict]:
    """Every seed's point from the fidelity JSON's ``mode`` chains; a seed it never ran is refused."""
    chains = fidelity_chains(fid, mode)
    missing = [s for s in seeds if s not in chains]
    if missing:
        raise MergeError(f"it has no {mode}-label chain for seed(s) {missing} (it ran seeds {fid.get('seeds')}, "
                         f"labels {fid.get('labels')})")
    return {seed: point_from_fidelity(chains[seed], fidelity_rows(fid, mode, seed)) for seed in seeds}


def settings_from_json(saved: dict) -> list[dict]:
    """A sensitivity JSON's settings as aggregate() takes them: no aggregates, and the seeds' keys
    ints again (JSON made them strings)."""
    out = []
    for s in saved["settings"]:
        s = {k: v for k, v in s.items() if k != "mean"}
        s["seeds"] = {int(seed): r for seed, r in s["seeds"].items()}
        out.append(s)
    return out


def _check_chains(fid: dict, config: dict, mode: str, seeds: list[int], overrides: dict) -> tuple[list, list]:
    """Per seed, the fidelity chain's resolved config against the sweep's point (``overrides`` and
    the seed), less BOOKKEEPING; a borrowed direct's chain the same but for its labels."""
    done, problems = [], []
    ran = fid.get("config") or config
    corpus = (fid.get("corpus") or {}).get("path")
    chains, checked, unchecked, shared = fidelity_chains(fid, mode), [], [], False
    for seed in seeds:
        chain = chains.get(seed, {})
        if "overrides" not in chain:
            unchecked.append(seed)
            continue
        mine = resolve_config(config, {**overrides, "seed": seed, "data.path": corpus or "."})
        got = resolve_config(ran, chain["overrides"])
        drop = ("chain.baselines",)  # compared below: a soft chain may leave direct to the hard one
        if differ := diff_keys(chain_identity(got, drop), chain_identity(mine, drop)):
            problems.append(f"seed {seed}'s {mode} chain differs in {', '.join(differ)}")
        if corpus and got["data"]["path"] != corpus:
            problems.append(f"seed {seed}'s {mode} chain ran on {got['data']['path']}, not on its corpus {corpus}")
        baselines = set(got["chain"]["baselines"])
        rows = fidelity_rows(fid, mode, seed)
        direct = next((r for r in rows if r["method"] == "direct" and r.get("shared_from")), None)
        lender = fidelity_chains(fid, direct["shared_from"]).get(seed, {}) if direct else {}
        if "overrides" in lender:
            shared = True
            other = resolve_config(ran, lender["overrides"])
            drop = ("chain.baselines", "labels")  # direct never sees a teacher's labels
            if differ := diff_keys(chain_identity(other, drop), chain_identity(mine, drop)):
                problems.append(f"seed {seed}'s direct comes from its {direct['shared_from']} chain, which differs "
                                f"in {', '.join(differ)}")
            baselines |= {"direct"} & set(other["chain"]["baselines"])
        elif direct:
            unchecked.append(seed)
            baselines.add("direct")
        if missing := set(mine["chain"]["baselines"]) - baselines:
            problems.append(f"seed {seed}: no {', '.join(sorted(missing))} baseline among the fidelity chains")
        checked.append(seed)
    if checked:
        done.append(f"resolved chain config (less {', '.join(BOOKKEEPING)}) identical for seeds {checked}"
                    + (" (direct: the hard chain's of the same seed, identical but for labels)" if shared else ""))
    if unchecked:
        done.append(f"chain config (or its direct's) of seeds {sorted(set(unchecked))}: not in the fidelity JSON, "
                    "not checked")
    return done, problems


def _check_corpus(fid: dict, want: dict, key: str, meta: dict | None, meta_dir: str | None) -> tuple[list, list]:
    """The fidelity corpus against setting ``key``'s parameters: what its JSON records, and the
    whole of a synth.json of it when one was found (which must match that record)."""
    done, problems = [], []
    record = fid.get("corpus") or {}
    recorded = [k for k in ("speakers", "placement", "rate_range") if record.get(k) is not None and k in want]
    if bad := [k for k in recorded if _norm(record[k]) != _norm(want[k])]:
        problems.append(f"its corpus {record.get('path')} has another "
                        + ", ".join(f"{k} ({record[k]}; setting {key}: {want[k]})" for k in bad))
    if meta is None:
        done.append(f"corpus: only {', '.join(recorded) or 'nothing'} checked (the fidelity JSON's record; "
                    "no synth.json found)")
        return done, problems
    if differ := corpus_differences(meta, want):
        problems.append(f"{meta_dir}/synth.json has another {', '.join(differ)} than setting {key}")
    stats = meta.get("stats", {})
    have = {"clips": meta.get("clips"), "median_word_ms": stats.get("word_ms", {}).get("median"),
            "share_whole_word_in_center_500ms": stats.get("share_whole_word_in_center_500ms")}
    both = [k for k, v in have.items() if v is not None and record.get(k) is not None]
    if bad := [k for k in both if _norm(have[k]) != _norm(record[k])]:
        problems.append(f"{meta_dir}/synth.json is not the fidelity run's corpus: its {', '.join(bad)} differ")
    done.append(f"corpus {', '.join(want)} as setting {key} ({meta_dir}/synth.json)"
                + (f"; its {', '.join(both)} as the fidelity JSON records" if both else ""))
    return done, problems


def check_fidelity(fid: dict, *, key: str, config: dict, mode: str, seeds: list[int], final_ms: int, quick: bool,
                   overrides: dict, commit: dict, meta: dict | None = None, meta_dir: str | None = None) -> list[str]:
    """Whether the fidelity chains are what the sweep would have run for setting ``key``: the same
    config contents, per seed the same resolved chain config, a corpus of the setting's parameters
    (``meta``: a synth.json of it, if one was found). Raises MergeError with every mismatch;
    returns the checks done, and those it could not do."""
    done, problems = [], []
    ran = fid.get("config")
    if ran is None:
        done.append("config contents: not in the fidelity JSON, not checked")
    elif differ := diff_keys(ran, config):
        problems.append(f"its config contents differ in {', '.join(differ)} ({fid.get('config_file')}, fingerprint "
                        f"{fingerprint(ran)}; this run's {fingerprint(config)})")
    else:
        done.append(f"config contents identical (fingerprint {fingerprint(config)})")
    if fid.get("quick") is not None and bool(fid["quick"]) != quick:
        problems.append(f"it ran with quick={fid['quick']}, this run with quick={quick}")
    if fid.get("final_ms") is not None and fid["final_ms"] != final_ms:
        problems.append(f"its final length is {fid['final_ms']} ms, this run's {final_ms} ms")
    for d, p in (_check_chains(fid, config, mode, seeds, overrides),
                 _check_corpus(fid, corpus_want(key, quick), key, meta, meta_dir)):
        done += d
        problems += p
    if commit.get("commit") and fid.get("commit"):  # the code may differ between commits: said, not refused
        same = commit["commit"] == fid["commit"] and not (commit.get("dirty") or fid.get("dirty"))
        done.append(f"commit {fid['commit']} in both" if same else
                    f"commits NOT the same or not clean: fidelity {fid['commit']} (local changes: {fid.get('dirty')}), "
                    f"this run {commit['commit']} (local changes: {commit.get('dirty')}); not refused")
    if problems:
        raise MergeError("\n  - ".join(["", *problems]))
    return done


def fidelity_setting(key: str, fid: dict, source: Path, *, config: dict, seeds: list[int], final_ms: int,
                     quick: bool, overrides: dict, commit: dict, corpus_dirs: list) -> dict:
    """Setting ``key`` as a run of it would have made it, from the fidelity JSON at ``source``:
    the chains of the config's own label mode, checked against the setting; its word statistics
    from the first of ``corpus_dirs`` with a synth.json (else the fidelity JSON's corpus record)."""
    mode = resolve_config(config, {})["labels"]["mode"]
    record = fid.get("corpus") or {}
    found = [Path(d) for d in [record.get("path"), *corpus_dirs] if d and (Path(d) / "synth.json").is_file()]
    meta_dir = found[0] if found else None
    meta = json.loads((meta_dir / "synth.json").read_text()) if meta_dir else None
    points = points_from_fidelity(fid, mode, seeds)
    checks = check_fidelity(fid, key=key, config=config, mode=mode, seeds=seeds, final_ms=final_ms, quick=quick,
                            overrides=overrides, commit=commit, meta=meta, meta_dir=meta_dir and str(meta_dir))
    if meta:
        ws = word_stats(meta_dir, meta, final_ms)
        source_of_stats = ws["source"] + ("" if str(meta_dir) == record.get("path") else f" of {meta_dir}")
    else:
        ws = {"median_word_ms": record.get("median_word_ms"),
              "share_whole_word_in_center": record.get("share_whole_word_in_center_500ms") if final_ms == 500 else None}
        source_of_stats = "the fidelity JSON's corpus record"
    return {"setting": key, "description": SETTINGS[key].description, "corpus": record.get("path"),
            "synth": {k: list(v) if isinstance(v, tuple) else v for k, v in synth_kwargs(SETTINGS[key]).items()},
            "synth_stats": (meta or {}).get("stats"), "window_ms": final_ms, "median_word_ms": ws["median_word_ms"],
            "share_whole_word_in_center": ws["share_whole_word_in_center"], "stats_source": source_of_stats,
            "from_fidelity": {"json": str(source), "commit": fid.get("commit"), "dirty": fid.get("dirty"),
                              "labels": mode, "checks": checks},
            "seeds": points}


def fidelity_lines(settings: list[dict]) -> list[str]:
    """The report's lines on the settings whose rows came from a fidelity JSON."""
    out = []
    for s in settings:
        if f := s.get("from_fidelity"):
            chains = ", ".join(f"s{seed} {r.get('chain_run_id') or r.get('error')}" for seed, r in s["seeds"].items())
            out += [f"setting {s['setting']}: per-seed rows from the fidelity JSON {f['json']} (commit {f['commit']}; "
                    f"its {f['labels']}-label chains {chains}), not run here",
                    f"setting {s['setting']}, checks against the fidelity run: " + "; ".join(f["checks"])]
    return out


def header_lines(commit: dict, config_file, quick: bool, seeds: list[int], final_ms: int, seconds: float,
                 work: Path, settings: list[dict]) -> list[str]:
    """The report's header: where the numbers come from, what ran, where the rows of each setting are."""
    swept = [r for s in settings if not s.get("from_fidelity") for r in s["seeds"].values()]
    failed = sum(r.get("status") != "ok" for r in swept)
    return [f"commit {commit['commit']}{' (with local changes)' if commit['dirty'] else ''}; config {config_file}"
            f"{' + --quick' if quick else ''}; seeds {seeds}; final length {final_ms} ms; {seconds:.0f} s",
            f"MLflow store sqlite:///{work / 'mlflow.db'}, experiment 'sensitivity'; chains "
            f"{len(swept) - failed} ok, {failed} failed", *fidelity_lines(settings)]


def write_outputs(out_json: Path, settings: list[dict], header: list[str], record: dict) -> None:
    """OUT (``record`` with the settings), OUT.txt (the report, also printed) and OUT.png."""
    text = render(settings, header)
    say("\n" + text)
    out_json.with_suffix(".txt").write_text(text)
    from plots import sensitivity_figure

    sensitivity_figure(settings, out_json.with_suffix(".png"))
    out_json.write_text(json.dumps({**record, "settings": settings}, indent=1, default=str))
    say(f"wrote {out_json}, {out_json.with_suffix('.txt')}, {out_json.with_suffix('.png')}")


def corpus_dir(work: Path, key: str, quick: bool) -> Path:
    return work / (f"corpus-quick-{key}" if quick else f"corpus-{key}")


def _legacy_run(run: dict, skip: str) -> dict:
    """A JSON of the first version of this benchmark (``rows`` and ``corpus_stats``: no config,
    seeds or commit) in today's form, without setting ``skip`` (its rows stand in from fidelity)."""
    settings = {}
    for row in sorted(run["rows"], key=lambda r: (r["setting"], r["seed"])):
        key = row["setting"]
        if key == skip:
            continue
        stats = run["corpus_stats"][key]
        setting = settings.setdefault(key, {
            "setting": key, "description": SETTINGS[key].description, "corpus": None,
            "synth": {k: list(v) if isinstance(v, tuple) else v for k, v in synth_kwargs(SETTINGS[key]).items()},
            "synth_stats": stats, "window_ms": 500, "median_word_ms": stats["word_ms"]["median"],
            "share_whole_word_in_center": stats["share_whole_word_in_center_500ms"], "stats_source": "synth.json",
            "seeds": {}})
        setting["seeds"][str(row["seed"])] = {
            "status": "ok", "chain_run_id": row["chain_run_id"], "final_ms": 500,
            **{p: {m: row[m][f"test_acc_{p}"] for m in ("pld", "direct", "one_shot")} for p in PROTOCOLS}}
    return {"legacy": True, "settings": list(settings.values())}


def _load_runs(paths: list[Path], skip: str) -> tuple[dict, list[dict]]:
    """Earlier runs' JSONs (one per --merge path) as one: their settings, which must not repeat,
    each keeping the commit and file it came from; the runs must share config, seeds and length.
    A JSON of this benchmark's first version has none of those: it is taken as it is, and says so."""
    saved, settings = None, []
    for path in sorted(paths, key=lambda p: "rows" in json.loads(p.read_text())):  # a full record first
        run = json.loads(path.read_text())
        if "settings" not in run and "rows" in run:
            run = {**_legacy_run(run, skip), **{k: saved.get(k) for k in ("config", "seeds", "final_ms", "quick")}} \
                if saved else None
            if run is None:
                raise MergeError(f"{path} is of the first format (no config, seeds or commit): merge it with a "
                                 "run that has them")
            run["commit"] = "not recorded"
        if saved is None:
            saved = run
        elif any(run.get(k) != saved.get(k) for k in ("config", "seeds", "final_ms", "quick")):
            differ = [k for k in ("config", "seeds", "final_ms", "quick") if run.get(k) != saved.get(k)]
            raise MergeError(f"{path} ran with another {', '.join(differ)} than {paths[0]}")
        for setting in settings_from_json(run):
            if any(x["setting"] == setting["setting"] for x in settings):
                raise MergeError(f"setting {setting['setting']} is in more than one of {', '.join(map(str, paths))}")
            if len(paths) > 1:
                setting.setdefault("merged_from", {"file": str(path.resolve()), "commit": run.get("commit"),
                                                   "dirty": run.get("dirty"),
                                                   **({"legacy": "first-format JSON: config, seeds and commit "
                                                                 "not recorded, not checked"} if run.get("legacy") else {})})
            settings.append(setting)
    return saved, settings


def merge(args, out_json: Path) -> int:
    """--merge: earlier runs' JSONs plus the fidelity setting's rows, re-aggregated and written as a run would."""
    key = args.from_fidelity_setting
    saved, settings = _load_runs(args.merge, key)
    if any(s["setting"] == key for s in settings):
        raise MergeError(f"{', '.join(map(str, args.merge))} already has setting {key}")
    work = (args.workdir or Path(settings[0]["corpus"]).parent).resolve()  # the run's corpora sit in its workdir
    fid = json.loads(args.from_fidelity.read_text())
    try:
        settings.append(fidelity_setting(
            key, fid, args.from_fidelity.resolve(), config=saved["config"], seeds=saved["seeds"],
            final_ms=saved["final_ms"], quick=saved["quick"], overrides=sweep_overrides(work, saved["quick"]),
            commit={"commit": saved.get("commit"), "dirty": saved.get("dirty")},
            corpus_dirs=[args.corpus, corpus_dir(work, key, saved["quick"])]))
    except MergeError as exc:
        raise MergeError(f"{args.from_fidelity} cannot stand in for setting {key}: {exc}") from None
    settings = aggregate(sorted(settings, key=lambda s: list(SETTINGS).index(s["setting"])))
    now = git_commit()
    header = header_lines(saved, saved["config_file"], saved["quick"], saved["seeds"], saved["final_ms"],
                          saved.get("seconds") or 0.0, work, settings)
    def source(p: Path) -> str:
        run = json.loads(p.read_text())
        if "rows" in run and "settings" not in run:
            return f"{p.resolve()} (first format: config, seeds and commit not recorded, not checked)"
        return f"{p.resolve()}" + (f" (commit {run.get('commit')})" if len(args.merge) > 1 else "")

    sources = [source(p) for p in args.merge]
    header.insert(2, f"merged from {', '.join(sources)} by benchmarks/sensitivity.py --merge at commit "
                     f"{now['commit']}{' (with local changes)' if now['dirty'] else ''}")
    record = {k: saved.get(k) for k in ("commit", "dirty", "config_file", "config", "quick", "seeds", "final_ms")}
    write_outputs(out_json, settings, header, {
        **record, "seconds": saved.get("seconds"),
        "merged_from": str(args.merge[0].resolve()) if len(args.merge) == 1 else [str(p.resolve()) for p in args.merge],
        "merged_at": now,
        "from_fidelity": {key: str(args.from_fidelity.resolve())}})
    return 1 if any(r.get("status") != "ok" for s in settings for r in s["seeds"].values()) else 0


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), help="corpus settings (default a b c; --quick: a c)")
    ap.add_argument("--seeds", type=int, nargs="+", help="default 0 1 (--quick: 0)")
    ap.add_argument("--config", type=Path, help="the chain (default configs/fidelity.yaml)")
    ap.add_argument("--workdir", type=Path, help="corpora, runs and the MLflow store (default: a temp dir; "
                    "--merge: the merged run's, where its corpora are)")
    ap.add_argument("--json", type=Path, help="results JSON; .txt and .png beside it (default <workdir>/sensitivity.json)")
    ap.add_argument("--quick", action="store_true", help="two tiny corpora, one seed, a one-epoch 1000 → 500 ms chain")
    ap.add_argument("--from-fidelity", type=Path, metavar="FIDELITY_JSON",
                    help="take one setting's per-seed rows from this fidelity.py JSON instead of running them")
    ap.add_argument("--from-fidelity-setting", choices=sorted(SETTINGS), default="c",
                    help="the setting --from-fidelity stands in for (default c: fidelity.py's default corpus)")
    ap.add_argument("--corpus", type=Path, help="with --from-fidelity: the fidelity run's corpus, when the path in "
                    "its JSON has no synth.json (default: then <workdir>/corpus-<setting>)")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="SENSITIVITY_JSON",
                    help="run nothing: these JSONs (runs of different settings with one config and seeds) plus the "
                         "--from-fidelity rows, re-aggregated, written to --json")
    args = ap.parse_args(argv)
    if args.corpus and not args.from_fidelity:
        ap.error("--corpus goes with --from-fidelity")
    if args.merge:
        if not (args.from_fidelity and args.json):
            ap.error("--merge needs --from-fidelity FIDELITY_JSON and --json OUT")
        if args.settings or args.seeds or args.quick or args.config:
            ap.error("--merge takes the settings, seeds, --quick and config of SENSITIVITY_JSON: leave them out")
        out_json = args.json.resolve()
        out_json.parent.mkdir(parents=True, exist_ok=True)
        try:
            return merge(args, out_json)
        except MergeError as exc:
            print(f"refusing to merge: {exc}", file=sys.stderr)
            return 2
    args.config = args.config or DEFAULT_CONFIG
    args.settings = list(dict.fromkeys(args.settings or (["a", "c"] if args.quick else ["a", "b", "c"])))
    if args.from_fidelity and args.from_fidelity_setting not in args.settings:
        args.settings.append(args.from_fidelity_setting)  # asked for its rows: it belongs in the table
    args.seeds = args.seeds or ([0] if args.quick else [0, 1])
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="pld-sensitivity-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_json = (args.json or work / "sensitivity.json").resolve()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    import yaml

    from distill.config import load_config

    config = yaml.safe_load(args.config.read_text())
    final_ms = load_config(args.config, QUICK if args.quick else {}).chain.lengths_ms[-1]
    git = git_commit()
    by_key, corpora = {}, {}
    if args.from_fidelity:  # checked before any corpus or chain: a refusal should cost nothing
        key = args.from_fidelity_setting
        try:
            by_key[key] = fidelity_setting(
                key, json.loads(args.from_fidelity.read_text()), args.from_fidelity.resolve(), config=config,
                seeds=args.seeds, final_ms=final_ms, quick=args.quick, overrides=sweep_overrides(work, args.quick),
                commit=git, corpus_dirs=[args.corpus, corpus_dir(work, key, args.quick)])
        except MergeError as exc:
            print(f"refusing: {args.from_fidelity} cannot stand in for setting {key}: {exc}", file=sys.stderr)
            return 2
        say(fidelity_lines([by_key[key]])[0])
    for key in args.settings:  # all corpora first: a synthesis problem shows before any chain runs
        if key in by_key:
            continue
        corpora[key] = corpus_dir(work, key, args.quick)
        kwargs = synth_kwargs(SETTINGS[key])
        meta = ensure_corpus(corpora[key], **(QUICK_CORPUS if args.quick else FULL_CORPUS), **kwargs)
        ws = word_stats(corpora[key], meta, final_ms)
        by_key[key] = {"setting": key, "description": SETTINGS[key].description, "corpus": str(corpora[key]),
                       "synth": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()},
                       "synth_stats": meta.get("stats"), "window_ms": final_ms,
                       "median_word_ms": ws["median_word_ms"],
                       "share_whole_word_in_center": ws["share_whole_word_in_center"], "stats_source": ws["source"]}
        say(f"setting {key}: median word {fmt(ws['median_word_ms'], 0)} ms, whole word in the centred {final_ms} ms "
            f"{_percent(ws['share_whole_word_in_center'])}")

    results = run_points(args, work, corpora) if corpora else {}
    settings = [by_key[key] for key in args.settings]
    for s in settings:
        if "seeds" not in s:  # the fidelity setting has its rows already
            s["seeds"] = {seed: results.get((s["setting"], seed), {"status": "failed", "error": "no result"})
                          for seed in args.seeds}
    settings = aggregate(settings)

    header = header_lines(git, args.config, args.quick, args.seeds, final_ms, time.perf_counter() - started, work,
                          settings)
    write_outputs(out_json, settings, header, {
        **git, "config_file": str(args.config), "config": config, "quick": args.quick, "seeds": args.seeds,
        "final_ms": final_ms, "seconds": time.perf_counter() - started,
        **({"from_fidelity": {args.from_fidelity_setting: str(args.from_fidelity.resolve())}} if args.from_fidelity
           else {})})
    return 1 if any(r.get("status") != "ok" for s in settings for r in s["seeds"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
