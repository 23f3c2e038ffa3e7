"""Every committed study file (studies/*.yaml) is valid: its cells resolve to configs the chain
accepts and its contrasts name stages every cell has (load_study checks both)."""

from __future__ import annotations

import pytest

from conftest import REPO
from distill.stages import plan_chain
from distill.study.spec import load_study

STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def test_there_are_study_files() -> None:
    assert {p.stem for p in STUDIES} >= {"budget", "decisive", "fidelity", "sensitivity"}


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_each_study_file_loads_and_plans(path, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may depend on the directory it is run from
    study = load_study(path)
    assert study.name == path.stem and study.cells()
    for cell in study.cells():
        for seed in study.seeds:
            cfg = study.resolved(cell, seed)
            assert cfg.seed == seed and plan_chain(cfg)[-1].input_ms == 500
