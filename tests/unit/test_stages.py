"""The stage plan: schedules, who teaches whom, rows per clip."""

from __future__ import annotations

import re

import pytest

from distill.config import ConfigError, load_config
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
    with pytest.raises(ConfigError, match=r"chain\.schedule: Value error, schedule: steps"):
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
