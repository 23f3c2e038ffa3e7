"""Study files: the design they describe (cells, ids, overrides, resolved configs), and one-line
errors naming the key for everything a hand-written study gets wrong. No Ray, milliseconds."""

from __future__ import annotations

import textwrap

import pytest

from distill.study.contrasts import Contrast, Term, parse_contrast
from distill.study.spec import StudyError, load_study

BASE = """\
name: base
data: {name: speech_commands, path: data/synth-sc}
model: {name: res8_narrow}
chain: {lengths_ms: [1000, 750, 500], crops_per_clip: 3}
labels: {mode: soft, temperature: 2.0, original_weight: 0.5}
train: {epochs: 8, teacher_epochs: 30}
"""

STUDY = """\
name: decisive
base: configs/base.yaml
set: {train.epochs: 20}
seeds: [0, 1, 2]
axes:
  schedule:
    paper: {chain.lengths_ms: [1000, 900, 800, 700, 600, 500]}
    quarter: {chain.lengths_ms: [1000, 750, 500]}
    one_shot: {chain.lengths_ms: [1000, 500]}
  labels:
    mixed: {labels.original_weight: 0.5}
    teacher: {labels.original_weight: 0.0}
    hard:
      labels.mode: hard
      labels.original_weight: 0.0
contrasts: ["pld@500 - direct@500", "pld@500 − one_shot@500", "teacher@1000 - pld@500"]
eval:
  unseen_engine_test: {name: speech_commands_test, path: data/synth-sc/_unseen_engine_test_}
  validation: {name: speech_commands, path: data/synth-sc, split: validation}
"""


def write(tmp_path, study: str = STUDY, base: str = BASE, name: str = "study.yaml"):
    (tmp_path / "configs").mkdir(exist_ok=True)
    (tmp_path / "configs" / "base.yaml").write_text(base)
    (tmp_path / "studies").mkdir(exist_ok=True)
    path = tmp_path / "studies" / name
    path.write_text(textwrap.dedent(study).replace("base: configs/", "base: ../configs/"))
    return path


def test_full_grid_in_file_order_with_stable_readable_ids(tmp_path):
    study = load_study(write(tmp_path))
    cells = study.cells()
    assert [c.id for c in cells] == [f"schedule={s},labels={lv}" for s in ("paper", "quarter", "one_shot")
                                     for lv in ("mixed", "teacher", "hard")]
    assert [c.id for c in load_study(write(tmp_path)).cells()] == [c.id for c in cells]  # stable
    paper_hard = study.cell("schedule=paper,labels=hard")
    assert paper_hard.levels == {"schedule": "paper", "labels": "hard"}
    assert paper_hard.overrides == {"train.epochs": 20, "chain.lengths_ms": [1000, 900, 800, 700, 600, 500],
                                    "labels.mode": "hard", "labels.original_weight": 0.0}
    assert study.seeds == (0, 1, 2) and study.protocols == ("window", "stream", "center")
    assert [str(c) for c in study.contrasts] == ["pld@500 - direct@500", "pld@500 - one_shot@500",
                                                 "teacher@1000 - pld@500"]
    assert study.eval["unseen_engine_test"].options.name == "speech_commands_test"
    assert study.eval["unseen_engine_test"].split == "test" and study.eval["validation"].split == "validation"


def test_resolved_config_applies_set_levels_and_seed(tmp_path):
    study = load_study(write(tmp_path))
    cell = study.cell("schedule=one_shot,labels=teacher")
    cfg = study.resolved(cell, 2)
    assert (cfg.seed, cfg.train.epochs, cfg.chain.lengths_ms, cfg.labels.original_weight) == (2, 20, [1000, 500], 0.0)
    assert cfg.labels.temperature == 2.0 and cfg.model.name == "res8_narrow"  # the base's, untouched
    assert "/" not in cfg.name and cfg.name == "decisive.schedule-one_shot.labels-teacher.s2"
    assert study.contrasts[0].stages(cfg) == ("student_500ms", "direct_500ms")
    assert study.contrasts[2].stages(cfg) == ("teacher", "student_500ms")
    again = study.resolved(study.cell("schedule=paper,labels=mixed"), 0)  # no cell leaks into another
    assert again.chain.lengths_ms == [1000, 900, 800, 700, 600, 500] and again.labels.original_weight == 0.5


def test_fractional_design_keeps_listed_cells_in_their_order(tmp_path):
    study = load_study(write(tmp_path, STUDY + textwrap.dedent("""\
        cells:
          - {labels: hard, schedule: quarter}
          - {schedule: paper, labels: mixed}
        """)))
    assert [c.id for c in study.cells()] == ["schedule=quarter,labels=hard", "schedule=paper,labels=mixed"]


def test_a_study_without_axes_is_one_cell(tmp_path):
    study = load_study(write(tmp_path, "name: fidelity\nbase: configs/base.yaml\nseeds: [0]\n"))
    assert [(c.id, c.overrides) for c in study.cells()] == [("base", {})]
    assert study.resolved(study.cells()[0], 0).chain.lengths_ms == [1000, 750, 500]


def test_contrast_parsing():
    assert parse_contrast("pld@500-direct@500") == Contrast(Term("pld", 500), Term("direct", 500))
    for text in ["pld@500 + direct@500", "pld500 - direct@500", "pld@500", "wizard@500 - direct@500",
                 "pld@500 - pld@500"]:
        with pytest.raises(ValueError):
            parse_contrast(text)


def _replace(old: str, new: str) -> str:
    assert old in STUDY
    return STUDY.replace(old, new)


BAD = {
    "unknown top key": (STUDY + "colour: red\n", "colour: Extra inputs are not permitted"),
    "unknown axis in a cell": (STUDY + "cells:\n  - {schedule: paper, labelz: mixed}\n",
                               "cells[0]: unknown axis 'labelz'"),
    "unknown level": (STUDY + "cells:\n  - {schedule: paper, labels: fuzzy}\n", "cells[0].labels: unknown level 'fuzzy'"),
    "cell missing an axis": (STUDY + "cells:\n  - {schedule: paper}\n", "cells[0]: no level of axis 'labels'"),
    "duplicate cell": (STUDY + "cells:\n  - {schedule: paper, labels: hard}\n  - {labels: hard, schedule: paper}\n",
                       "cells[1]: the same cell as cells[0]"),
    "bad contrast": (_replace('"pld@500 - direct@500"', '"pld@500 vs direct@500"'), "contrasts[0]:"),
    "unknown method": (_replace('"pld@500 - direct@500"', '"pld@500 - wizard@500"'),
                       "contrasts[0]: 'pld@500 - wizard@500': unknown method 'wizard'"),
    "contrast naming no stage": (_replace('"pld@500 - direct@500"', '"pld@450 - direct@500"'),
                                 "contrasts[0]: pld@450 is not a stage of this chain"),
    "bad override value": (_replace("[1000, 750, 500]}", "[500, 1000]}"),
                           "axes.schedule.quarter: chain.lengths_ms: lengths must be strictly decreasing"),
    "unknown override key": (_replace("labels.original_weight: 0.5}", "labels.original_wieght: 0.5}"),
                             "axes.labels.mixed: labels.original_wieght: Extra inputs are not permitted"),
    "bad set value": (_replace("set: {train.epochs: 20}", "set: {train.epochs: 0}"),
                      "set: train.epochs: Input should be greater than or equal to 1"),
    "duplicate seed": (_replace("seeds: [0, 1, 2]", "seeds: [0, 1, 1]"), "seeds: seed 1 appears twice"),
    "seed not an int": (_replace("seeds: [0, 1, 2]", "seeds: [0, 1.5]"), "seeds.1:"),
    "missing base": (_replace("base: configs/base.yaml", "base: configs/nope.yaml"),
                     "base: ../configs/nope.yaml: config file not found"),
    "key set by two axes": (STUDY.replace("    teacher: {labels.original_weight: 0.0}\n",
                                          "    teacher: {chain.lengths_ms: [1000, 500]}\n"),
                            "axes.labels.teacher: chain.lengths_ms is also set by axes.schedule.paper"),
    "section and key set by two axes": (STUDY.replace("    teacher: {labels.original_weight: 0.0}\n",
                                                      "    teacher: {chain: {crops_per_clip: 2}}\n"),
                                        "axes.labels.teacher: chain is also set by axes.schedule.paper"),
    "reserved key": (_replace("set: {train.epochs: 20}", "set: {seed: 3}"), "set: seed: set by the study"),
    "bad study name": (_replace("name: decisive", "name: Decisive Study"), "name: String should match pattern"),
    "unknown protocol": (STUDY + "protocols: [stream, sliding]\n", "protocols: unknown protocol 'sliding'"),
    "bad eval set": (STUDY.replace("{name: speech_commands_test,", "{name: speech_commands_test, colour: red,"),
                     "eval.unseen_engine_test: colour: Extra inputs are not permitted"),
    "bad eval split": (STUDY.replace("split: validation", "split: dev"),
                       "eval.validation.split: 'dev' is not one of train, validation, test"),
    "eval set named test": (STUDY.replace("  unseen_engine_test:", "  test:"), "eval.test: "),
    "not YAML": ("name: [unclosed\n", "not valid YAML"),
    "not a mapping": ("- a list\n", "the top level must be a mapping"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_study_error_is_one_line_naming_the_file_and_the_key(tmp_path, case):
    text, expected = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_a_broken_base_config_is_named_as_the_base(tmp_path):
    with pytest.raises(StudyError, match=r"study\.yaml: base: .*not valid YAML") as info:
        load_study(write(tmp_path, base="chain: [unclosed\n"))
    assert "\n" not in str(info.value)


def test_a_missing_study_file(tmp_path):
    with pytest.raises(StudyError, match="study file not found"):
        load_study(tmp_path / "nope.yaml")
