"""Does PLD beat direct learning and one-shot distillation? One chain per seed and label mode,
reported as mean ± 95 % confidence interval over seeds per method, length and protocol, with
the paired differences of the final PLD student against both baselines.

    python benchmarks/fidelity.py [--config configs/fidelity.yaml] [--seeds 0 1 2]
                                  [--labels hard soft] [--temperature 2] [--corpus DIR]
                                  [--workdir DIR] [--json OUT] [--new] [--quick] [--report-only]

Every chain is ``--config`` (default configs/fidelity.yaml: the teacher at 1000 ms, students
down to 500 ms, the direct and one-shot baselines at 500 ms) with its seed and label mode
changed, run one after another in this process on one local Ray, tracked in a SQLite MLflow
store in the work directory (experiment ``fidelity``; compare any two with ``pld compare``).
The seed moves the model initialisation, the crops and the data order; the corpus stays the
same. An unfinished chain of the same config in that store is resumed (``--new``: start over).

Corpus: ``--corpus DIR``, else the corpus of ``make data`` (150 speakers, 10 unknown words,
seed 0) synthesized into ``<workdir>/corpus``, reused when it is already there.

The teacher and the ``direct`` baseline never see a teacher's labels, so the label mode does
not change ``direct``: with both modes, soft-label chains skip it and the soft rows show the
hard chain's of the same seed. Accuracies are on the test split; ``fa/h@90%`` is false
accepts per hour at 90 % keyword recall on the split's silence + unknown stream (lower is
better). Intervals: mean ± t(0.975, n−1)·s/√n over the n seeds (Student t).

Unseen voices: when the corpus has ``testing_unseen_voice_list.txt`` (``pld data synth``: the
test clips of speakers whose voice, i.e. accent, no training speaker has), every finished
chain is also evaluated on that split (``pld eval``'s evaluate_chain with ``data.testing_list``
swapped, logged into each stage run as ``unseen_voices_acc_<protocol>``), and the report adds
per method and length its window/stream/center accuracy, and the teacher's stream accuracy
on the full test split against the unseen-voice one, paired by seed. The soft rows' direct
numbers are again the hard chain's.

Outputs (OUT defaults to <workdir>/fidelity.json):
    OUT              every per-seed number, the aggregates, the commit id and the config
    OUT with .txt    the markdown tables, also printed to stdout
    OUT with .png    test accuracy against input length (window, stream, center; FA/h), CI bars;
                     with unseen voices, a panel of their stream accuracy beside the stream one

``--report-only`` (needs ``--workdir``): run nothing — no Ray, no chain, no corpus synthesis —
and write the same outputs from the chains of the planned (``--seeds`` × ``--labels``) list that
are FINISHED in ``<workdir>/mlflow.db``, found by run name (``fidelity-{mode}-s{seed}``; of
several, the newest finished one of the planned config, else the newest finished one, with a
note). A missing or unfinished chain is left out with a line saying so; the JSON's ``present``
lists the (seed, mode) pairs reported. The unseen-voice numbers are the ``unseen_voices_acc_*``
metrics the stage runs carry when that evaluation ran; the soft rows' direct is the hard
chain's of the same seed, as above. The tables come from the same code as a normal run's: the
same chains give the same tables. The JSON's ``commit`` is the chains' (mlflow.source.git.commit;
``dirty`` unknown: None), ``report_commit`` the checkout that wrote the report. To read a store
a benchmark is still writing, copy ``mlflow.db`` into another work directory first.

``--quick``: a 16-speaker corpus (``<workdir>/corpus-quick``; 2 test speakers, one of them of an
unseen voice), a one-epoch 1000 → 500 ms chain
and seeds 0 1 unless ``--seeds`` says otherwise: a smoke run of the whole script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]  # this folder's stats.py and plots.py, and the project

from stats import (ahead, fmt, fmt_ci, fmt_per_seed, fmt_seed_pairs, markdown_table, mean_ci,  # noqa: E402
                   paired)

DEFAULT_CONFIG = ROOT / "configs" / "fidelity.yaml"
FULL_CORPUS = dict(seed=0, speakers=300, n_unknown=10, val_fraction=0.3, test_fraction=0.3)  # as `make data`
# 16 speakers: 2 test speakers, one of them of an unseen voice (12 would give one test speaker,
# of an unseen voice, so that the unseen-voice split would be the whole test split)
QUICK_CORPUS = dict(seed=0, speakers=16, n_unknown=4, unseen_engine_speakers=2)
QUICK = {"chain.lengths_ms": [1000, 500], "chain.schedule": None, "train.epochs": 1, "train.teacher_epochs": 1}
METRICS = {"window": "test_acc_window", "stream": "test_acc_stream", "center": "test_acc_center",
           "fa/h@90%": "test_fa_per_hour_at_90_recall"}
LOWER_IS_BETTER = {"fa/h@90%"}
# The unseen-voice test split: the corpus's test clips of voices (accents) no training speaker
# has (distill/data/synth.py writes the list), evaluated after each chain by pld eval's
# evaluate_chain, which logs <UNSEEN>_acc_<protocol> into every stage run.
UNSEEN = "unseen_voices"
UNSEEN_LIST = "testing_unseen_voice_list.txt"  # = distill.data.synth.TESTING_UNSEEN_LIST
UNSEEN_METRICS = {p: f"{UNSEEN}_acc_{p}" for p in ("window", "stream", "center")}
AGREEMENT = ("label_agreement", "relabel_to_silence", "train_clip_agreement", "best_val_acc")
METHOD_ORDER = {"teacher": 0, "pld": 1, "direct": 2, "one_shot": 3}


def say(msg: str) -> None:
    print(msg, flush=True)


def git_commit() -> dict:
    """The commit the numbers come from, and whether tracked files had local changes."""
    def git(*cmd: str) -> str | None:
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": None if status is None else bool(status)}


# ---------------------------------------------------------------------------------------------
# The corpus

def _norm(value):
    """Comparable form of a synth parameter: JSON turns tuples into lists and ints may be floats."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def ensure_corpus(out: Path, *, seed: int, speakers: int, n_unknown: int, **synth) -> dict:
    """The synthetic corpus at ``out`` (its synth.json): reused when it was made with these
    parameters, else synthesized again — the work directory's corpora are the benchmark's own."""
    from distill.data.synth import UNKNOWN_WORDS, synthesize_corpus

    want = dict(seed=seed, speakers=speakers, unknown_words=list(UNKNOWN_WORDS[:n_unknown]), **synth)
    meta_file = out / "synth.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        have = {"seed": meta.get("seed"), "unknown_words": meta.get("unknown_words"), **meta.get("params", {})}
        differ = [k for k, v in want.items() if _norm(have.get(k)) != _norm(v)]
        if not differ:
            say(f"corpus: reusing {out}")
            return meta
        say(f"corpus: {out} was made with another {', '.join(differ)}: synthesizing it again")
    say(f"corpus: synthesizing {out} ({speakers} speakers, {n_unknown} unknown words"
        + "".join(f", {k}={v}" for k, v in synth.items()) + ") …")
    t = time.perf_counter()
    meta = synthesize_corpus(out, overwrite=meta_file.exists(), progress=False, **want)
    say(f"corpus: {meta['clips']} clips in {time.perf_counter() - t:.0f} s")
    return meta


def corpus_summary(path: Path, meta: dict | None) -> dict:
    """What the report says about the corpus (a corpus without synth.json: its path only)."""
    if not meta:
        return {"path": str(path)}
    stats, params = meta.get("stats", {}), meta.get("params", {})
    return {"path": str(path), "clips": meta.get("clips"), "speakers": params.get("speakers"),
            "placement": params.get("placement"), "rate_range": params.get("rate_range"),
            "median_word_ms": stats.get("word_ms", {}).get("median"),
            "share_whole_word_in_center_500ms": stats.get("share_whole_word_in_center_500ms")}


def _count_lines(path: Path) -> int | None:
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else None


def unseen_voice_split(path: Path, meta: dict | None) -> dict:
    """The corpus's unseen-voice test split: its list file's clips against testing_list.txt's,
    the held-out test voices, and whether (else why not) the chains are evaluated on it."""
    n_unseen, n_test = _count_lines(path / UNSEEN_LIST), _count_lines(path / "testing_list.txt")
    meta = meta or {}
    info = {"list": UNSEEN_LIST, "clips": n_unseen, "test_clips": n_test,
            "voices": meta.get("heldout_voices", {}).get("testing"),
            "speakers": meta.get("splits", {}).get("testing", {}).get("unseen_voice_speakers"),
            "test_speakers": meta.get("splits", {}).get("testing", {}).get("speakers")}
    if n_unseen is None:
        info["skipped"] = f"the corpus has no {UNSEEN_LIST} (synthesized before unseen-voice lists existed?)"
    elif n_unseen == 0:
        info["skipped"] = f"{UNSEEN_LIST} is empty (no held-out test voices)"
    return info


def unseen_voice_note(info: dict) -> str:
    """The report's line on the unseen-voice test split."""
    if info.get("skipped"):
        return f"unseen-voice test split: not evaluated: {info['skipped']}"
    who = "".join([f" of {info['speakers']} of {info['test_speakers']} test speakers" if info.get("speakers") else "",
                   f", voices {', '.join(info['voices'])}" if info.get("voices") else ""])
    same = " (all of the test split: the two columns measure the same clips)" if info["clips"] == info["test_clips"] else ""
    return (f"unseen-voice test split ({info['list']}): {info['clips']} of the {info['test_clips']} test clips"
            f"{who}{same}; each chain evaluated on it after it finished (`pld eval --name {UNSEEN}`)")


# ---------------------------------------------------------------------------------------------
# Running the chains

def chain_stage_rows(client, chain_run_id: str) -> list[dict]:
    """Every finished stage of a chain, read back from MLflow: name, method, length, metrics."""
    from distill.runtime.chain_eval import chain_runs

    _, runs = chain_runs(client, chain_run_id)
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        rows.append({"stage": run.info.run_name, "run_id": run.info.run_id,
                     "method": "teacher" if tags.get("pld.kind") == "teacher" else tags.get("pld.method", ""),
                     "input_ms": int(tags.get("pld.input_ms", 0)),
                     **{m: metrics.get(m) for m in (*METRICS.values(), *UNSEEN_METRICS.values(), *AGREEMENT)}})
    return rows


def _progress(line: str) -> None:
    """A chain's console, cut down to where each stage starts and what it scored."""
    if line.startswith("== [") or "test acc" in line:
        say("   " + line.strip())


def evaluate_unseen(chain_run_id: str, cfg, uri: str) -> dict:
    """Every model of a finished chain on the unseen-voice test split (its data options with
    data.testing_list swapped), logged into the stage runs as unseen_voices_acc_<protocol>:
    chain_stage_rows reads them back with the test numbers. A record of how it went."""
    from distill.runtime.chain_eval import evaluate_chain

    if "testing_list" not in type(cfg.data).model_fields:
        return {"status": "skipped", "error": f"dataset {cfg.data.name!r} has no testing_list option"}
    t = time.perf_counter()
    options = cfg.data.model_copy(update={"testing_list": UNSEEN_LIST})
    try:
        models = evaluate_chain(chain_run_id, options, name=UNSEEN, tracking=uri, out=lambda line: say("   " + line))
    except Exception as exc:  # the chain's own numbers stand without it
        say(f"   {UNSEEN} evaluation FAILED: {type(exc).__name__}: {exc}")
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
    seconds = time.perf_counter() - t
    say(f"   {UNSEEN} (stream): " + ", ".join(f"{m['stage']} {m['acc_stream']:.3f}" for m in models)
        + f"; {seconds:.0f} s")
    return {"status": "ok", "models": len(models), "seconds": seconds}


def plan_chains(args, config_file: Path, work: Path, corpus: Path) -> list[tuple[int, str, dict, object]]:
    """Every (seed, label mode) chain as (seed, mode, overrides, config), hard before soft: with
    both modes the soft chains leave ``direct`` out (they show the hard chain's). Every chain is
    validated here, before the first runs."""
    from distill.config import load_config

    borrow = "hard" in args.labels and "soft" in args.labels
    planned = []
    for seed in args.seeds:
        for mode in args.labels:  # hard before soft, as given: the soft chains' direct is the hard one's
            overrides = {"seed": seed, "name": chain_name(mode, seed), "data.path": str(corpus),
                         "storage.root": str(work / "runs"), "tracking.experiment": "fidelity", "labels.mode": mode,
                         **({"labels.temperature": args.temperature} if mode == "soft" else {}),
                         **(QUICK if args.quick else {})}
            cfg = load_config(config_file, overrides)
            if mode == "soft" and borrow:
                overrides["chain.baselines"] = [b for b in cfg.chain.baselines if b != "direct"]
                cfg = load_config(config_file, overrides)
            planned.append((seed, mode, overrides, cfg))
    return planned


def chain_name(mode: str, seed: int) -> str:
    """The run name of a (seed, label mode) chain: what --report-only finds it by."""
    return f"fidelity-{mode}-s{seed}"


def tagged_rows(client, seed: int, mode: str, chain_run_id: str) -> list[dict]:
    """A finished chain's stage rows with its seed, label mode and run id."""
    return [{"seed": seed, "labels": mode, "chain": chain_run_id, **r} for r in chain_stage_rows(client, chain_run_id)]


def share_direct(rows: list[dict]) -> list[dict]:
    """``rows`` plus, for every soft chain without a direct stage of its own, the hard chain's
    direct of the same seed (marked ``shared_from: hard``): direct never sees a teacher's labels,
    so the label mode does not change it (unseen-voice numbers included)."""
    soft = {r["seed"] for r in rows if r["labels"] == "soft"}
    own = {r["seed"] for r in rows if r["labels"] == "soft" and r["method"] == "direct"}
    return rows + [{**r, "labels": "soft", "shared_from": "hard"} for r in rows
                   if r["labels"] == "hard" and r["method"] == "direct" and r["seed"] in soft - own]


def run_chains(args, work: Path, corpus: Path, unseen: bool = False) -> tuple[list[dict], list[dict]]:
    """Every (seed, label mode) chain, one after another: per-stage rows, and a record per chain.
    ``unseen``: evaluate each finished chain on the corpus's unseen-voice test split too."""
    import mlflow

    from distill.runtime.chain import run_chain

    uri = f"sqlite:///{work / 'mlflow.db'}"
    planned = plan_chains(args, args.config, work, corpus)
    client = mlflow.MlflowClient(uri)
    rows, chains = [], []
    for seed, mode, overrides, cfg in planned:
        say(f"== seed {seed}, {mode} labels")
        t = time.perf_counter()
        record = {"seed": seed, "labels": mode, "overrides": overrides}
        try:
            result = run_chain(cfg, tracking=uri, new=args.new, out=_progress)
        except Exception as exc:  # one broken chain should not cost the others' hours
            chains.append({**record, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
            say(f"   chain FAILED after {time.perf_counter() - t:.0f} s: {type(exc).__name__}: {exc}")
            continue
        seconds = time.perf_counter() - t
        say(f"   chain {result.parent_run_id}: {seconds:.0f} s")
        record.update(status="ok", chain_run_id=result.parent_run_id, seconds=seconds)
        if unseen:  # before the rows are read back: they carry its metrics
            record[UNSEEN] = evaluate_unseen(result.parent_run_id, cfg, uri)
        chains.append(record)
        rows += tagged_rows(client, seed, mode, result.parent_run_id)
    return share_direct(rows), chains


def pick_chain_run(runs: list, fingerprint: str | None) -> tuple[object | None, str]:
    """Of the chain runs of one name (newest first), the one to report: the newest FINISHED one
    of the planned config's fingerprint, else the newest FINISHED one; and why none, or a note."""
    done = [r for r in runs if r.info.status == "FINISHED"]
    if not done:
        if not runs:
            return None, "not in the store"
        return None, f"{runs[0].info.status.lower()} (run {runs[0].info.run_id})"
    same = [r for r in done if r.data.tags.get("pld.config_fingerprint") == fingerprint]
    run = (same or done)[0]
    notes = []
    if not same:
        notes.append(f"made with another config than the planned one (fingerprint "
                     f"{run.data.tags.get('pld.config_fingerprint')} ≠ {fingerprint}): reported anyway")
    newer = [r for r in runs if r.info.start_time > run.info.start_time and r.info.status != "FINISHED"]
    if newer:
        notes.append(f"a newer run of that name is {newer[0].info.status.lower()} ({newer[0].info.run_id}): "
                     "the finished one is reported")
    return run, "; ".join(notes)


def stored_unseen(chain_rows: list[dict], tags: dict) -> dict:
    """How the unseen-voice evaluation of a finished chain went, from what its runs carry."""
    have = sum(r.get(UNSEEN_METRICS["stream"]) is not None for r in chain_rows)
    if have == len(chain_rows) and have:
        return {"status": "ok", "models": have, "from_store": True}
    if have:
        return {"status": "partial", "models": have,
                "error": f"{have} of {len(chain_rows)} stages carry {UNSEEN}_acc_* metrics"}
    return {"status": "not run", "error": f"no stage carries {UNSEEN}_acc_* metrics"
            + ("" if f"pld.eval.{UNSEEN}" in tags else " (the evaluation did not run or was stopped)")}


def stored_chains(args, work: Path, corpus: Path, unseen: bool = False) -> tuple[list[dict], list[dict]]:
    """``--report-only``: run_chains's rows and records from the chains already FINISHED in
    ``<workdir>/mlflow.db`` (chain runs named as run_chains names them), starting no Ray and no
    chain; a missing or unfinished chain is left out, with a line saying so. ``unseen``: the
    unseen-voice numbers are the ``unseen_voices_acc_*`` metrics the stage runs carry."""
    import mlflow

    from distill.config import load_config
    from distill.runtime.manifest import config_fingerprint

    db = work / "mlflow.db"
    if not db.is_file():
        raise SystemExit(f"--report-only: no MLflow store at {db}")
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("fidelity")
    by_name: dict[str, list] = {}
    if experiment is not None:
        for run in client.search_runs([experiment.experiment_id], filter_string="tags.`pld.kind` = 'chain'",
                                      order_by=["attributes.start_time DESC"], max_results=5000):
            by_name.setdefault(run.info.run_name, []).append(run)

    rows, chains = [], []
    for seed, mode, overrides, cfg in plan_chains(args, args.config, work, corpus):
        name = chain_name(mode, seed)
        record = {"seed": seed, "labels": mode, "overrides": overrides}
        runs = by_name.get(name, [])
        # the planned config's fingerprint where the chain's own runs folder stands (the store may have moved)
        root = next((r.data.params.get("storage.root") for r in runs if r.data.params.get("storage.root")), None)
        fingerprint = config_fingerprint(
            (load_config(args.config, {**overrides, "storage.root": root}) if root else cfg).model_dump(mode="json"))
        run, note = pick_chain_run(runs, fingerprint)
        if run is None:
            chains.append({**record, "status": "missing", "error": f"chain {name}: {note}"})
            say(f"seed {seed} {mode}: not finished — left out ({name}: {note})")
            continue
        metrics, tags = run.data.metrics, run.data.tags
        mine = tagged_rows(client, seed, mode, run.info.run_id)
        record.update(status="ok", chain_run_id=run.info.run_id, seconds=metrics.get("chain_seconds"),
                      commit=tags.get("mlflow.source.git.commit"), fingerprint=tags.get("pld.config_fingerprint"),
                      fingerprint_matches=tags.get("pld.config_fingerprint") == fingerprint,
                      **({"note": note} if note else {}))
        if unseen:
            record[UNSEEN] = stored_unseen(mine, tags)
        chains.append(record)
        rows += mine
        unseen_note = f"; {UNSEEN}: {record[UNSEEN]['status']}" if unseen else ""
        say(f"seed {seed} {mode}: chain {run.info.run_id}, {len(mine)} stages{unseen_note}"
            + (f" — note: {note}" if note else ""))
    return share_direct(rows), chains


# ---------------------------------------------------------------------------------------------
# Statistics and tables (pure: tests/test_fidelity_stats.py runs them on made-up rows)

def _summary(rows: list[dict], key: str) -> dict:
    per_seed = {r["seed"]: r.get(key) for r in sorted(rows, key=lambda r: r["seed"])}
    return {**mean_ci(per_seed.values()), "per_seed": per_seed}


def teacher_unseen_gap(rows: list[dict], modes: list[str], protocol: str = "stream") -> list[dict]:
    """Per label mode: the teacher's accuracy on the full test split and on the unseen-voice
    one (mean ± CI, per seed) and their paired difference unseen − full. Modes whose teacher
    has no unseen-voice number are left out."""
    out = []
    for mode in modes:
        teacher = {r["seed"]: r for r in rows if r["labels"] == mode and r["method"] == "teacher"}
        full = {s: r.get(METRICS[protocol]) for s, r in sorted(teacher.items())}
        unseen = {s: r.get(UNSEEN_METRICS[protocol]) for s, r in sorted(teacher.items())}
        if not mean_ci(unseen.values())["n"]:
            continue
        gap = paired(unseen, full)
        out.append({"labels": mode, "protocol": protocol, "full": {**mean_ci(full.values()), "per_seed": full},
                    "unseen": {**mean_ci(unseen.values()), "per_seed": unseen},
                    "unseen_minus_full": {**mean_ci(gap.values()), "per_seed": gap}})
    return out


def aggregate(rows: list[dict], modes: list[str]) -> dict:
    """Per label mode and stage: mean ± CI of every metric, on the test split and (under
    ``unseen_voices``) the unseen-voice one; at the final length, the paired PLD − baseline
    differences with the number of seeds on which PLD was ahead; the teacher's unseen-voice gap."""
    final = min((r["input_ms"] for r in rows if r["method"] == "pld"), default=None)
    methods, agreement, diffs = [], [], []
    for mode in modes:
        mine = [r for r in rows if r["labels"] == mode]
        stages = sorted({r["stage"]: r for r in mine}.values(),
                        key=lambda r: (METHOD_ORDER.get(r["method"], 9), -r["input_ms"]))
        for ex in stages:
            sel = [r for r in mine if r["stage"] == ex["stage"]]
            head = {"labels": mode, "stage": ex["stage"], "method": ex["method"], "input_ms": ex["input_ms"],
                    "shared_from": ex.get("shared_from")}
            methods.append({**head, **{col: _summary(sel, metric) for col, metric in METRICS.items()},
                            UNSEEN: {col: _summary(sel, metric) for col, metric in UNSEEN_METRICS.items()}})
            agreement.append({**head, **{key: _summary(sel, key) for key in AGREEMENT}})

        def at_final(method: str) -> dict:
            return {r["seed"]: r for r in mine if r["method"] == method and r["input_ms"] == final}

        pld = at_final("pld")
        for baseline in ("direct", "one_shot"):
            base = at_final(baseline)
            if not base:
                continue
            for col, metric in METRICS.items():
                d = paired({s: r[metric] for s, r in pld.items()}, {s: r[metric] for s, r in base.items()})
                diffs.append({"labels": mode, "vs": baseline, "metric": col, "input_ms": final, **mean_ci(d.values()),
                              "per_seed": d, "ahead": ahead(d.values(), lower_is_better=col in LOWER_IS_BETTER)})
    return {"final_ms": final, "methods": methods, "diffs": diffs, "agreement": agreement,
            "teacher_unseen": teacher_unseen_gap(rows, modes)}


def _unseen_failures(chains: list[dict]) -> str:
    """' (evaluation failed for hard s1: ValueError: …)' for the chains whose unseen-voice run did not work."""
    bad = [c for c in chains if c.get(UNSEEN, {}).get("status") not in (None, "ok")]
    return "".join(f" ({c[UNSEEN]['status']} for {c['labels']} s{c['seed']}: {c[UNSEEN].get('error')})" for c in bad)


def _digits(col: str) -> int:
    return 0 if col in LOWER_IS_BETTER else 3  # false accepts per hour: whole numbers


def _stage_lines(methods: list[dict], cols: list[str]) -> list[dict]:
    """One table line per stage: ``cols`` of each method entry (a dict of summaries) as mean ± CI."""
    return [{"stage": m["stage"] + (f" ({m['shared_from']}'s)" if m.get("shared_from") else ""),
             "method": m["method"], "input_ms": m["input_ms"], "n": m["stream"]["n"],
             **{c: fmt_ci(m[c], _digits(c)) for c in cols}} for m in methods]


def render_teacher_unseen(gaps: list[dict]) -> list[str]:
    """The teacher on the full test split against the unseen-voice one (stream): markdown lines."""
    if not gaps:
        return []
    lines = [{"labels": g["labels"], "n": g["unseen"]["n"], "full test split": fmt_ci(g["full"]),
              "unseen-voice split": fmt_ci(g["unseen"]), "unseen − full": fmt_ci(g["unseen_minus_full"], signed=True),
              "per seed (full → unseen)": fmt_seed_pairs(g["full"]["per_seed"], g["unseen"]["per_seed"])}
             for g in gaps]
    return [f"## Teacher: full test split vs unseen-voice test split ({gaps[0]['protocol']}): mean ± 95 % CI", "",
            markdown_table(lines, ["labels", "n", "full test split", "unseen-voice split", "unseen − full",
                                   "per seed (full → unseen)"])]


def render(agg: dict, modes: list[str], header: list[str]) -> str:
    """The markdown report: the accuracy tables (test split, unseen-voice test split), the
    teacher's unseen-voice gap, the paired differences, the label agreement."""
    out = ["# PLD fidelity benchmark", "", *header, ""]
    for mode in modes:
        mine = [m for m in agg["methods"] if m["labels"] == mode]
        if mine:
            out += [f"## Test split, {mode} labels: mean ± 95 % CI over seeds", "",
                    markdown_table(_stage_lines(mine, list(METRICS)), ["stage", "method", "input_ms", "n", *METRICS])]
        unseen = [{**m, **m[UNSEEN]} for m in mine if any(c["n"] for c in m.get(UNSEEN, {}).values())]
        if unseen:
            out += [f"## Unseen-voice test split, {mode} labels: mean ± 95 % CI over seeds", "",
                    markdown_table(_stage_lines(unseen, list(UNSEEN_METRICS)),
                                   ["stage", "method", "input_ms", "n", *UNSEEN_METRICS])]
    out += render_teacher_unseen(agg.get("teacher_unseen", []))
    if agg["diffs"]:
        lines = [{"labels": d["labels"], "vs": d["vs"], "metric": d["metric"], "n": d["n"],
                  "PLD − baseline": fmt_ci(d, _digits(d["metric"]), signed=True),
                  "per seed": fmt_per_seed(d["per_seed"], _digits(d["metric"])),
                  "PLD ahead": f"{d['ahead']}/{d['n']}"} for d in agg["diffs"]]
        out += [f"## Final student ({agg['final_ms']} ms) minus baseline, paired by seed: mean ± 95 % CI", "",
                "PLD ahead: seeds on which PLD was better (for fa/h@90%: fewer false accepts).", "",
                markdown_table(lines, ["labels", "vs", "metric", "n", "PLD − baseline", "per seed", "PLD ahead"])]
    # stages labelled by the clips (teacher, direct) agree with them by definition: no figure to show
    relabelled = lambda a, k: a["method"] not in ("teacher", "direct") or k not in ("label_agreement", "relabel_to_silence")  # noqa: E731
    lines = [{"labels": a["labels"], "stage": a["stage"], "input_ms": a["input_ms"],
              **{k: fmt(a[k]["mean"]) if relabelled(a, k) else "-" for k in AGREEMENT}} for a in agg["agreement"]]
    if lines:
        out += ["## Relabelling and fit, mean over seeds", "",
                "label_agreement: crops whose teacher label is the clip's own; relabel_to_silence: of the others, "
                "the share called _silence_; train_clip_agreement: the teacher on its own training clips.", "",
                markdown_table(lines, ["labels", "stage", "input_ms", *AGREEMENT])]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------

def chains_commit(chains: list[dict]) -> dict:
    """--report-only: the commit the stored chains ran (their mlflow.source.git.commit, short),
    several joined by commas; whether it had local changes is not recorded (None)."""
    commits = sorted({c["commit"][:7] for c in chains if c.get("commit")})
    return {"commit": ",".join(commits) or None, "dirty": None}


def write_report(args, *, work: Path, corpus: Path, meta: dict | None, unseen: dict, rows: list[dict],
                 chains: list[dict], started: float, out_json: Path) -> int:
    """Aggregate the rows, print the tables and write OUT (.json, .txt, .png): what a normal run
    and a --report-only run both end with. 1 when a chain failed (or, report-only, none finished)."""
    import yaml

    from distill.config import load_config

    report_only = bool(getattr(args, "report_only", False))
    agg = aggregate(rows, args.labels)
    here = git_commit()
    git = chains_commit(chains) if report_only else here
    corpus_info = corpus_summary(corpus, meta)
    failed = [c for c in chains if c["status"] != "ok"]
    present = [[c["seed"], c["labels"]] for c in chains if c["status"] == "ok"]
    if report_only:
        source = (f"commit {git['commit'] or '?'} (the chains' mlflow.source.git.commit); report-only from the store, "
                  f"tables by commit {here['commit']}{' (with local changes)' if here['dirty'] else ''}")
        left_out = ", ".join(f"{c['labels']} s{c['seed']}" for c in failed)
        count = (f"chains {len(present)} of {len(chains)} finished and reported"
                 + (f"; left out: {left_out}" if failed else ""))
    else:
        source = f"commit {git['commit']}{' (with local changes)' if git['dirty'] else ''}"
        count = f"chains {len(chains) - len(failed)} ok, {len(failed)} failed"
    header = [f"{source}; config {args.config}{' + --quick' if args.quick else ''}; seeds {args.seeds}; "
              f"labels {'/'.join(args.labels)}"
              + (f" (soft at temperature {args.temperature})" if "soft" in args.labels else "")
              + f"; {time.perf_counter() - started:.0f} s",
              f"corpus {corpus}: " + ", ".join(f"{k} {v}" for k, v in corpus_info.items() if k != "path" and v is not None),
              f"MLflow store sqlite:///{work / 'mlflow.db'}, experiment 'fidelity'; {count}",
              unseen_voice_note(unseen) + _unseen_failures(chains)]
    text = render(agg, args.labels, header)
    say("\n" + text)
    out_json.with_suffix(".txt").write_text(text)
    if agg["methods"]:
        from plots import fidelity_figure

        fidelity_figure(agg["methods"], agg["final_ms"], args.labels, out_json.with_suffix(".png"))
    out_json.write_text(json.dumps({
        **git, "config_file": str(args.config), "config": yaml.safe_load(args.config.read_text()),
        "resolved_config": load_config(args.config, chains[0]["overrides"]).model_dump(mode="json") if chains else None,
        "seeds": args.seeds, "labels": args.labels, "temperature": args.temperature, "quick": args.quick,
        "report_only": report_only, "present": present,
        **({"report_commit": here, "store": str(work / "mlflow.db")} if report_only else {}),
        "corpus": corpus_info, UNSEEN: unseen, "chains": chains, "rows": rows, **agg, "seconds": time.perf_counter() - started,
    }, indent=1, default=str))
    say(f"wrote {out_json}, {out_json.with_suffix('.txt')}" + (f", {out_json.with_suffix('.png')}" if agg["methods"] else ""))
    if report_only:
        return 0 if present else 1
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the chain (default configs/fidelity.yaml)")
    ap.add_argument("--seeds", type=int, nargs="+", help="default 0 1 2 (--quick: 0 1)")
    ap.add_argument("--labels", nargs="+", choices=["hard", "soft"], default=["hard", "soft"])
    ap.add_argument("--temperature", type=float, default=2.0, help="temperature of the soft labels (default 2)")
    ap.add_argument("--corpus", type=Path, help="an existing corpus (default: make data's, synthesized in the workdir)")
    ap.add_argument("--workdir", type=Path, help="corpus, runs and the MLflow store (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="results JSON; .txt and .png beside it (default <workdir>/fidelity.json)")
    ap.add_argument("--new", action="store_true", help="never resume an unfinished chain of the same config")
    ap.add_argument("--quick", action="store_true", help="a tiny corpus and a one-epoch 1000 → 500 ms chain")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: the report of the chains already finished in <workdir>/mlflow.db")
    args = ap.parse_args(argv)
    if args.report_only and (args.new or not args.workdir):
        ap.error("--report-only reads <workdir>/mlflow.db: it needs --workdir, and runs nothing (no --new)")
    args.seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    args.labels = [m for m in ("hard", "soft") if m in args.labels]  # hard first: soft borrows its direct
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="pld-fidelity-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_json = (args.json or work / "fidelity.json").resolve()
    out_json.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    if args.corpus or args.report_only:  # report-only never synthesizes: the corpus is only described
        corpus = args.corpus.resolve() if args.corpus else work / ("corpus-quick" if args.quick else "corpus")
        meta = json.loads((corpus / "synth.json").read_text()) if (corpus / "synth.json").exists() else None
    else:
        corpus = work / ("corpus-quick" if args.quick else "corpus")
        meta = ensure_corpus(corpus, **(QUICK_CORPUS if args.quick else FULL_CORPUS))
    unseen = unseen_voice_split(corpus, meta)
    say(unseen_voice_note(unseen))
    collect = stored_chains if args.report_only else run_chains
    rows, chains = collect(args, work, corpus, unseen=not unseen.get("skipped"))
    return write_report(args, work=work, corpus=corpus, meta=meta, unseen=unseen, rows=rows, chains=chains,
                        started=started, out_json=out_json)


if __name__ == "__main__":
    sys.exit(main())
