"""Stage keys (distill/runtime/execution/shared.py): two chains share a finished stage exactly when its
inputs are the same, and any input it reads makes another key."""

from __future__ import annotations

import pytest

from distill.config import ExperimentConfig
from distill.runtime.execution.shared import stage_key
from distill.stages import plan_chain

BASE = {"chain": {"lengths_ms": [1000, 750, 500], "baselines": ["direct", "one_shot"]},
        "labels": {"mode": "soft", "temperature": 2.0, "original_weight": 0.5},
        "train": {"epochs": 8, "teacher_epochs": 30}, "model": {"name": "tiny"}}
SOURCE = "a" * 64


def keys(**changes) -> dict[str, str]:
    """Every stage's key of the BASE chain with ``changes`` ({"section.key": value})."""
    raw = {k: dict(v) for k, v in BASE.items()}
    for dotted, value in changes.items():
        section, key = dotted.split(".") if "." in dotted else (None, dotted)
        (raw.setdefault(section, {}) if section else raw)[key] = value
    cfg = ExperimentConfig.model_validate(raw)
    out: dict[str, str] = {}
    for stage in plan_chain(cfg):
        out[stage.name] = stage_key(cfg, stage, SOURCE, out.get(stage.teacher))
    return out


def test_what_a_stage_does_not_read_leaves_its_key() -> None:
    base = keys()
    assert len(set(base.values())) == len(base)  # every stage of a chain is its own
    # the students' labels and schedule, and the student budget: teacher and direct unchanged
    for change in ({"labels.original_weight": 0.0}, {"labels.mode": "hard"}, {"chain.teacher_view": "pad"},
                   {"chain.lengths_ms": [1000, 900, 800, 700, 600, 500]}, {"chain.baselines": ["direct"]},
                   {"name": "another", "storage.root": "/elsewhere", "train.max_failures": 3}):
        other = keys(**change)
        assert other["teacher"] == base["teacher"], change
    for change in ({"labels.original_weight": 0.0}, {"labels.temperature": 4.0}, {"chain.teacher_view": "pad"},
                   {"chain.lengths_ms": [1000, 900, 800, 700, 600, 500]}):
        assert keys(**change)["direct_500ms"] == base["direct_500ms"], change
    # one-shot learns from the teacher alone: the schedule between them does not matter
    assert keys(**{"chain.lengths_ms": [1000, 900, 800, 700, 600, 500]})["one_shot_500ms"] == base["one_shot_500ms"]
    assert keys(**{"train.epochs": 20})["teacher"] == base["teacher"]
    assert keys(**{"train.teacher_epochs": 60})["direct_500ms"] == base["direct_500ms"]


@pytest.mark.parametrize("change, changed", [
    ({"seed": 1}, ["teacher", "student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]),
    ({"model.name": "res8_narrow"}, ["teacher", "student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]),
    ({"train.teacher_epochs": 31}, ["teacher", "student_750ms", "student_500ms", "one_shot_500ms"]),
    ({"train.epochs": 9}, ["student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]),
    ({"labels.original_weight": 0.0}, ["student_750ms", "student_500ms", "one_shot_500ms"]),
    ({"chain.crops_per_clip": 2}, ["student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]),
    ({"train.lr": 0.02}, ["teacher", "student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]),
    # a stage's own recipe (`stages:`) moves its key and its pupils', and no other
    ({"stages": {"students": {"labels": {"temperature": 4.0}}}}, ["student_750ms", "student_500ms"]),
    ({"stages": {"student_750ms": {"train": {"lr": 0.02}}}}, ["student_750ms", "student_500ms"]),
    ({"stages": {"teacher": {"epochs": 31}}}, ["teacher", "student_750ms", "student_500ms", "one_shot_500ms"]),
    ({"stages": {"student_500ms": {}}}, []),  # a block that sets nothing is no recipe
])
def test_any_input_a_stage_reads_makes_a_new_key(change: dict, changed: list[str]) -> None:
    base, other = keys(), keys(**change)
    assert [name for name in base if base[name] != other[name]] == changed


def test_another_source_makes_every_key_new() -> None:
    cfg = ExperimentConfig.model_validate(BASE)
    teacher = plan_chain(cfg)[0]
    assert stage_key(cfg, teacher, SOURCE, None) != stage_key(cfg, teacher, "b" * 64, None)


def test_the_source_identity_is_the_corpus_not_the_chain(tmp_path) -> None:
    import os

    from conftest import write_sc_layout
    from distill.data.base import build_source_index, parse_dataset_options
    from distill.runtime.execution.shared import source_identity

    words = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed"]
    corpus = write_sc_layout(tmp_path / "c", words, ["aaaaaaaa", "bbbbbbbb", "cccccccc"],
                             val={"aaaaaaaa"}, test={"bbbbbbbb"})
    options = parse_dataset_options({"name": "speech_commands", "path": str(corpus)})
    first = source_identity(build_source_index(options))
    assert source_identity(build_source_index(options)) == first  # read again: the same corpus
    (tmp_path / "link").symlink_to(corpus)  # the same files through another path (another worktree)
    other_path = parse_dataset_options({"name": "speech_commands", "path": str(tmp_path / "link")})
    assert source_identity(build_source_index(other_path)) == first
    some = next(corpus.rglob("cccccccc*.wav"))
    stat = some.stat()
    os.utime(some, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten
    assert source_identity(build_source_index(options)) != first
    assert len(first) == 64
