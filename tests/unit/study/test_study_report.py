"""The study report from hand-made records: its numbers are the statistics computed here
independently, records of another config are left out, and the figures are written. No Ray,
no MLflow; about a second."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
from scipy import stats as sps

from distill.study.records import CellRecord, cell_fingerprint, write_record
from distill.study.report import (ACCURACY_FIGURE, CONTRAST_FIGURE, CURVES_FIGURE, WORD_SHARE_FIGURE,
                                  cell_label, write_report)
from distill.study.spec import load_study
from distill.study.stats import paired_bootstrap

BASE = """\
name: base
data: {name: speech_commands, path: data/synth-sc}
model: {name: tiny}
chain: {lengths_ms: [1000, 500], baselines: [direct]}
train: {epochs: 1}
"""

STUDY = """\
name: toy
base: base.yaml
seeds: [0, 1, 2]
axes:
  labels:
    mixed: {labels.original_weight: 0.5}
    teacher: {labels.original_weight: 0.0}
contrasts: ["pld@500 - direct@500"]
protocols: [stream, center]
eval:
  unseen: {name: speech_commands_test, path: data/unseen}
"""

LABELS = ["_silence_", "_unknown_", "yes", "no"]
N_CLIPS = 40
STAGES = [("teacher", "teacher", "teacher", 1000), ("student_500ms", "pld", "student", 500),
          ("direct_500ms", "direct", "baseline", 500)]
# the chance each stage gets a clip right, per cell
SKILL = {"labels=mixed": {"teacher": 0.95, "student_500ms": 0.8, "direct_500ms": 0.7},
         "labels=teacher": {"teacher": 0.95, "student_500ms": 0.6, "direct_500ms": 0.7}}


def predictions(rng, targets, p):
    targets = np.asarray(targets)
    right = rng.random(len(targets)) < p
    return np.where(right, targets, (targets + 1) % len(LABELS)).tolist()


# per seed: of 10 crops holding >= 80 % of the word 9 keep it; of 4 holding < 20 %, 3 are silence or unknown
WORD_SHARE = {"edges": [i / 10 for i in range(11)], "word": [1, 0, 0, 0, 0, 2, 2, 0, 4, 5],
              "silence": [2, 0, 0, 0, 0, 0, 0, 0, 0, 0], "unknown": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
              "other": [0, 0, 0, 0, 0, 1, 0, 0, 1, 0]}


def curve(seed, kind):
    """A validation curve: the teacher's flat from epoch 6, the others still climbing."""
    return [min(0.5 + 0.05 * e, 0.8) if kind == "teacher" else 0.4 + 0.03 * e + 0.01 * seed for e in range(10)]


def make(study, cell, seed, rng, clips=N_CLIPS):
    cfg = study.resolved(cell, seed)
    clip_ids = [f"c{i:03d}" for i in range(clips)]
    targets = [i % len(LABELS) for i in range(clips)]
    evals = {}
    for ev in ("test", "unseen"):
        evals[ev] = {"clip_ids": clip_ids, "targets": targets,
                     "predictions": {name: {p: predictions(rng, targets, SKILL[cell.id][name])
                                            for p in ("stream", "center")} for name, *_ in STAGES}}
    return CellRecord(study=study.name, cell_id=cell.id, levels=cell.levels, seed=seed,
                      fingerprint=cell_fingerprint(cfg), commit="abc123", dirty=False,
                      resolved_config=cfg.model_dump(mode="json"), labels=LABELS,
                      stages=[{"name": n, "method": m, "kind": k, "input_ms": ms, "metrics": {},
                               "label_stats": {"agreement": 0.7 + 0.01 * seed} if k != "teacher" else {},
                               "curves": {"val_acc": curve(seed, k), "train_loss": [1.0] * 10},
                               "word_share": WORD_SHARE if k != "teacher" else {}}
                              for n, m, k, ms in STAGES],
                      evals=evals)


@pytest.fixture
def study_records(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "study.yaml").write_text(textwrap.dedent(STUDY))
    study = load_study(tmp_path / "study.yaml")
    rng = np.random.default_rng(7)
    records = [make(study, cell, seed, rng) for cell in study.cells() for seed in study.seeds]
    for r in records:
        write_record(tmp_path / "records", r)
    return study, records, tmp_path


def acc(record, stage, protocol, ev="test"):
    e = record.evals[ev]
    return float(np.mean(np.asarray(e.predictions[stage][protocol]) == np.asarray(e.targets)))


def t_ci(xs):
    xs = np.asarray(xs, float)
    return xs.mean(), sps.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / math.sqrt(len(xs))


def test_the_report_numbers_are_the_statistics_of_the_records(study_records):
    study, records, tmp = study_records
    data = write_report(study, tmp / "records", tmp / "report", n_boot=500)
    for cell in study.cells():
        rs = [r for r in records if r.cell_id == cell.id]
        (entry,) = [c for c in data["cells"] if c["cell"] == cell.id]
        assert entry["seeds"] == [0, 1, 2]
        for st in entry["stages"]:
            for ev in ("test", "unseen"):
                for p in ("stream", "center"):
                    mean, half = t_ci([acc(r, st["stage"], p, ev) for r in rs])
                    got = st["accuracy"][ev][p]
                    assert got["mean"] == pytest.approx(mean) and got["ci95"] == pytest.approx(half)
        for p in ("stream", "center"):
            (row,) = [c for c in data["contrasts"] if c["cell"] == cell.id and c["protocol"] == p and c["eval"] == "test"]
            diffs = [acc(r, "student_500ms", p) - acc(r, "direct_500ms", p) for r in rs]
            mean, half = t_ci(diffs)
            assert (row["a"], row["b"], row["n"]) == ("student_500ms", "direct_500ms", 3)
            assert row["mean"] == pytest.approx(mean) and row["ci95"] == pytest.approx(half)
            ca = np.vstack([r.correct("student_500ms", p) for r in rs])
            cb = np.vstack([r.correct("direct_500ms", p) for r in rs])
            diff, lo, hi = paired_bootstrap(ca, cb, n_boot=500)
            assert diff == pytest.approx(mean)  # the same clips under every seed: the same mean difference
            assert (row["bootstrap"]["lo"], row["bootstrap"]["hi"]) == (pytest.approx(lo), pytest.approx(hi))
            assert row["power"].startswith(f"sd {np.std(diffs, ddof=1):.3f} over 3 seeds: 0.03 needs ")

    md = (tmp / "report" / "report.md").read_text()
    for cell in study.cells():
        assert f"| {cell.id} | student_500ms | pld@500 |" in md
        assert f"| pld@500 - direct@500 | {cell.id} | stream | 3 |" in md
    assert "## Accuracy on unseen" in md and "### On unseen" in md
    assert json.loads((tmp / "report" / "report.json").read_text()) == json.loads(json.dumps(data))
    for cell in study.cells():  # convergence: the last value (mean over seeds) and its change over 2 epochs
        assert f"| {cell.id} | teacher | 10 | 0.800 | +0.000 |" in md
        assert f"| {cell.id} | student_500ms | 10 | {0.4 + 0.27 + 0.01:.3f} | +0.060 |" in md
        assert f"| {cell.id} | direct_500ms | 30 | 0.900 | 12 | 0.750 |" in md  # 3 seeds summed
    for name in (ACCURACY_FIGURE, CONTRAST_FIGURE, CURVES_FIGURE, WORD_SHARE_FIGURE):
        png = (tmp / "report" / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_records_of_another_config_or_cell_are_left_out_and_said(study_records):
    study, records, tmp = study_records
    stale = records[0].model_dump()
    cfg = study.resolved(study.cells()[0], 0).model_dump(mode="json")
    cfg["train"]["epochs"] = 9
    from distill.study.records import fingerprint_of

    stale.update(resolved_config=cfg, fingerprint=fingerprint_of(cfg))
    write_record(tmp / "records", CellRecord.model_validate(stale))  # replaces seed 0 of the first cell
    data = write_report(study, tmp / "records", tmp / "report", n_boot=100)
    first = data["cells"][0]
    assert first["seeds"] == [1, 2]
    assert any("made with another config" in line for line in data["left_out"])
    md = (tmp / "report" / "report.md").read_text()
    assert "left out: labels=mixed seed 0: made with another config" in md
    assert "Cells not complete yet: labels=mixed." in md


def test_no_records_is_one_clear_error(tmp_path):
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "study.yaml").write_text(textwrap.dedent(STUDY))
    with pytest.raises(FileNotFoundError, match="no study records yet"):
        write_report(load_study(tmp_path / "study.yaml"), tmp_path / "records", tmp_path / "report")


def test_a_cell_with_no_record_yet_is_named_once_and_left_out_of_the_tables(study_records):
    study, records, tmp = study_records
    first, *others = study.cells()
    for cell in others:  # only the first cell has run
        for path in (tmp / "records" / cell.id).glob("*.json.gz"):
            path.unlink()
    write_report(study, tmp / "records", tmp / "report", n_boot=100)
    md = (tmp / "report" / "report.md").read_text()
    assert f"Cells with no record yet (left out of the tables): {', '.join(c.id for c in others)}." in md
    assert f"| pld@500 - direct@500 | {first.id} | stream | 3 |" in md
    assert not any(f"| {cell.id} |" in md for cell in others)


def test_a_resumed_stages_short_curve_is_its_tail():
    """A seed whose stage was resumed logged only its last epochs: the mean curve keeps the full
    length, and those epochs average every seed (not a curve cut to the shortest)."""
    from distill.study.report import mean_curve, plateau

    full, tail = [0.1, 0.2, 0.3, 0.4], [0.5, 0.6]
    assert mean_curve([full, tail]) == pytest.approx([0.1, 0.2, 0.4, 0.5])
    assert mean_curve([]) == [] and mean_curve([[], full]) == pytest.approx(full)
    assert plateau(mean_curve([full, tail])) == (pytest.approx(0.5), pytest.approx(0.1))


def test_a_cell_is_named_by_what_differs_from_the_first():
    first = {"schedule": "paper", "view": "native", "labels": "mixed"}
    assert cell_label(first, first) == "first cell"
    assert cell_label({**first, "labels": "hard"}, first) == "labels=hard"
    assert cell_label({**first, "view": "pad", "labels": "soft"}, first) == "view=pad, labels=soft"


def test_the_summary_gives_each_cells_contrast_on_test_in_the_headline_protocol(study_records):
    study, records, tmp = study_records
    data = write_report(study, tmp / "records", tmp / "report", n_boot=200)
    md = (tmp / "report" / "report.md").read_text()
    summary = md.split("## Summary", 1)[1].split("\n## ", 1)[0]
    assert "`labels=mixed`" in summary and "| cell | seeds | pld@500 - direct@500 |" in summary
    for cell, label in (("labels=mixed", "first cell"), ("labels=teacher", "labels=teacher")):
        (row,) = [c for c in data["contrasts"] if c["cell"] == cell and c["eval"] == "test" and c["protocol"] == "stream"]
        assert f"| {label} | 3 | {row['mean']:+.3f} ± {row['ci95']:.3f} |" in summary


def test_the_headline_figure_shows_at_most_two_pld_contrasts_in_one_protocol(study_records, monkeypatch, tmp_path):
    from distill.study import figures
    from distill.study.report import compute

    study, records, _ = study_records
    data = compute(study, records, n_boot=50)
    rows = data["contrasts"]
    data["contrasts"] = rows + [dict(c, contrast=name) for name in ("direct@500 - pld@500", "pld@500 - x@500",
                                                                    "pld@500 - y@500") for c in rows]
    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, bottom=0.0: drawn.append(fig) or path)
    assert figures.headline_figure(data, tmp_path / "h.png") == tmp_path / "h.png"
    (fig,) = drawn
    assert [ax.get_title() for ax in fig.axes] == ["pld@500 - direct@500", "pld@500 - x@500"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["stream"]  # each name once
    data["contrasts"] = [dict(c, contrast="direct@500 - one_shot@500") for c in rows]
    assert figures.headline_figure(data, tmp_path / "none.png") is None
