"""The stage plan: schedules, who teaches whom, rows per clip."""

from __future__ import annotations

import re

import pytest

from distill.config import ConfigError, load_config
from distill.core.labels import LabelSpec
from distill.stages import plan_chain


def test_schedule_expands_and_is_validated():
    cfg = load_config(None, {"chain.schedule": {"start_ms": 1000, "stop_ms": 500, "step_ms": 250}})
    assert cfg.chain.lengths_ms == [1000, 750, 500] and cfg.chain.schedule is None
    assert [s.name for s in plan_chain(cfg)][:3] == ["teacher", "student_750ms", "student_500ms"]
    assert load_config(None, {"chain.schedule": {"start_ms": 800, "stop_ms": 800},
                              "chain.self_distill": True}).chain.lengths_ms == [800]
    assert load_config(None).chain.lengths_ms == [1000, 900, 800, 700, 600, 500]
    bad = {
        "steps of 150 ms from 900 ms do not reach 500 ms": {"chain.schedule": {"start_ms": 900, "step_ms": 150}},
        "stop_ms (900) must not exceed start_ms (500)": {"chain.schedule": {"start_ms": 500, "stop_ms": 900}},
        "give chain.lengths_ms or chain.schedule, not both": {"chain.schedule": {}, "chain.lengths_ms": [1000]},
        "1200 ms is longer than data.clip_ms": {"chain.schedule": {"start_ms": 1200}},
        "strictly decreasing": {"chain.lengths_ms": [1000, 1000]},
        "greater than 0": {"chain.schedule": {"step_ms": 0}},
    }
    for message, overrides in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(None, overrides)
    with pytest.raises(ConfigError, match=r"chain\.schedule: schedule: steps"):
        load_config(None, {"chain.schedule": {"start_ms": 900, "step_ms": 150}})


def test_plan_chain_links_each_student_to_the_previous_stage():
    plan = plan_chain(load_config(None, {"chain.lengths_ms": [1000, 750, 500], "train.teacher_epochs": 5}))
    # the first length is the teacher's: no student at the teacher's length unless asked for
    assert [s.name for s in plan] == ["teacher", "student_750ms", "student_500ms", "direct_500ms", "one_shot_500ms"]
    assert [s.teacher for s in plan] == [None, "teacher", "student_750ms", None, "teacher"]
    assert [s.kind for s in plan] == ["teacher", "student", "student", "baseline", "baseline"]
    assert [s.input_ms for s in plan] == [1000, 750, 500, 500, 500]
    assert [s.method for s in plan][-2:] == ["direct", "one_shot"] and plan[0].epochs == 5
    selfd = plan_chain(load_config(None, {"chain.lengths_ms": [1000, 500], "chain.self_distill": True}))
    assert [(s.name, s.teacher) for s in selfd][:3] == [("teacher", None), ("student_1000ms", "teacher"),
                                                        ("student_500ms", "student_1000ms")]
    default = plan_chain(load_config(None))
    assert [s.input_ms for s in default if s.kind != "baseline"] == [1000, 900, 800, 700, 600, 500]
    with pytest.raises(ConfigError, match="the first length is the teacher's"):
        load_config(None, {"chain.lengths_ms": [1000]})
    assert [s.name for s in plan_chain(load_config(None, {"chain.lengths_ms": [1000], "chain.self_distill": True,
                                                          "chain.baselines": []}))] == ["teacher", "student_1000ms"]


def test_a_stage_at_the_clip_length_has_one_row_per_clip():
    from distill.stages import crops_per_clip

    cfg = load_config(None, {"chain.crops_per_clip": 4})
    assert crops_per_clip(cfg, 1000) == 1 and crops_per_clip(cfg, 500) == 4
    sliding = load_config(None, {"chain.crop_placement": "sliding", "chain.crop_stride_ms": 100})
    assert crops_per_clip(sliding, 1000) == 1 and crops_per_clip(sliding, 500) == 6


def test_a_stage_recipe_overrides_its_group_which_overrides_the_chain():
    from distill.stages import describe_plan, stage_train

    cfg = load_config(None, {
        "chain.lengths_ms": [1000, 750, 500], "chain.baselines": ["direct", "one_shot"],
        "labels": {"mode": "soft", "temperature": 2.0, "original_weight": 0.5}, "train.epochs": 8,
        "stages": {"teacher": {"epochs": 30, "train": {"lr": 0.005}},
                   "students": {"epochs": 12, "labels": {"temperature": 4.0}},
                   "student_500ms": {"epochs": 20, "labels": {"original_weight": 0.0}, "train": {"batch_size": 32}},
                   "baselines": {"train": {"optimizer": "sgd"}}}})
    plan = {s.name: s for s in plan_chain(cfg)}
    teacher, s750, s500 = plan["teacher"], plan["student_750ms"], plan["student_500ms"]
    assert (teacher.epochs, s750.epochs, s500.epochs, plan["direct_500ms"].epochs) == (30, 12, 20, 8)
    assert (s750.labels.temperature, s750.labels.original_weight) == (4.0, 0.5)  # group over the chain
    assert (s500.labels.temperature, s500.labels.original_weight) == (4.0, 0.0)  # the stage over its group
    one_shot = plan["one_shot_500ms"].labels
    assert (one_shot.mode, one_shot.temperature, one_shot.original_weight) == ("soft", 2.0, 0.5)
    assert plan["direct_500ms"].labels == teacher.labels == LabelSpec()  # clip labels: one-hot, hard, nothing mixed
    assert stage_train(cfg.train, teacher).lr == 0.005 and stage_train(cfg.train, s750).lr == cfg.train.lr
    assert stage_train(cfg.train, s500).batch_size == 32 and stage_train(cfg.train, s750).batch_size == 64
    assert stage_train(cfg.train, plan["direct_500ms"]).optimizer == "sgd"
    assert stage_train(cfg.train, s750) is cfg.train  # no settings of its own: the chain's, unchanged
    plan_text = describe_plan(cfg, 100)
    assert re.search(r"student_500ms .* 20 .* soft T=4 clip weight 0; batch_size=32$", plan_text, re.M), plan_text
    assert re.search(r"^teacher .* 30 .* lr=0.005$", plan_text, re.M), plan_text


def test_a_stage_recipe_names_a_stage_of_the_chain_or_a_group():
    with pytest.raises(ConfigError, match=re.escape("stages.student_450ms: no such stage in this chain; its stages "
                                                    "are teacher, student_750ms, student_500ms, direct_500ms, "
                                                    "one_shot_500ms, and the groups teacher, students, baselines")):
        load_config(None, {"chain.lengths_ms": [1000, 750, 500], "stages": {"student_450ms": {"epochs": 3}}})
    with pytest.raises(ConfigError, match=re.escape("stages.students.labels.temprature: Extra inputs")):
        load_config(None, {"stages": {"students": {"labels": {"temprature": 3}}}})
    with pytest.raises(ConfigError, match=re.escape("stages.teacher.train.runner: Extra inputs")):  # how it runs is the chain's
        load_config(None, {"stages": {"teacher": {"train": {"runner": "local"}}}})
