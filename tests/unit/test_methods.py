"""The method registry (distill/methods.py): a new baseline is one module, and the planner, the
config, the plots, the headline metrics and the study's contrasts all take it from there."""

from __future__ import annotations

import pytest

from distill.config import ConfigError, load_config
from distill.methods import METHODS, Method, baselines, methods, register_method
from distill.stages import plan_chain


@pytest.fixture
def from_750ms(monkeypatch):
    """A baseline of one definition, as a module of its own would register it: the final length
    learns from the 750 ms student, skipping the steps after it. Unregistered afterwards."""
    monkeypatch.setattr(METHODS, "_builders", dict(METHODS._builders))
    return register_method(Method("from_750ms", "from the 750 ms student", "tab:purple", "D",
                                  teacher=lambda planned: next(s.name for s in planned if s.input_ms == 750)))


def test_the_built_in_methods_plan_the_chain_as_before():
    assert [m.name for m in methods()] == ["pld", "direct", "one_shot"] and baselines() == ["direct", "one_shot"]
    plan = plan_chain(load_config(None, {"chain.lengths_ms": [1000, 750, 500]}))
    assert [(s.name, s.method, s.teacher) for s in plan] == [
        ("teacher", "pld", None), ("student_750ms", "pld", "teacher"), ("student_500ms", "pld", "student_750ms"),
        ("direct_500ms", "direct", None), ("one_shot_500ms", "one_shot", "teacher")]


def test_a_new_baseline_is_one_registration(from_750ms):
    cfg = load_config(None, {"chain.lengths_ms": [1000, 750, 500], "chain.baselines": ["direct", "from_750ms"]})
    stage = plan_chain(cfg)[-1]
    assert (stage.name, stage.kind, stage.method, stage.teacher) == ("from_750ms_500ms", "baseline", "from_750ms",
                                                                      "student_750ms")
    assert stage.labels == plan_chain(cfg)[1].labels and stage.input_ms == 500  # a taught stage: the chain's labels apply

    from distill.runtime.analysis.plots import _styles
    from distill.runtime.execution.tracking import headline_metrics
    from distill.study.contrasts import parse_contrast

    assert _styles()["from_750ms"] == dict(color="tab:purple", marker="D", label="from the 750 ms student")
    rows = [{"stage": "student_500ms", "method": "pld", "input_ms": 500, "acc_stream": 0.8},
            {"stage": "from_750ms_500ms", "method": "from_750ms", "input_ms": 500, "acc_stream": 0.75}]
    assert headline_metrics(rows)["pld_minus_from_750ms_stream"] == 0.05
    assert parse_contrast("pld@500 - from_750ms@500").b.method == "from_750ms"


def test_an_unknown_or_repeated_baseline_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as err:
        load_config(None, {"chain.baselines": ["direct", "oneshot"]})
    message = str(err.value)
    assert "chain.baselines" in message and "'oneshot'" in message and "one_shot" in message
    assert "pld" not in message.split("registered baselines:")[1]  # the chain itself is no baseline
    with pytest.raises(ConfigError, match="twice"):
        load_config(None, {"chain.baselines": ["direct", "direct"]})
    with pytest.raises(ConfigError, match="unknown baseline 'pld'"):
        load_config(None, {"chain.baselines": ["pld"]})
