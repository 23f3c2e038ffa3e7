"""The fidelity and sensitivity benchmarks' statistics and tables, on made-up per-seed results:
no Ray, no MLflow, milliseconds. benchmarks/ is not a package, so its modules load by path."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import re
import sys

import pytest

from conftest import REPO

BENCH = REPO / "benchmarks"


def _load(name: str):
    saved = list(sys.path)
    try:  # the scripts put benchmarks/ on sys.path for their siblings; keep that out of other tests
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved


stats = _load("stats")
fidelity = _load("fidelity")
sensitivity = _load("sensitivity")


# --- statistics ----------------------------------------------------------------------------

def test_t_quantiles():
    assert stats.t975(1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t975(2) == pytest.approx(4.303, abs=1e-3)
    assert stats.t975(30) == pytest.approx(2.042, abs=1e-3)
    assert stats.t975(120) == pytest.approx(1.980, abs=1e-3)  # the expansion beyond the table
    values = [stats.t975(df) for df in range(1, 200)]
    assert all(a > b for a, b in zip(values, values[1:])) and values[-1] > 1.96
    with pytest.raises(ValueError):
        stats.t975(0)


def test_mean_ci_n3_by_hand():
    s = stats.mean_ci([0.5, 0.6, 0.7])
    # mean 0.6, sample std 0.1, half-width t(0.975, 2) · s / √3 = 4.303 · 0.1 / 1.732
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    assert s["ci95"] == pytest.approx(4.303 * 0.1 / math.sqrt(3), abs=1e-4)
    assert s["low"] == pytest.approx(0.6 - s["ci95"]) and s["high"] == pytest.approx(0.6 + s["ci95"])


def test_mean_ci_missing_and_single_values():
    assert stats.mean_ci([0.5, None, float("nan"), 0.7])["n"] == 2  # unlogged metrics are left out
    one = stats.mean_ci([0.4])
    assert one["mean"] == 0.4 and one["ci95"] is None and one["std"] is None
    assert stats.mean_ci([])["mean"] is None


def test_paired_differences_and_ahead():
    a = {0: 0.60, 1: 0.50, 2: 0.70, 3: 0.9}
    b = {0: 0.55, 1: 0.52, 2: 0.60, 4: 0.1, 3: None}
    d = stats.paired(a, b)
    assert list(d) == [0, 1, 2]  # seeds in both with numbers, in seed order
    assert [round(v, 6) for v in d.values()] == [0.05, -0.02, 0.1]
    assert stats.ahead(d.values()) == 2
    assert stats.ahead([-1000, 500, -500], lower_is_better=True) == 2
    assert stats.ahead([0.0, 0.0]) == 0  # a tie is nobody's win


def test_formatting():
    assert stats.fmt_ci(stats.mean_ci([0.5, 0.6, 0.7])) == "0.600 ± 0.248"
    assert stats.fmt_ci(stats.mean_ci([0.1, 0.1]), signed=True) == "+0.100 ± 0.000"
    assert stats.fmt_ci(stats.mean_ci([2000.4]), 0) == "2000"
    assert stats.fmt_ci(stats.mean_ci([])) == "-"
    assert stats.fmt(None) == "-"
    assert stats.fmt_per_seed({0: 0.05, 1: -0.02}) == "s0 +0.050, s1 -0.020"
    assert stats.fmt_seed_pairs({0: 0.8, 1: 0.75}, {0: 0.7, 2: 0.6}) == "s0 0.800 → 0.700, s1 0.750 → -, s2 - → 0.600"
    assert stats.fmt_seed_pairs({}, {}) == "-"
    table = stats.markdown_table([{"a": 1, "bb": "xyz"}, {"a": 22}], ["a", "bb"]).splitlines()
    assert table[0] == "| a  | bb  |" and table[1] == "|----|-----|" and table[3] == "| 22 |     |"
    assert len({len(line) for line in table}) == 1


def test_whole_word_share():
    starts, ends, cuts = [300, 200, 400, 260], [700, 600, 760, 740], [0, 0, 0, 10]
    # centred 500 ms of a 1000 ms clip: [250, 750]; only the first word fits uncut
    assert stats.whole_word_share(starts, ends, cuts) == 0.25
    assert stats.whole_word_share(starts, ends) == 0.5
    assert stats.whole_word_share(starts, ends, cuts, window_ms=600) == 0.75
    assert stats.whole_word_share([], []) is None


# --- the fidelity benchmark's aggregation and tables ------------------------------------------

PLD_500 = [0.60, 0.50, 0.70]
DIRECT_500 = [0.55, 0.52, 0.60]
FA_PLD, FA_DIRECT = [2000.0, 1500.0, 3000.0], [3000.0, 1000.0, 3500.0]


def _row(seed, labels, stage, method, ms, acc, fa=None, **extra):
    return {"seed": seed, "labels": labels, "chain": f"c{seed}{labels}", "stage": stage, "method": method,
            "input_ms": ms, "run_id": "r", "test_acc_window": acc + 0.01, "test_acc_stream": acc,
            "test_acc_center": acc - 0.01, "test_fa_per_hour_at_90_recall": fa, "label_agreement": None,
            "relabel_to_silence": None, "train_clip_agreement": None, "best_val_acc": acc, **extra}


TEACHER_UNSEEN = [0.70, 0.60, 0.65]  # the teacher's stream accuracy on the unseen-voice split (0.8 on the full)


def _unseen(acc):
    return {"unseen_voices_acc_window": acc + 0.01, "unseen_voices_acc_stream": acc,
            "unseen_voices_acc_center": acc - 0.01}


def _fake_rows(unseen: bool = False):
    """Three seeds of hard and soft chains; ``unseen``: with unseen-voice numbers, 0.1 below the
    test split's (the teacher: TEACHER_UNSEEN)."""
    rows = []
    for seed in range(3):
        for mode in ("hard", "soft"):
            bonus = 0.02 if mode == "soft" else 0.0
            rows += [_row(seed, mode, "teacher", "teacher", 1000, 0.8, 4000.0, train_clip_agreement=0.9),
                     _row(seed, mode, "student_500ms", "pld", 500, PLD_500[seed] + bonus, FA_PLD[seed],
                          label_agreement=0.7, relabel_to_silence=0.2),
                     _row(seed, mode, "one_shot_500ms", "one_shot", 500, 0.5, 2500.0, label_agreement=0.6)]
        rows.append(_row(seed, "hard", "direct_500ms", "direct", 500, DIRECT_500[seed], FA_DIRECT[seed]))
        rows.append({**rows[-1], "labels": "soft", "shared_from": "hard"})  # what run_chains does
    if unseen:
        rows = [{**r, **_unseen(TEACHER_UNSEEN[r["seed"]] if r["method"] == "teacher"
                                else r["test_acc_stream"] - 0.1)} for r in rows]
    return rows


def test_fidelity_aggregate():
    agg = fidelity.aggregate(_fake_rows(), ["hard", "soft"])
    assert agg["final_ms"] == 500
    hard = [m for m in agg["methods"] if m["labels"] == "hard"]
    assert [m["stage"] for m in hard] == ["teacher", "student_500ms", "direct_500ms", "one_shot_500ms"]
    pld = hard[1]
    assert pld["stream"]["mean"] == pytest.approx(0.6) and pld["stream"]["n"] == 3
    assert pld["stream"]["per_seed"] == {0: 0.6, 1: 0.5, 2: 0.7}
    assert pld["window"]["mean"] == pytest.approx(0.61)

    d = {(x["labels"], x["vs"], x["metric"]): x for x in agg["diffs"]}
    assert set(d) == {(m, v, c) for m in ("hard", "soft") for v in ("direct", "one_shot") for c in fidelity.METRICS}
    stream = d["hard", "direct", "stream"]
    diffs = [p - q for p, q in zip(PLD_500, DIRECT_500)]
    sd = math.sqrt(sum((x - sum(diffs) / 3) ** 2 for x in diffs) / 2)
    assert stream["mean"] == pytest.approx(sum(diffs) / 3) and stream["ci95"] == pytest.approx(4.303 * sd / math.sqrt(3), abs=1e-3)
    assert stream["ahead"] == 2 and stream["n"] == 3
    assert d["hard", "direct", "fa/h@90%"]["ahead"] == 2  # fewer false accepts is better
    assert d["soft", "direct", "stream"]["mean"] == pytest.approx(sum(diffs) / 3 + 0.02)  # the shared direct
    assert d["hard", "one_shot", "stream"]["ahead"] == 2

    teacher = next(a for a in agg["agreement"] if a["labels"] == "hard" and a["stage"] == "teacher")
    assert teacher["train_clip_agreement"]["mean"] == pytest.approx(0.9)
    assert teacher["label_agreement"]["mean"] is None


def test_fidelity_render():
    agg = fidelity.aggregate(_fake_rows(), ["hard", "soft"])
    text = fidelity.render(agg, ["hard", "soft"], ["commit abc"])
    assert "## Test split, hard labels" in text and "## Test split, soft labels" in text
    assert "| student_500ms " in text and "0.600 ± 0.248" in text
    assert "direct_500ms (hard's)" in text  # the soft table says whose direct it shows
    assert "s0 +0.050, s1 -0.020, s2 +0.100" in text and "2/3" in text
    assert "| hard   | teacher " in text and "0.900" in text  # train_clip_agreement
    assert text.count("|---") >= 4


def test_fidelity_render_without_unseen_voices():
    agg = fidelity.aggregate(_fake_rows(), ["hard", "soft"])
    assert agg["teacher_unseen"] == []
    hard_pld = next(m for m in agg["methods"] if m["labels"] == "hard" and m["method"] == "pld")
    assert hard_pld["unseen_voices"]["stream"]["n"] == 0
    text = fidelity.render(agg, ["hard", "soft"], ["commit abc"])
    assert "Unseen-voice" not in text and "unseen-voice" not in text


def test_fidelity_aggregate_unseen_voices():
    agg = fidelity.aggregate(_fake_rows(unseen=True), ["hard", "soft"])
    by = {(m["labels"], m["stage"]): m for m in agg["methods"]}
    pld = by["hard", "student_500ms"]["unseen_voices"]
    assert set(pld) == {"window", "stream", "center"}
    assert pld["stream"]["per_seed"] == pytest.approx({0: 0.5, 1: 0.4, 2: 0.6})
    assert pld["stream"]["mean"] == pytest.approx(0.5) and pld["stream"]["ci95"] == pytest.approx(0.248, abs=1e-3)
    assert pld["window"]["mean"] == pytest.approx(0.51) and pld["center"]["mean"] == pytest.approx(0.49)
    assert by["hard", "student_500ms"]["stream"]["mean"] == pytest.approx(0.6)  # the test split's stays
    # the soft chains' direct is the hard chain's, on the unseen-voice split as well
    assert by["soft", "direct_500ms"]["unseen_voices"]["stream"]["per_seed"] == \
        by["hard", "direct_500ms"]["unseen_voices"]["stream"]["per_seed"]
    assert by["soft", "direct_500ms"]["shared_from"] == "hard"

    gaps = {g["labels"]: g for g in agg["teacher_unseen"]}
    assert set(gaps) == {"hard", "soft"}
    g = gaps["hard"]
    assert g["protocol"] == "stream" and g["full"]["mean"] == pytest.approx(0.8) and g["full"]["n"] == 3
    assert g["unseen"]["per_seed"] == {0: 0.70, 1: 0.60, 2: 0.65} and g["unseen"]["mean"] == pytest.approx(0.65)
    gap = [u - 0.8 for u in TEACHER_UNSEEN]
    sd = math.sqrt(sum((x - sum(gap) / 3) ** 2 for x in gap) / 2)
    assert g["unseen_minus_full"]["mean"] == pytest.approx(-0.15)
    assert g["unseen_minus_full"]["ci95"] == pytest.approx(4.303 * sd / math.sqrt(3), abs=1e-3)
    assert g["unseen_minus_full"]["per_seed"] == pytest.approx({0: -0.1, 1: -0.2, 2: -0.15})


def test_teacher_unseen_gap_with_a_seed_missing_its_unseen_number():
    rows = [r for r in _fake_rows(unseen=True) if r["labels"] == "hard"]
    for r in rows:
        if r["seed"] == 1 and r["method"] == "teacher":
            r["unseen_voices_acc_stream"] = None  # its evaluation failed
    (g,) = fidelity.teacher_unseen_gap(rows, ["hard", "soft"])  # no soft rows: no soft line
    assert g["labels"] == "hard" and g["full"]["n"] == 3 and g["unseen"]["n"] == 2
    assert list(g["unseen_minus_full"]["per_seed"]) == [0, 2]  # paired: only seeds with both


def test_fidelity_render_unseen_voices():
    agg = fidelity.aggregate(_fake_rows(unseen=True), ["hard", "soft"])
    text = fidelity.render(agg, ["hard", "soft"], ["commit abc"])
    assert "## Unseen-voice test split, hard labels" in text and "## Unseen-voice test split, soft labels" in text
    # each mode's unseen-voice table right after its test table
    assert (text.index("## Test split, hard") < text.index("## Unseen-voice test split, hard")
            < text.index("## Test split, soft") < text.index("## Unseen-voice test split, soft"))
    unseen_hard = text.split("## Unseen-voice test split, hard labels")[1].split("##")[0]
    assert "| student_500ms " in unseen_hard and "0.500 ± 0.248" in unseen_hard and "fa/h" not in unseen_hard
    unseen_soft = text.split("## Unseen-voice test split, soft labels")[1].split("##")[0]
    assert "direct_500ms (hard's)" in unseen_soft

    teacher = text.split("## Teacher: full test split vs unseen-voice test split (stream)")[1].split("##")[0]
    assert "| hard   | 3 | 0.800 ± 0.000" in teacher and "0.650 ± 0.124" in teacher and "-0.150 ± 0.124" in teacher
    assert "s0 0.800 → 0.700, s1 0.800 → 0.600, s2 0.800 → 0.650" in teacher


def test_unseen_voice_split_and_note(tmp_path):
    meta = {"heldout_voices": {"testing": ["en-029", "en-gb-x-gbcwmd"]},
            "splits": {"testing": {"speakers": 2, "unseen_voice_speakers": 1}}}
    missing = fidelity.unseen_voice_split(tmp_path, meta)
    assert missing["clips"] is None and "no testing_unseen_voice_list.txt" in missing["skipped"]
    assert fidelity.unseen_voice_note(missing).startswith("unseen-voice test split: not evaluated: the corpus has no")

    (tmp_path / "testing_list.txt").write_text("yes/a_nohash_0.wav\nyes/b_nohash_0.wav\nno/b_nohash_0.wav\n")
    (tmp_path / fidelity.UNSEEN_LIST).write_text("")
    assert "is empty" in fidelity.unseen_voice_split(tmp_path, meta)["skipped"]

    (tmp_path / fidelity.UNSEEN_LIST).write_text("yes/b_nohash_0.wav\nno/b_nohash_0.wav\n")
    info = fidelity.unseen_voice_split(tmp_path, meta)
    assert "skipped" not in info and info["clips"] == 2 and info["test_clips"] == 3
    note = fidelity.unseen_voice_note(info)
    assert "2 of the 3 test clips of 1 of 2 test speakers, voices en-029, en-gb-x-gbcwmd" in note
    assert "all of the test split" not in note
    (tmp_path / "testing_list.txt").write_text("yes/b_nohash_0.wav\nno/b_nohash_0.wav\n")
    assert "all of the test split" in fidelity.unseen_voice_note(fidelity.unseen_voice_split(tmp_path, None))


def test_fidelity_aggregate_tolerates_a_missing_seed():
    rows = [r for r in _fake_rows() if not (r["seed"] == 2 and r["method"] == "direct")]
    d = {(x["labels"], x["vs"], x["metric"]): x for x in fidelity.aggregate(rows, ["hard"])["diffs"]}
    assert d["hard", "direct", "stream"]["n"] == 2 and list(d["hard", "direct", "stream"]["per_seed"]) == [0, 1]


# --- the sensitivity benchmark's aggregation and tables ---------------------------------------

def _point(pld, direct, one_shot):
    return {"status": "ok", "chain_run_id": "x", "final_ms": 500,
            **{p: {"pld": pld, "direct": direct, "one_shot": one_shot} for p in sensitivity.PROTOCOLS}}


def _fake_settings():
    return [{"setting": "a", "description": "short words", "corpus": "/c/a", "synth": {"placement": "uniform"},
             "window_ms": 500, "median_word_ms": 360.0, "share_whole_word_in_center": 0.8, "stats_source": "synth.json",
             "seeds": {0: _point(0.5, 0.6, 0.55), 1: _point(0.4, 0.45, 0.5)}},
            {"setting": "c", "description": "loudest", "corpus": "/c/c", "synth": {"placement": "loudest"},
             "window_ms": 500, "median_word_ms": 610.0, "share_whole_word_in_center": 0.1,
             "stats_source": "synth_manifest.csv",
             "seeds": {0: _point(0.6, 0.5, 0.55), 1: {"status": "failed", "error": "boom"}}}]


def test_sensitivity_aggregate_and_render():
    settings = sensitivity.aggregate(_fake_settings())
    a = settings[0]["mean"]["stream"]
    assert a["pld_minus_direct"]["per_seed"] == pytest.approx({0: -0.1, 1: -0.05})
    assert a["pld_minus_direct"]["mean"] == pytest.approx(-0.075) and a["pld_minus_direct"]["ahead"] == 0
    assert a["pld_minus_direct"]["ci95"] == pytest.approx(12.706 * math.sqrt(0.00125) / math.sqrt(2), abs=1e-3)
    c = settings[1]["mean"]["center"]
    assert c["pld_minus_one_shot"]["n"] == 1 and c["pld_minus_one_shot"]["ahead"] == 1  # the failed seed left out

    text = sensitivity.render(settings, ["commit abc"])
    for p in sensitivity.PROTOCOLS:
        assert f"{p} protocol" in text
    assert "| a       | 360" in text and "-0.075 ± " in text and "(0/2 ahead)" in text
    assert "failed: boom" in text and "(1/1 ahead)" in text
    assert "whole word in the centred 500 ms 10 %" in text


def test_figures_are_written(tmp_path):
    plots = _load("plots")
    agg = fidelity.aggregate(_fake_rows(), ["hard", "soft"])
    png = plots.fidelity_figure(agg["methods"], agg["final_ms"], ["hard", "soft"], tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    agg = fidelity.aggregate(_fake_rows(unseen=True), ["hard", "soft"])  # with the unseen-voice panel
    png = plots.fidelity_figure(agg["methods"], agg["final_ms"], ["hard", "soft"], tmp_path / "u.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    png = plots.sensitivity_figure(sensitivity.aggregate(_fake_settings()), tmp_path / "s.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


# --- the sensitivity benchmark's setting from a fidelity JSON (--from-fidelity, --merge) ---------

CONFIG = {"name": "fidelity", "seed": 0, "data": {"name": "speech_commands", "path": "data/synth-sc"},
          "chain": {"lengths_ms": [1000, 500], "baselines": ["direct", "one_shot"]},
          "labels": {"mode": "soft", "temperature": 2.0}, "train": {"epochs": 8}}


def _resolve(config, overrides):
    """load_config's override semantics on plain dicts (no defaults, no validation, no torch)."""
    out = copy.deepcopy(config)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


@pytest.fixture
def pure_resolve(monkeypatch):
    monkeypatch.setattr(sensitivity, "resolve_config", _resolve)


def _synth_meta(**params):
    """A synth.json of setting c's parameters (``params`` changes some)."""
    want = sensitivity.corpus_want("c", False)
    return {"seed": want["seed"], "unknown_words": want["unknown_words"], "clips": 3000, "sample_rate": 16000,
            "clip_samples": 16000, "params": {k: v for k, v in want.items() if k not in ("seed", "unknown_words")}
            | {"repeats": 1, **params}, "stats": {"word_ms": {"median": 595.0}, "share_whole_word_in_center_500ms": 0.12}}


def _fake_fidelity(corpus: str) -> dict:
    """A fidelity.py JSON of seeds 0-2, hard and soft chains on ``corpus``, as its main writes it
    (the chains' overrides as run_chains makes them: the soft ones leave direct to the hard one)."""
    chains = []
    for seed in range(3):
        for mode in ("hard", "soft"):
            overrides = {"seed": seed, "name": f"fidelity-{mode}-s{seed}", "data.path": corpus,
                         "storage.root": "/f/runs", "tracking.experiment": "fidelity", "labels.mode": mode,
                         **({"labels.temperature": 2.0, "chain.baselines": ["one_shot"]} if mode == "soft" else {})}
            chains.append({"seed": seed, "labels": mode, "overrides": overrides, "status": "ok",
                           "chain_run_id": f"c{seed}{mode}", "seconds": 1.0})
    return {"commit": "abc", "dirty": False, "config_file": "configs/fidelity.yaml", "config": copy.deepcopy(CONFIG),
            "seeds": [0, 1, 2], "labels": ["hard", "soft"], "temperature": 2.0, "quick": False,
            "corpus": {"path": corpus, "clips": 3000, "speakers": 150, "placement": "loudest", "rate_range": [80, 120],
                       "median_word_ms": 595.0, "share_whole_word_in_center_500ms": 0.12},
            "chains": chains, "rows": _fake_rows(), "final_ms": 500}


def _check(fid, meta=None, **kw):
    args = dict(key="c", config=CONFIG, mode="soft", seeds=[0, 1], final_ms=500, quick=False,
                overrides={"name": "sensitivity", "storage.root": "/s/runs", "tracking.experiment": "sensitivity"},
                commit={"commit": "abc", "dirty": False}, meta=meta, meta_dir="/corpus" if meta else None)
    return sensitivity.check_fidelity(fid, **{**args, **kw})


def test_points_from_fidelity_convert_the_row_format():
    fid = _fake_fidelity("/corpus")
    points = sensitivity.points_from_fidelity(fid, "soft", [0, 1])
    assert list(points) == [0, 1]
    p = points[0]
    assert p["status"] == "ok" and p["final_ms"] == 500 and p["chain_run_id"] == "c0soft"
    assert p["direct_chain_run_id"] == "c0hard"  # the soft rows' direct is the hard chain's
    assert p["stream"] == pytest.approx({"pld": 0.62, "direct": 0.55, "one_shot": 0.5})
    assert p["window"] == pytest.approx({"pld": 0.63, "direct": 0.56, "one_shot": 0.51})
    assert p["center"] == pytest.approx({"pld": 0.61, "direct": 0.54, "one_shot": 0.49})
    assert set(points[1]) == set(p) and points[1]["stream"]["pld"] == pytest.approx(0.52)
    hard = sensitivity.points_from_fidelity(fid, "hard", [2])[2]
    assert hard["stream"] == pytest.approx({"pld": 0.7, "direct": 0.6, "one_shot": 0.5})
    assert "direct_chain_run_id" not in hard  # its own direct

    fid["chains"][3] = {**fid["chains"][3], "status": "failed", "error": "boom"}  # seed 1, soft
    assert sensitivity.points_from_fidelity(fid, "soft", [1])[1] == {"status": "failed", "error": "fidelity chain: boom"}
    with pytest.raises(sensitivity.MergeError, match=r"no soft-label chain for seed\(s\) \[5\]"):
        sensitivity.points_from_fidelity(fid, "soft", [0, 5])
    # what the converted points aggregate to: PLD − direct paired by seed, as for a swept setting
    (s,) = sensitivity.aggregate([{"seeds": sensitivity.points_from_fidelity(_fake_fidelity("/c"), "soft", [0, 1])}])
    assert s["mean"]["stream"]["pld_minus_direct"]["per_seed"] == pytest.approx({0: 0.07, 1: 0.0})


def test_settings_from_json_undo_the_json_round_trip():
    settings = sensitivity.aggregate(_fake_settings())
    back = sensitivity.settings_from_json(json.loads(json.dumps({"settings": settings}, default=str)))
    assert [list(s["seeds"]) for s in back] == [[0, 1], [0, 1]] and all("mean" not in s for s in back)
    assert json.dumps(sensitivity.aggregate(back)) == json.dumps(settings)


def test_check_fidelity_accepts_the_same_chains_and_says_what_it_checked(pure_resolve):
    checks = _check(_fake_fidelity("/corpus"), _synth_meta())
    text = "; ".join(checks)
    assert f"config contents identical (fingerprint {sensitivity.fingerprint(CONFIG)})" in text
    assert "identical for seeds [0, 1] (direct: the hard chain's of the same seed" in text
    assert "corpus seed, speakers, unknown_words, rate_range, placement as setting c (/corpus/synth.json)" in text
    assert "clips, median_word_ms, share_whole_word_in_center_500ms as the fidelity JSON records" in text
    assert "commit abc in both" in text
    assert "commits NOT" in "; ".join(_check(_fake_fidelity("/corpus"), commit={"commit": "def", "dirty": False}))


def _soft(fid, seed):
    return next(c for c in fid["chains"] if c["seed"] == seed and c["labels"] == "soft")


def _hard(fid, seed):
    return next(c for c in fid["chains"] if c["seed"] == seed and c["labels"] == "hard")


@pytest.mark.parametrize("spoil, meta, message", [
    (lambda f: f["config"]["labels"].update(temperature=1.0), {}, "config contents differ in labels.temperature"),
    (lambda f: _soft(f, 1)["overrides"].update({"labels.temperature": 4.0}), {}, "seed 1's soft chain differs in "
                                                                                 "labels.temperature"),
    (lambda f: _soft(f, 0)["overrides"].update({"train.epochs": 1}), {}, "seed 0's soft chain differs in train.epochs"),
    (lambda f: _hard(f, 0)["overrides"].update({"train.epochs": 1}), {}, "direct comes from its hard chain, which "
                                                                         "differs in train.epochs"),
    (lambda f: _soft(f, 0)["overrides"].update({"data.path": "/other"}), {}, "ran on /other, not on its corpus"),
    (lambda f: f.update(quick=True), {}, "quick=True"),
    (lambda f: f.update(final_ms=750), {}, "final length is 750 ms"),
    (lambda f: f["corpus"].update(placement="uniform"), {}, "another placement (uniform; setting c: loudest)"),
    (lambda f: None, {"speakers": 12}, "/corpus/synth.json has another speakers than setting c"),
    (lambda f: f["corpus"].update(median_word_ms=360.0), {}, "is not the fidelity run's corpus: its median_word_ms"),
])
def test_check_fidelity_refuses_another_chain_or_corpus(pure_resolve, spoil, meta, message):
    fid = _fake_fidelity("/corpus")
    spoil(fid)
    with pytest.raises(sensitivity.MergeError, match=re.escape(message)):
        _check(fid, _synth_meta(**meta))


def test_check_fidelity_with_little_recorded_says_what_it_did_not_check(pure_resolve):
    fid = _fake_fidelity("/corpus")
    del fid["config"]
    for c in fid["chains"]:
        del c["overrides"]
    fid["corpus"] = {"path": "/corpus", "speakers": 150}
    text = "; ".join(_check(fid))
    assert "config contents: not in the fidelity JSON, not checked" in text
    assert "chain config (or its direct's) of seeds [0, 1]: not in the fidelity JSON, not checked" in text
    assert "corpus: only speakers checked (the fidelity JSON's record; no synth.json found)" in text
    fid["corpus"]["speakers"] = 16
    with pytest.raises(sensitivity.MergeError, match="another speakers"):
        _check(fid)


def _write_run(tmp_path):
    """A sensitivity JSON of settings a and b (as main writes it), a fidelity JSON and its corpus's synth.json."""
    corpus = tmp_path / "sc"
    corpus.mkdir()
    (corpus / "synth.json").write_text(json.dumps(_synth_meta()))
    fid = tmp_path / "fidelity.json"
    fid.write_text(json.dumps(_fake_fidelity(str(corpus))))
    settings = _fake_settings()
    settings[1] = {**settings[0], "setting": "b", "description": "long words", "corpus": str(tmp_path / "corpus-b")}
    settings[0]["corpus"] = str(tmp_path / "corpus-a")
    sens = tmp_path / "sensitivity-ab.json"
    sens.write_text(json.dumps({"commit": "abc", "dirty": False, "config_file": "configs/fidelity.yaml",
                                "config": CONFIG, "quick": False, "seeds": [0, 1], "final_ms": 500,
                                "settings": sensitivity.aggregate(settings), "seconds": 3600.0}, default=str))
    return sens, fid, corpus


def test_merge_writes_what_a_run_would(tmp_path, pure_resolve, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # main imports plots.py as the script would
    sens, fid, corpus = _write_run(tmp_path)
    out = tmp_path / "out" / "merged.json"
    assert sensitivity.main(["--merge", str(sens), "--from-fidelity", str(fid), "--json", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert [s["setting"] for s in merged["settings"]] == ["a", "b", "c"]
    assert {k: merged[k] for k in ("commit", "seeds", "final_ms", "config")} == \
        {"commit": "abc", "seeds": [0, 1], "final_ms": 500, "config": CONFIG}
    assert merged["from_fidelity"] == {"c": str(fid)} and merged["merged_from"] == str(sens)
    a, c = merged["settings"][0], merged["settings"][2]
    assert a["mean"]["stream"]["pld_minus_direct"]["mean"] == pytest.approx(-0.075)  # recomputed, the same
    assert c["corpus"] == str(corpus) and c["median_word_ms"] == 595.0 and c["stats_source"] == "synth.json"
    assert c["share_whole_word_in_center"] == 0.12 and c["synth"] == {"rate_range": [80, 120], "placement": "loudest"}
    assert c["seeds"]["0"]["stream"]["pld"] == pytest.approx(0.62)
    assert c["mean"]["stream"]["pld_minus_direct"]["per_seed"] == pytest.approx({"0": 0.07, "1": 0.0})
    assert c["from_fidelity"]["labels"] == "soft" and c["from_fidelity"]["json"] == str(fid)

    text = out.with_suffix(".txt").read_text()
    assert f"setting c: per-seed rows from the fidelity JSON {fid} (commit abc; its soft-label chains " \
           "s0 c0soft, s1 c1soft), not run here" in text
    assert "setting c, checks against the fidelity run: config contents identical" in text
    assert f"merged from {sens}" in text and f"rows from the fidelity JSON {fid}" in text
    assert "chains 4 ok, 0 failed" in text  # settings a and b's own
    assert "| c       | 595" in text and "+0.070" in text
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_merge_refuses_another_config_and_writes_nothing(tmp_path, pure_resolve, capsys):
    sens, fid, _ = _write_run(tmp_path)
    bad = json.loads(fid.read_text())
    bad["config"]["train"]["epochs"] = 20
    fid.write_text(json.dumps(bad))
    out = tmp_path / "merged.json"
    assert sensitivity.main(["--merge", str(sens), "--from-fidelity", str(fid), "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "refusing to merge" in err and "config contents differ in train.epochs" in err
    assert not out.exists()
    with pytest.raises(SystemExit):  # the seeds come from the sensitivity JSON
        sensitivity.main(["--merge", str(sens), "--from-fidelity", str(fid), "--json", str(out), "--seeds", "0"])


# --- fidelity --report-only: the soft rows' shared direct, which stored chain run is reported ---

def test_share_direct_matches_what_the_aggregation_expects():
    raw = [r for r in _fake_rows() if not r.get("shared_from")]  # the chains' own rows
    shared = fidelity.share_direct(raw)  # the rows run_chains and --report-only both return
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert sorted(map(key, shared)) == sorted(map(key, _fake_rows()))
    assert fidelity.aggregate(shared, ["hard", "soft"]) == fidelity.aggregate(_fake_rows(), ["hard", "soft"])
    # a soft chain left out (unfinished): no direct borrowed for its seed; one with its own direct keeps it
    no_s2 = [r for r in raw if not (r["labels"] == "soft" and r["seed"] == 2)]
    borrowed = [r for r in fidelity.share_direct(no_s2) if r.get("shared_from")]
    assert sorted(r["seed"] for r in borrowed) == [0, 1]
    own = raw + [{**r, "labels": "soft"} for r in raw if r["labels"] == "hard" and r["method"] == "direct"]
    assert fidelity.share_direct(own) == own


def _run(run_id, status, start, fingerprint="f1"):
    from types import SimpleNamespace as NS
    return NS(info=NS(run_id=run_id, status=status, start_time=start),
              data=NS(tags={"pld.config_fingerprint": fingerprint}))


def test_pick_chain_run():
    assert fidelity.pick_chain_run([], "f1") == (None, "not in the store")
    run, why = fidelity.pick_chain_run([_run("a", "RUNNING", 2)], "f1")
    assert run is None and why == "running (run a)"
    # newest first: the newest finished one of the planned fingerprint; a newer unfinished one is noted
    runs = [_run("c", "RUNNING", 3), _run("b", "FINISHED", 2, "f2"), _run("a", "FINISHED", 1)]
    run, why = fidelity.pick_chain_run(runs, "f1")
    assert run.info.run_id == "a" and "newer run of that name is running (c)" in why
    run, why = fidelity.pick_chain_run(runs[1:], "f9")  # none of the planned config: the newest, said so
    assert run.info.run_id == "b" and "another config" in why
    assert fidelity.pick_chain_run(runs[2:], "f1")[1] == ""


def test_merge_takes_several_runs_of_different_settings_and_refuses_a_repeated_one(tmp_path, pure_resolve,
                                                                                  monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    sens, fid, _ = _write_run(tmp_path)
    run = json.loads(sens.read_text())
    part_a, part_b = tmp_path / "a.json", tmp_path / "b.json"
    part_a.write_text(json.dumps({**run, "settings": run["settings"][:1]}))
    part_b.write_text(json.dumps({**run, "commit": "def", "settings": run["settings"][1:]}))
    out = tmp_path / "out" / "merged.json"
    assert sensitivity.main(["--merge", str(part_a), str(part_b), "--from-fidelity", str(fid), "--json", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert [s["setting"] for s in merged["settings"]] == ["a", "b", "c"]
    assert merged["merged_from"] == [str(part_a), str(part_b)]
    assert merged["settings"][1]["merged_from"]["commit"] == "def"  # each setting keeps the commit it ran at
    assert merged["settings"][0]["mean"]["stream"]["pld_minus_direct"]["mean"] == pytest.approx(-0.075)
    assert f"{part_b} (commit def)" in out.with_suffix(".txt").read_text()

    again = tmp_path / "again.json"
    assert sensitivity.main(["--merge", str(part_a), str(sens), "--from-fidelity", str(fid), "--json", str(again)]) == 2
    assert "setting a is in more than one of" in capsys.readouterr().err and not again.exists()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**run, "seeds": [0], "settings": run["settings"][1:]}))
    assert sensitivity.main(["--merge", str(part_a), str(other), "--from-fidelity", str(fid), "--json", str(again)]) == 2
    assert "ran with another seeds" in capsys.readouterr().err
