"""Malformed configs, generated: wrong types, out-of-range values, unknown keys, sections that
are not mappings, and YAML oddities. Every one loads or fails with one ConfigError that names
the file and the field; nothing else escapes, and `pld run --dry-run` never prints a traceback."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from distill.cli import main
from distill.config import ConfigError, ExperimentConfig, load_config
from distill.data.base import DATASETS, DEFAULT_DATASET, parse_dataset_options

SECTIONS = {name: f.annotation for name, f in ExperimentConfig.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}
LEAVES = [(section, key) for section, model in SECTIONS.items() for key in model.model_fields]

values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10 ** 12, max_value=10 ** 12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(min_value=-2000, max_value=2000), max_size=4),
    st.dictionaries(st.text(min_size=1, max_size=6), st.integers(), max_size=2))


@st.composite
def mutated(draw) -> tuple[dict, str]:
    """A config with one to three faults; also the top-level section of the first."""
    raw: dict = {}
    first = None
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["leaf", "unknown_key", "unknown_section", "section_not_mapping"]))
        section, key = draw(st.sampled_from(LEAVES))
        if kind == "leaf":
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section][key] = draw(values)
        elif kind == "unknown_key":
            raw.setdefault(section, {})
            if isinstance(raw[section], dict):
                raw[section]["no_such_" + draw(st.text("abcxyz", min_size=1, max_size=5))] = draw(values)
        elif kind == "unknown_section":
            section = "nosection_" + draw(st.text("abcxyz", min_size=1, max_size=5))
            raw[section] = draw(values)
        else:
            raw[section] = draw(st.one_of(st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
        first = first or section
    return raw, first


def _clean(value):  # YAML cannot write NaN keys etc. the same way; keep the document representable
    if isinstance(value, float) and math.isnan(value):
        return ".nan"
    return value


@functools.cache
def _field_alone(section: str, key: str) -> TypeAdapter:
    """The field's own type and constraints (Field(gt=...), min_length, Literal, nested models)."""
    field = SECTIONS[section].model_fields[key]
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation)


def _field_refuses(section: str, key: str, value: Any) -> bool:
    try:
        _field_alone(section, key).validate_python(value)
    except ValidationError:
        return True
    return False


@functools.cache
def _datasets() -> list[str]:
    parse_dataset_options({"path": "."})  # the built-in datasets register on first use
    return DATASETS.names()


def must_refuse(raw: dict) -> list[str]:
    """The dotted fields that make ``raw`` invalid whatever else it holds: an unknown section or
    key, a section that is not a mapping, a value its field's own type or bounds refuse. (A value
    the field accepts may still be refused by a rule across fields; that is left open.)"""
    fields = []
    for section, value in raw.items():
        if section not in ExperimentConfig.model_fields:
            fields.append(section)
        elif section in SECTIONS:
            if not isinstance(value, dict):
                fields.append(section)
                continue
            name = value.get("name", DEFAULT_DATASET)
            if section == "data" and not (isinstance(name, str) and name in _datasets()):
                fields.append("data.name")  # no dataset, so no options model to check its other keys against
                continue
            for key, leaf in value.items():
                if key not in SECTIONS[section].model_fields or _field_refuses(section, key, leaf):
                    fields.append(f"{section}.{key}")
    return fields


def test_the_fault_oracle_tells_bad_leaves_from_good_ones():
    assert must_refuse({"train": {"epochs": 0, "lr": 0.5, "use_gpu": [1]}}) == ["train.epochs", "train.use_gpu"]
    assert must_refuse({"chain": {"lengths_ms": []}, "data": {"clip_ms": "x", "no_such_a": 1}}) == [
        "chain.lengths_ms", "data.clip_ms", "data.no_such_a"]
    assert must_refuse({"data": {"name": 3, "no_such_a": 1}, "nosection_x": {}, "ray": 5}) == [
        "data.name", "nosection_x", "ray"]
    assert must_refuse({"train": {"epochs": 2, "precision": "bf16"}, "tracking": {"uri": None}}) == []


# derandomize: CI runs the same 80 cases every time, so a failure reproduces. Exploring with
# derandomize=False (600 random cases passed at this commit) found `data.name: []`, now fixed.
@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_a_generated_bad_config_loads_or_fails_naming_the_file_and_a_field(tmp_path: Path, case):
    raw, section = case
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    try:
        load_config(path)
        message = None
    except ConfigError as exc:
        message = str(exc)
    refused = must_refuse(yaml.safe_load(path.read_text()))  # what the loader read, NaN and all
    # an unknown key or section, a section that is not a mapping, a value of the wrong type or out of
    # range: accepting any of them quietly would run something other than what the file says
    assert message is not None or not refused, f"accepted, though {refused} are invalid: {raw}"
    if message is None:
        return
    assert message.startswith(str(path)), message
    assert "Traceback" not in message
    # every problem is on its own line, led by the dotted field it concerns
    lines = message.splitlines()[1:] or [message]
    assert all(":" in line for line in lines), message
    for field in refused:
        assert re.search(rf"(^|\s){re.escape(field)}[.:\s]", message, re.M), (field, message)


ODD_YAML = {
    "tab indent": "train:\n\tepochs: 3\n",
    "unclosed list": "chain:\n  lengths_ms: [1000, 500\n",
    "python object tag": "train: !!python/object/apply:os.system ['echo hi']\n",
    "python name tag": "model: !!python/name:os.system\n",
    "anchor and alias": "a: &x {epochs: 2}\ntrain: *x\n",
    "merge key": "base: &b {epochs: 2}\ntrain:\n  <<: *b\n  lr: 0.1\n",
    "duplicate keys": "train:\n  epochs: 2\n  epochs: 3\n",
    "top-level list": "- train\n- chain\n",
    "top-level scalar": "42\n",
    "two documents": "train: {epochs: 2}\n---\ntrain: {epochs: 3}\n",
    "binary junk": "\x00\x01\x02\xff",
    "byte order mark": "\ufefftrain: {epochs: 2}\n",
    "huge integer": "train: {epochs: 99999999999999999999999999}\n",
    "nan and inf": "train: {lr: .nan, weight_decay: .inf}\n",
    "yes as bool": "train: {use_gpu: yes, epochs: on}\n",
    "date": "name: 2026-12-01\n",
    "null section": "train: ~\n",
    "deep nesting": "train: " + "[" * 200 + "]" * 200 + "\n",
    "empty key": ": 3\n",
    "lengths not decreasing": "chain: {lengths_ms: [500, 1000]}\n",
    "dataset name a list": "data: {name: []}\n",
}


@pytest.mark.parametrize("name", sorted(ODD_YAML))
def test_yaml_oddities_fail_as_one_clear_error_or_load(name, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no corpus here, whatever the checkout holds: a config that loads meets a missing data.path
    path = tmp_path / "odd.yaml"
    text = ODD_YAML[name]
    path.write_bytes(text.encode("utf-8", "surrogateescape") if name != "binary junk" else b"\x00\x01\x02\xff")
    try:
        load_config(path)
        loads = True
    except ConfigError as exc:
        assert str(exc).startswith(str(path)), exc
        loads = False
    code = main(["run", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.startswith("pld: error: ")
    if loads:  # the config is fine; the dry run says the data is not there, as its last line
        assert err.splitlines()[-1].startswith("pld: error: data: data.path:"), err
    else:  # the config's fault, named in the config's file
        assert str(path) in err
    if "python" in name:
        assert code == 2  # a config never constructs objects
