"""``pld study report STUDY.yaml``: every table and figure of a study, from its records alone.

No Ray and no MLflow store: the records (``records.py``) hold every clip's prediction, so
accuracies, their intervals over seeds, the contrasts paired by seed and by clip, and the
seeds a contrast needs are all computed here. Writes ``report.md``, ``report.json`` (the same
numbers) and the figures (``figures.py``) into the output folder.

Only records of the study's current cells count: a record of a cell the study no longer has,
or made with another resolved config (its fingerprint differs), is listed as left out.
"""

from __future__ import annotations

import json
import math

import numpy as np
from pathlib import Path
from typing import Any

from distill.study import stats
from distill.study.figures import (ACCURACY_FIGURE, CONTRAST_FIGURE, CURVES_FIGURE, WORD_SHARE_FIGURE, _f,
                                   figures, headline_protocol)
from distill.study.records import TEST, CellRecord, correct_by_seed, read_records, same_config
from distill.study.spec import Study
from distill.study.word_share import LITTLE, MOST, OUTCOMES
from distill.study.word_share import summary as word_share_summary

PLATEAU_SHARE = 0.2  # "has it converged": validation accuracy's change over the last 20 % of epochs


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _pm(mean: float, half: float, digits: int = 3, signed: bool = False) -> str:
    if not math.isfinite(mean):
        return "–"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + (f" ± {half:.{digits}f}" if math.isfinite(half) else "")


def cell_label(levels: dict[str, str], reference: dict[str, str]) -> str:
    """A cell named by what differs from the reference cell (the design's first): short enough
    for a figure's axis, and in a one-factor-at-a-time design it names the factor."""
    changed = [f"{axis}={level}" for axis, level in levels.items() if reference.get(axis) != level]
    return ", ".join(changed) if changed else "first cell"


def current_records(study: Study, records: list[CellRecord]) -> tuple[dict[str, list[CellRecord]], list[str]]:
    """The study's records by cell id (cells in the study's order, seeds ascending), and a line
    for each record left out (another study, a cell it no longer has, another config or seed)."""
    configs = {(c.id, s): study.resolved(c, s) for c in study.cells() for s in study.seeds}
    by_cell: dict[str, list[CellRecord]] = {c.id: [] for c in study.cells()}
    left_out = []
    for r in records:
        where = f"{r.cell_id} seed {r.seed}"
        if r.study != study.name:
            left_out.append(f"{where}: of study {r.study!r}")
        elif (r.cell_id, r.seed) not in configs:
            left_out.append(f"{where}: not a cell and seed of the study now")
        elif not same_config(r.resolved_config, configs[(r.cell_id, r.seed)]):
            left_out.append(f"{where}: made with another config (fingerprint {r.fingerprint}); run the study again")
        else:
            by_cell[r.cell_id].append(r)
    for rs in by_cell.values():
        rs.sort(key=lambda r: r.seed)
    return by_cell, left_out


def eval_sets(study: Study) -> list[str]:
    return [TEST, *study.eval]


def accuracy_by_seed(records: list[CellRecord], stage: str, protocol: str, eval_set: str) -> dict[int, float]:
    out = {}
    for r in records:
        ev = r.evals.get(eval_set)
        if ev is None or stage not in ev.predictions or protocol not in ev.predictions[stage] or not ev.targets:
            continue
        out[r.seed] = float(r.correct(stage, protocol, eval_set).mean())
    return out


def stage_entry(study: Study, rs: list[CellRecord], st) -> dict[str, Any]:
    """One stage of a cell over its seeds: accuracy per eval set and protocol, label agreement,
    labels against the word's share (summed over seeds) and the mean validation curve."""
    stage = {"stage": st.name, "method": st.method, "input_ms": st.input_ms, "accuracy": {}}
    for ev in eval_sets(study):
        stage["accuracy"][ev] = {}
        for p in study.protocols:
            acc = accuracy_by_seed(rs, st.name, p, ev)
            mean, half = stats.mean_ci(acc.values())
            stage["accuracy"][ev][p] = {"mean": _num(mean), "ci95": _num(half), "n": len(acc),
                                        "by_seed": {str(k): v for k, v in acc.items()}}
    same = [r_st for r in rs for r_st in r.stages if r_st.name == st.name]
    mean, half = stats.mean_ci([r_st.label_stats.get("agreement") for r_st in same])
    stage["label_agreement"] = {"mean": _num(mean), "ci95": _num(half)}
    tables = [r_st.word_share for r_st in same if r_st.word_share]
    if tables:
        summed = {"edges": tables[0]["edges"],
                  **{k: np.sum([t[k] for t in tables], axis=0).astype(int).tolist() for k in OUTCOMES}}
        stage["word_share"] = {"table": summed, **word_share_summary(summed)}
    stage["val_curve"] = mean_curve([r_st.curves.get("val_acc", []) for r_st in same])
    return stage


def contrast_row(contrast, cell_id: str, a_stage: str, b_stage: str, rs: list[CellRecord], ev: str, p: str,
                 n_boot: int) -> dict[str, Any]:
    """One contrast in one cell, eval set and protocol: paired by seed, by clip, and its power line."""
    a = accuracy_by_seed(rs, a_stage, p, ev)
    b = accuracy_by_seed(rs, b_stage, p, ev)
    mean, half, n = stats.paired_by_seed(a, b)
    diffs = stats.paired_diffs(a, b)
    both = [r for r in rs if r.seed in diffs]
    if both:
        _, ca = correct_by_seed(both, a_stage, p, ev)
        _, cb = correct_by_seed(both, b_stage, p, ev)
        boot = stats.paired_bootstrap(ca, cb, n_boot=n_boot)
    else:
        boot = (math.nan, math.nan, math.nan)
    return {"contrast": str(contrast), "cell": cell_id, "eval": ev, "protocol": p,
            "a": a_stage, "b": b_stage, "mean": _num(mean), "ci95": _num(half), "n": n,
            "by_seed": {str(k): v for k, v in diffs.items()},
            "bootstrap": {"diff": _num(boot[0]), "lo": _num(boot[1]), "hi": _num(boot[2])},
            "power": stats.contrast_power_line(diffs)}


def compute(study: Study, records: list[CellRecord], n_boot: int = 2000) -> dict[str, Any]:
    """Every number of the report, as plain JSON-able data."""
    by_cell, left_out = current_records(study, records)
    reference = study.cells()[0].levels
    cells = [{"cell": cell.id, "label": cell_label(cell.levels, reference), "levels": cell.levels,
              "seeds": [r.seed for r in by_cell[cell.id]],
              "stages": [stage_entry(study, by_cell[cell.id], st) for st in
                         (by_cell[cell.id][0].stages if by_cell[cell.id] else [])]}
             for cell in study.cells()]
    contrasts = []
    for contrast in study.contrasts:
        for cell in study.cells():
            a_stage, b_stage = contrast.stages(study.resolved(cell, study.seeds[0]))
            contrasts += [contrast_row(contrast, cell.id, a_stage, b_stage, by_cell[cell.id], ev, p, n_boot)
                          for ev in eval_sets(study) for p in study.protocols]
    return {"study": study.name, "protocols": list(study.protocols), "eval_sets": eval_sets(study),
            "seeds": list(study.seeds), "cells": cells, "contrasts": contrasts, "left_out": left_out,
            "commits": sorted({f"{r.commit}{' (dirty)' if r.dirty else ''}" for rs in by_cell.values() for r in rs})}


def mean_curve(curves: list[list[float]]) -> list[float]:
    """Epoch-wise mean of the seeds' curves, as long as the longest. A shorter curve is the tail
    of a resumed stage's (its run logged the epochs after the restart only), so curves are
    aligned at their last epoch and each epoch is the mean of the seeds that have it."""
    n = max((len(c) for c in curves), default=0)
    return [float(np.mean([c[i - n + len(c)] for c in curves if i - n + len(c) >= 0])) for i in range(n)]


def plateau(curve: list[float]) -> tuple[float | None, float | None]:
    """(last value, its change over the last PLATEAU_SHARE of the epochs) of a validation curve."""
    if len(curve) < 2:
        return (curve[-1] if curve else None), None
    back = max(1, round(PLATEAU_SHARE * len(curve)))
    return curve[-1], curve[-1] - curve[-1 - back]


def _header(data: dict[str, Any]) -> list[str]:
    """What the report covers: records, cells, seeds, code, and what is missing or left out."""
    lines = [f"# Study {data['study']}", ""]
    n_records = sum(len(c["seeds"]) for c in data["cells"])
    lines.append(f"{n_records} record(s) of {len(data['cells'])} cell(s) × {len(data['seeds'])} seed(s); "
                 f"code: {', '.join(data['commits']) or 'none'}.")
    missing = [c["cell"] for c in data["cells"] if 0 < len(c["seeds"]) < len(data["seeds"])]
    if missing:
        lines.append(f"Cells not complete yet: {', '.join(missing)}.")
    not_run = [c["cell"] for c in data["cells"] if not c["seeds"]]
    if not_run:
        lines.append(f"Cells with no record yet (left out of the tables): {', '.join(not_run)}.")
    lines += [f"- left out: {line}" for line in data["left_out"]]
    return lines + ["", "Mean ± 95 % CI (Student t over seeds) of the accuracy per clip."]


def _accuracy_tables(data: dict[str, Any]) -> list[str]:
    protocols, lines = data["protocols"], []
    for ev in data["eval_sets"]:
        lines += ["", f"## Accuracy on {ev}", "",
                  "| cell | stage | method@ms | seeds | " + " | ".join(protocols) + " | label agreement |",
                  "|---|---|---|---|" + "---|" * len(protocols) + "---|"]
        for cell in data["cells"]:
            for st in cell["stages"]:
                acc = st["accuracy"][ev]
                ag = st["label_agreement"]
                lines.append(f"| {cell['cell']} | {st['stage']} | {st['method']}@{st['input_ms']} | "
                             f"{max((acc[p]['n'] for p in protocols), default=0)} | "
                             + " | ".join(_pm(_f(acc[p]["mean"]), _f(acc[p]["ci95"])) for p in protocols)
                             + f" | {_pm(_f(ag['mean']), _f(ag['ci95']))} |")
    return lines


def _summary_table(data: dict[str, Any]) -> list[str]:
    """What a reader asks first: every contrast on the test split, one row per cell, the cells
    named by what differs from the first."""
    names = list(dict.fromkeys(c["contrast"] for c in data["contrasts"]))
    cells = [c for c in data["cells"] if c["seeds"]]
    if not names or not cells:
        return []
    protocol = headline_protocol(data)
    rows = {(c["contrast"], c["cell"]): c for c in data["contrasts"] if c["eval"] == TEST and c["protocol"] == protocol}
    lines = ["", "## Summary", "",
             f"Each contrast on {TEST}, {protocol} protocol, paired by seed (mean ± 95 % CI). A cell is named by "
             f"what differs from the first cell, `{data['cells'][0]['cell']}`.", "",
             "| cell | seeds | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for cell in cells:
        diffs = [rows.get((name, cell["cell"])) for name in names]
        lines.append(f"| {cell['label']} | {len(cell['seeds'])} | " + " | ".join(
            "–" if d is None or d["mean"] is None else _pm(d["mean"], _f(d["ci95"]), signed=True) for d in diffs) + " |")
    return lines


def _contrast_tables(data: dict[str, Any]) -> list[str]:
    if not data["contrasts"]:
        return []
    lines = ["", "## Contrasts", "",
             "Paired by seed: mean of the per-seed differences ± 95 % CI (t). Per clip: the paired "
             "bootstrap over test clips (95 % percentile interval), the test set's own noise. "
             "Power: seeds a paired t-test (α 0.05, power 0.8) needs to resolve 0.03 and 0.05 "
             "at the measured spread."]
    for ev in data["eval_sets"]:
        rows = [c for c in data["contrasts"] if c["eval"] == ev and c["n"]]  # cells with no seed yet: left out
        lines += ["", f"### On {ev}", "",
                  "| contrast | cell | protocol | seeds | paired by seed | per-clip bootstrap | power |",
                  "|---|---|---|---|---|---|---|"]
        for c in rows:
            boot = c["bootstrap"]
            boot_text = ("–" if boot["diff"] is None else
                         f"{boot['diff']:+.3f} [{boot['lo']:+.3f}, {boot['hi']:+.3f}]")
            lines.append(f"| {c['contrast']} | {c['cell']} | {c['protocol']} | {c['n']} | "
                         f"{_pm(_f(c['mean']), _f(c['ci95']), signed=True)} | {boot_text} | {c['power']} |")
    return lines


def _word_share_table(shares: list[tuple[str, dict]]) -> list[str]:
    if not shares:
        return []
    lines = ["", "## Labels against the word", "",
             f"Every training crop of a word clip, over all seeds: of the crops holding at least {MOST:.0%} "
             f"of their word, the share whose label is the word's; of those holding less than {LITTLE:.0%}, "
             "the share labelled silence or unknown. Direct learning keeps the clip's label whatever the crop "
             "holds.", "",
             f"| cell | stage | crops ≥ {MOST * 100:.0f} % | keep the word | crops < {LITTLE * 100:.0f} % | "
             "silence or unknown |", "|---|---|---|---|---|---|"]
    share = lambda x: "–" if x is None else f"{x:.3f}"  # noqa: E731 (no crops in that range: no share)
    for cell_id, st in shares:
        ws = st["word_share"]
        lines.append(f"| {cell_id} | {st['stage']} | {ws['crops_most']} | {share(ws['most_keep_word'])} | "
                     f"{ws['crops_little']} | {share(ws['little_to_silence_or_unknown'])} |")
    return lines


def _convergence_table(curves: list[tuple[str, dict]]) -> list[str]:
    if not curves:
        return []
    lines = ["", "## Convergence", "",
             f"Validation accuracy (stream, mean over seeds) at the last epoch, and its change over the last "
             f"{PLATEAU_SHARE:.0%} of the epochs: a stage still climbing has not converged.", "",
             "| cell | stage | epochs | last val_acc | change |", "|---|---|---|---|---|"]
    for cell_id, st in curves:
        last, change = plateau(st["val_curve"])
        lines.append(f"| {cell_id} | {st['stage']} | {len(st['val_curve'])} | {_f(last):.3f} | "
                     + ("–" if change is None else f"{change:+.3f}") + " |")
    return lines


def markdown(data: dict[str, Any]) -> str:
    shares = [(cell["cell"], st) for cell in data["cells"] for st in cell["stages"] if st.get("word_share")]
    curves = [(cell["cell"], st) for cell in data["cells"] for st in cell["stages"] if st.get("val_curve")]
    lines = [*_header(data), *_summary_table(data), *_accuracy_tables(data), *_contrast_tables(data), *_word_share_table(shares),
             *_convergence_table(curves)]
    lines += ["", "## Figures", "", f"![accuracy by input length]({ACCURACY_FIGURE})", "",
              f"![contrasts]({CONTRAST_FIGURE})", ""] + ([f"![validation curves]({CURVES_FIGURE})", ""] if curves else [])
    if shares:
        lines += [f"![labels against word share, {shares[0][0]}]({WORD_SHARE_FIGURE})", ""]
    return "\n".join(lines)


def write_report(study: Study, records_dir: str | Path, out: str | Path, n_boot: int = 2000) -> dict[str, Any]:
    """``report.md``, ``report.json`` and the figures in ``out``, from the records in ``records_dir``."""
    out = Path(out)
    records = read_records(records_dir)
    if not records:
        raise FileNotFoundError(f"{records_dir}: no study records yet (run pld study first)")
    data = compute(study, records, n_boot=n_boot)
    out.mkdir(parents=True, exist_ok=True)
    figures(data, out)
    (out / "report.md").write_text(markdown(data), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n",
                                     encoding="utf-8")
    return data
