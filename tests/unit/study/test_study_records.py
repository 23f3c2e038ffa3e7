"""Study records: the fingerprint that decides reuse, and files that round-trip byte for byte
and refuse to be half-read. No Ray, milliseconds."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from distill.config import load_config
from distill.study.records import (CellRecord, RecordError, cell_fingerprint, correct_by_seed, fingerprint_of,
                                   read_record, read_records, record_bytes, record_path, same_config, write_record)

QUICKSTART = {"chain.lengths_ms": [1000, 750, 500], "labels.mode": "soft", "labels.temperature": 2.0}


def config(**overrides):
    return load_config(None, {**QUICKSTART, **overrides})


def test_the_same_resolved_config_has_the_same_fingerprint():
    a, b = config(), config()
    assert cell_fingerprint(a) == cell_fingerprint(b) and len(cell_fingerprint(a)) == 16
    as_schedule = load_config(None, {**QUICKSTART, "chain.lengths_ms": None,
                                     "chain.schedule": {"start_ms": 1000, "stop_ms": 500, "step_ms": 250}})
    assert cell_fingerprint(as_schedule) == cell_fingerprint(a)  # the same chain, written as a schedule


@pytest.mark.parametrize("key, value", [("seed", 1), ("train.epochs", 9), ("data.path", "data/other"),
                                        ("labels.temperature", 4.0), ("train.num_workers", 2),
                                        ("relabel.batch_size", 128), ("chain.teacher_view", "pad")])
def test_a_result_relevant_change_makes_a_new_cell(key, value):
    assert cell_fingerprint(config(**{key: value})) != cell_fingerprint(config())


@pytest.mark.parametrize("key, value", [("name", "other"), ("storage.root", "/elsewhere"),
                                        ("tracking.uri", "http://127.0.0.1:5000"), ("tracking.experiment", "x"),
                                        ("ray.num_cpus", 16), ("train.resource_wait_s", 5.0),
                                        ("train.max_failures", 3)])
def test_where_and_how_a_run_is_hosted_is_not_part_of_the_cell(key, value):
    assert cell_fingerprint(config(**{key: value})) == cell_fingerprint(config())


def test_how_often_a_stage_scores_its_validation_split_is_not_part_of_the_cell():
    """Nothing trains on the validation split, so scoring it less often changes no number; and
    the option's arrival changes no earlier cell's fingerprint (its keys are left out)."""
    base = config(**{"train.keep": "average"})
    fewer = config(**{"train.keep": "average", "train.validate_every": 5,
                      "stages": {"teacher": {"train": {"validate_every": 10}}}})
    assert cell_fingerprint(fewer) == cell_fingerprint(base)
    recorded = base.model_dump(mode="json")
    del recorded["train"]["validate_every"]  # as written before the option existed
    for recipe in recorded["stages"].values():
        del recipe["train"]["validate_every"]
    assert fingerprint_of(recorded) == cell_fingerprint(base)
    assert cell_fingerprint(config(**{"train.keep": "average", "stages": {"teacher": {"train": {"lr": 0.1}}}})) \
        != cell_fingerprint(base)  # a stage's own setting that does change the numbers still counts


def test_a_record_made_before_an_option_existed_still_holds_its_default():
    cfg = config()
    recorded = cfg.model_dump(mode="json")
    del recorded["train"]["keep"], recorded["train"]["average_epochs"]  # as written before those options existed
    assert fingerprint_of(recorded) != cell_fingerprint(cfg)
    assert same_config(recorded, cfg)  # the new options are at their defaults: the same computation
    assert not same_config(recorded, config(**{"train.keep": "average"}))  # not at the default: another cell
    changed = cfg.model_dump(mode="json")
    changed["train"]["epochs"] = 9
    assert not same_config(changed, cfg)
    removed = {**cfg.model_dump(mode="json"), "retired_option": 1}  # an option the platform no longer has
    assert not same_config(removed, cfg)


def make_record(seed: int = 0, cell_id: str = "schedule=paper,labels=mixed", shift: int = 0, **fields) -> CellRecord:
    resolved = config(seed=seed).model_dump(mode="json")
    labels = ["_silence_", "_unknown_", "yes", "no"]
    clip_ids = [f"yes/clip{i:03d}.wav" for i in range(20)]
    targets = [i % 4 for i in range(20)]
    pred = {"teacher": {p: targets for p in ("window", "stream", "center")},
            "student_500ms": {"stream": [(t + (i < shift)) % 4 for i, t in enumerate(targets)]}}
    return CellRecord(**{
        "study": "decisive", "cell_id": cell_id, "levels": {"schedule": "paper", "labels": "mixed"}, "seed": seed,
        "fingerprint": fingerprint_of(resolved), "commit": "6d4a9a5", "dirty": False, "resolved_config": resolved,
        "labels": labels,
        "stages": [{"name": "teacher", "method": "teacher", "kind": "teacher", "input_ms": 1000,
                    "metrics": {"test_acc_stream": 0.944, "fa_per_hour": float("nan")}},
                   {"name": "student_500ms", "method": "pld", "kind": "student", "input_ms": 500,
                    "metrics": {"test_acc_stream": 0.8}, "label_stats": {"agreement": 0.703}}],
        "evals": {"test": {"clip_ids": clip_ids, "targets": targets, "predictions": pred},
                  "unseen_engine_test": {"clip_ids": clip_ids[:5], "targets": targets[:5],
                                         "predictions": {"teacher": {"stream": targets[:5]}}}},
        "created": "2025-01-02T03:04:05+00:00", **fields})


def test_records_round_trip_byte_for_byte(tmp_path):
    record = make_record()
    path = write_record(tmp_path, record)
    assert path == tmp_path / "schedule=paper,labels=mixed" / "seed-0.json.gz"
    first = path.read_bytes()
    (back,) = read_records(tmp_path)
    assert back == record and back.stages[0].metrics["fa_per_hour"] is None  # NaN is stored as not measured
    write_record(tmp_path, back)
    assert path.read_bytes() == first == record_bytes(back)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert gzip.decompress(first).startswith(b'{"cell_id":')  # sorted keys, compact


def test_read_records_orders_by_cell_and_seed_and_an_empty_study_has_none(tmp_path):
    assert read_records(tmp_path / "not-yet") == []
    for cell, seed in [("b=x", 1), ("a=y", 2), ("b=x", 0)]:
        write_record(tmp_path, make_record(seed, cell))
    assert [(r.cell_id, r.seed) for r in read_records(tmp_path)] == [("a=y", 2), ("b=x", 0), ("b=x", 1)]


def test_a_truncated_or_foreign_file_is_refused_naming_it(tmp_path):
    path = write_record(tmp_path, make_record())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError, match=f"{path}: not a complete gzip file"):
        read_records(tmp_path)
    path.write_bytes(gzip.compress(b'{"study": "x"}'))
    with pytest.raises(RecordError, match=f"{path}: not a study record: "):
        read_records(tmp_path)
    path.write_bytes(b"not gzip")
    with pytest.raises(RecordError, match=str(path)):
        read_record(path)
    moved = tmp_path / "a=b" / "seed-0.json.gz"
    moved.parent.mkdir()
    moved.write_bytes(data)
    path.unlink()
    with pytest.raises(RecordError, match="belongs at"):
        read_records(tmp_path)


def test_a_record_is_internally_consistent():
    with pytest.raises(ValueError, match="the record was edited"):
        make_record(fingerprint="0" * 16)
    with pytest.raises(ValueError, match="20 clips"):
        bad = make_record().model_dump()
        bad["evals"]["test"]["predictions"]["teacher"]["stream"] = [0]
        CellRecord.model_validate(bad)
    with pytest.raises(ValueError, match="outside 0..3"):
        bad = make_record().model_dump()
        bad["evals"]["test"]["targets"][0] = 7
        CellRecord.model_validate(bad)
    with pytest.raises(ValueError, match="no 'test' evaluation"):
        bad = make_record().model_dump()
        del bad["evals"]["test"]
        CellRecord.model_validate(bad)
    with pytest.raises(ValueError, match="not a study cell"):
        record_path("x", "../escape", 0)


def test_correct_by_seed_aligns_clips_across_seeds():
    a, b = make_record(0, shift=4), make_record(1, shift=2)
    shuffled = b.model_dump()
    test = shuffled["evals"]["test"]
    order = list(reversed(range(20)))
    test["clip_ids"] = [test["clip_ids"][i] for i in order]
    test["targets"] = [test["targets"][i] for i in order]
    for by_protocol in test["predictions"].values():
        for protocol, pred in by_protocol.items():
            by_protocol[protocol] = [pred[i] for i in order]
    seeds, correct = correct_by_seed([a, CellRecord.model_validate(shuffled)], "student_500ms", "stream")
    assert seeds == [0, 1] and correct.shape == (2, 20)
    assert correct.sum(axis=1).tolist() == [16, 18] and not correct[0, :4].any() and not correct[1, :2].any()
    assert json.loads(gzip.decompress(record_bytes(a)))["evals"]["test"]["targets"][:4] == [0, 1, 2, 3]
    assert np.array_equal(a.correct("teacher", "window"), np.ones(20, bool))


def test_a_record_is_dirty_when_tracked_code_changed_not_for_an_untracked_link(tmp_path):
    import subprocess

    from distill.study.run import git_state

    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    (tmp_path / "data").symlink_to(tmp_path / "elsewhere")  # a data link in a study worktree
    commit, dirty = git_state(tmp_path)
    assert len(commit) == 40 and not dirty
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (commit, True)
