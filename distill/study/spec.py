"""A study file: which chains to run and which differences between them to estimate.

A study is data, not a script: a base experiment config, axes whose levels are config
overrides, seeds, and the contrasts to estimate (``pld@500 - direct@500``). Its cells are the
grid of the axes' levels (or a listed fractional design), each run once per seed as an
ordinary chain.

Everything is checked here, before any work: every cell's resolved config is validated by
``distill.config.load_config`` itself, and every contrast must name a stage that every cell's
plan has, so a typo in the 30th cell surfaces now and not on the second day of a study. Every
error is one line that names the file and the key (``studies/x.yaml: axes.schedule.paper:
chain.lengths_ms: ...``): a study file is edited by hand, and one line is what a person reads.

    study = load_study("studies/decisive.yaml")
    for cell in study.cells():            # Cell(id="schedule=paper,labels=mixed", levels=..., overrides=...)
        for seed in study.seeds:
            cfg = study.resolved(cell, seed)   # an ExperimentConfig, as `pld run` would get it
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from distill.config import ConfigError, ExperimentConfig, load_config
from distill.data.base import DatasetOptions, parse_dataset_options
from distill.names import PROTOCOLS
from distill.study.contrasts import Contrast, parse_contrast

# Study, axis, level and eval-set names: lower-case, so that a cell id is also a file name on
# every file system (a case-insensitive one included) and an MLflow tag without escaping.
NAME = r"^[a-z0-9_-]+$"
# A dotted config key, as `pld run --set` takes it.
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Set by the study itself for every run, so no axis or `set` may set them.
RESERVED_KEYS = ("seed", "name")
TEST = "test"  # the chain's own test split, always evaluated; an extra eval set may not take its name
NO_AXES = "base"  # the id of the one cell of a study without axes


SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class EvalSet:
    """An extra evaluation set: a dataset (a data: block) and which of its splits is read."""
    options: DatasetOptions
    split: str = "test"


class StudyError(ValueError):
    """A study that cannot run; the message is one line naming the file and the key."""


# --- the file's shape ----------------------------------------------------------------------

class StudyFile(BaseModel):
    """The YAML as written; ``load_study`` turns it into a checked ``Study``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=NAME, description="The study's name: [a-z0-9_-]+.")
    base: str = Field(description="The experiment config every cell starts from, relative to the study file.")
    set_: dict[str, Any] = Field(default_factory=dict, alias="set",
                                 description="Dotted overrides applied to every cell.")
    seeds: list[StrictInt] = Field(min_length=1, description="Seeds run in every cell: distinct, >= 0.")
    axes: dict[str, dict[str, dict[str, Any] | None]] = Field(
        default_factory=dict, description="axis -> level -> dotted overrides (a level may be empty).")
    cells: list[dict[str, str]] | None = Field(
        None, description="A fractional design: the cells to run as {axis: level}; absent: the full grid.")
    contrasts: list[str] = Field(default_factory=list, description="METHOD@MS - METHOD@MS, estimated per protocol.")
    protocols: list[str] = Field(default_factory=lambda: list(PROTOCOLS), min_length=1,
                                 description="Evaluation protocols the contrasts are estimated under.")
    eval: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Extra evaluation sets of every cell: name -> dataset options (a data: block), "
                                          "plus split: train, validation or test (default test).")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        for s in v:
            if s < 0:
                raise ValueError(f"seed {s} is negative")
            if v.count(s) > 1:
                raise ValueError(f"seed {s} appears twice")
        return v

    @field_validator("protocols")
    @classmethod
    def _protocols(cls, v: list[str]) -> list[str]:
        for p in v:
            if p not in PROTOCOLS:
                raise ValueError(f"unknown protocol {p!r} (one of {', '.join(PROTOCOLS)})")
            if v.count(p) > 1:
                raise ValueError(f"protocol {p!r} appears twice")
        return v


# --- cells ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One point of the design: a level of every axis, and the overrides they add up to
    (the study's ``set`` first, then each axis's level in file order)."""

    id: str  # "schedule=paper,labels=mixed": axes in file order; stable, readable, a safe file name
    levels: dict[str, str]
    overrides: dict[str, Any]

    def __hash__(self) -> int:
        return hash(self.id)


# --- the study -----------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Study:
    path: Path  # the study file
    name: str
    base: Path  # the base config, as a path from where pld runs (the study file's folder joined)
    set: dict[str, Any]
    seeds: tuple[int, ...]
    axes: dict[str, dict[str, dict[str, Any]]]
    contrasts: tuple[Contrast, ...]
    protocols: tuple[str, ...]
    eval: dict[str, "EvalSet"]  # extra evaluation sets beside the chain's own test split
    _cells: tuple[Cell, ...]

    def cells(self) -> list[Cell]:
        """The design's cells: the full grid in file order (the first axis slowest), or the
        listed cells in their order."""
        return list(self._cells)

    def cell(self, cell_id: str) -> Cell:
        for c in self._cells:
            if c.id == cell_id:
                return c
        raise KeyError(f"{self.path}: no cell {cell_id!r} (cells: {', '.join(c.id for c in self._cells)})")

    def resolved(self, cell: Cell, seed: int) -> ExperimentConfig:
        """The experiment config of one run: base + the cell's overrides + the seed, named
        ``study.axis-level.axis-level.sSEED`` (the chain's run name and the start of its run
        directory's name, so it holds no '/', '=' or ',')."""
        return load_config(self.base, run_overrides(self.name, cell, seed))


def run_name(study: str, cell: Cell, seed: int) -> str:
    return f"{study}.{cell.id.replace('=', '-').replace(',', '.')}.s{seed}"


def run_overrides(study: str, cell: Cell, seed: int) -> dict[str, Any]:
    # a deep copy: load_config writes later dotted keys into the dicts of earlier ones
    return copy.deepcopy({**cell.overrides, "seed": seed, "name": run_name(study, cell, seed)})


def load_study(path: str | Path) -> Study:
    """Read, validate and resolve a study file; ``StudyError`` (one line) if anything is wrong."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        spec = StudyFile.model_validate(raw)
    except ValidationError as exc:
        raise StudyError(f"{path}: " + "; ".join(_pydantic_line(e) for e in exc.errors())) from None

    def fail(key: str, message: str) -> StudyError:
        return StudyError(f"{path}: {key}: {message}")

    base = path.parent / spec.base
    if not base.is_file():
        raise fail("base", f"{spec.base}: config file not found (looked at {base})")
    _check_keys(spec.set_, "set", fail)
    for axis, levels in spec.axes.items():
        if not re.match(NAME, axis):
            raise fail(f"axes.{axis}", "an axis name is [a-z0-9_-]+")
        if not levels:
            raise fail(f"axes.{axis}", "an axis needs at least one level")
        for level, overrides in levels.items():
            if not re.match(NAME, level):
                raise fail(f"axes.{axis}.{level}", "a level name is [a-z0-9_-]+")
            _check_keys(overrides or {}, f"axes.{axis}.{level}", fail)
    axes = {a: {lv: dict(o or {}) for lv, o in levels.items()} for a, levels in spec.axes.items()}
    cells = _cells(spec, axes, fail)

    contrasts = []
    for i, text in enumerate(spec.contrasts):
        try:
            contrasts.append(parse_contrast(text))
        except ValueError as exc:
            raise fail(f"contrasts[{i}]", str(exc)) from None
    evals = {}
    for name, options in spec.eval.items():
        if not re.match(NAME, name) or name == TEST:
            raise fail(f"eval.{name}", f"an eval set's name is [a-z0-9_-]+ and not {TEST!r} (the chain's own test split)")
        options = dict(options)
        split = options.pop("split", "test")
        if split not in SPLITS:
            raise fail(f"eval.{name}.split", f"{split!r} is not one of {', '.join(SPLITS)}")
        try:
            evals[name] = EvalSet(parse_dataset_options(options), split)
        except (ValidationError, ValueError, TypeError) as exc:
            raise fail(f"eval.{name}", _one_line(exc)) from None

    study = Study(path=path, name=spec.name, base=base, set=dict(spec.set_), seeds=tuple(spec.seeds), axes=axes,
                  contrasts=tuple(contrasts), protocols=tuple(spec.protocols), eval=evals, _cells=tuple(cells))
    for cell in cells:  # every cell's config as the runner will build it; the seed changes nothing here
        config = _validated(study, cell, spec, fail)
        for i, contrast in enumerate(contrasts):
            try:
                contrast.stages(config)
            except ValueError as exc:
                raise fail(f"contrasts[{i}]", f"{exc} (in cell {cell.id})") from None
    return study


# --- the checks, in the order load_study makes them ----------------------------------------

def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # safe_load: never constructs objects
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise StudyError(f"{path}: not valid YAML: {_one_line(exc)}") from None
    if not isinstance(raw, dict):
        raise StudyError(f"{path}: the top level must be a mapping (name, base, seeds, axes, ...)")
    return raw


def _pydantic_line(error: dict) -> str:
    loc = ".".join(str(x) for x in error["loc"]) or "(top level)"
    return f"{loc}: {error['msg'].removeprefix('Value error, ')}"


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(_pydantic_line(e) for e in exc.errors())
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_keys(overrides: dict[str, Any], where: str, fail) -> None:
    for key in overrides:
        if not KEY.match(key):
            raise fail(where, f"{key!r} is not a dotted config key (like train.epochs)")
        if key in RESERVED_KEYS:
            raise fail(where, f"{key}: set by the study for every run (seeds: and the cell), not by an override")


def _overlap(a: str, b: str) -> bool:
    """Two dotted keys that write the same place: equal, or one a section of the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _cells(spec: StudyFile, axes: dict[str, dict[str, dict]], fail) -> list[Cell]:
    """The design's cells, each checked: every axis named once, known levels, no key set by
    two axes (which one would win would depend on the order of the axes in the file)."""
    if spec.cells is None:
        picks = [dict(zip(axes, combo)) for combo in itertools.product(*(list(lv) for lv in axes.values()))]
    else:
        if not spec.cells:
            raise fail("cells", "empty; leave cells out for the full grid")
        picks = []
        for i, pick in enumerate(spec.cells):
            for axis, level in pick.items():
                if axis not in axes:
                    raise fail(f"cells[{i}]", f"unknown axis {axis!r} (axes: {', '.join(axes) or 'none'})")
                if level not in axes[axis]:
                    raise fail(f"cells[{i}].{axis}", f"unknown level {level!r} (levels: {', '.join(axes[axis])})")
            for axis in axes:
                if axis not in pick:
                    raise fail(f"cells[{i}]", f"no level of axis {axis!r} (a cell names one level of every axis)")
            for j, earlier in enumerate(picks):
                if earlier == pick:
                    raise fail(f"cells[{i}]", f"the same cell as cells[{j}]")
            picks.append({axis: pick[axis] for axis in axes})  # axes in file order
    cells = []
    for pick in picks:
        cell_id = ",".join(f"{a}={lv}" for a, lv in pick.items()) or NO_AXES
        overrides: dict[str, Any] = {}
        for key, value in spec.set_.items():
            overrides[key] = value
        setters: dict[str, str] = {}  # key -> the level that set it
        for axis, level in pick.items():
            where = f"axes.{axis}.{level}"
            for key, value in axes[axis][level].items():
                for other_key, other in setters.items():
                    if _overlap(key, other_key):
                        raise fail(where, f"{key} is also set by {other} (cell {cell_id}); a key belongs to one axis")
                setters[key] = where
                overrides.pop(key, None)  # re-inserted: dotted keys are applied in this order
                overrides[key] = value
        cells.append(Cell(cell_id, dict(pick), overrides))
    return cells


def _validated(study: Study, cell: Cell, spec: StudyFile, fail) -> ExperimentConfig:
    """The cell's config, or a StudyError naming the override that broke it: the level (or
    ``set``) that wrote the failing key, and the cell."""
    try:
        return study.resolved(cell, study.seeds[0])
    except ConfigError as exc:
        text = str(exc).removeprefix(f"{study.base}: ")
        if text.startswith(_FILE_PROBLEMS):  # the base file itself, whatever the cell
            raise fail("base", f"{study.base}: {_one_line(ValueError(text))}") from None
        lines = _config_lines(text)
    except (TypeError, AttributeError) as exc:  # a dotted key that goes inside a value that is not a section
        lines = [f"an override goes inside a value that is not a section ({_one_line(exc)})"]
    sources = [("set", spec.set_)] + [(f"axes.{a}.{lv}", study.axes[a][lv]) for a, lv in cell.levels.items()]
    where, parts = f"cell {cell.id}", []
    for line in lines:
        loc = line.split(": ", 1)[0]
        hits = [label for label, overrides in sources
                if any(_overlap(key, loc) or re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", line) for key in overrides)]
        if hits and where == f"cell {cell.id}":
            where = hits[-1]  # a later level overrides ``set`` and earlier axes
        parts.append(line)
    suffix = "" if where.startswith("cell ") else f" (in cell {cell.id})"
    raise fail(where, "; ".join(parts) + suffix)


_FILE_PROBLEMS = ("config file not found", "not UTF-8", "not valid YAML", "top level must be")  # load_config's


def _config_lines(text: str) -> list[str]:
    """load_config's error (less the file name) as its field lines, without pydantic's prefixes."""
    if text.startswith("invalid config\n"):
        lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    else:
        lines = [" ".join(text.split())]
    out = []
    for line in lines:
        loc, sep, msg = line.partition(": ")
        msg = msg.removeprefix("Value error, ")
        out.append(msg if loc == "(top level)" else f"{loc}{sep}{msg}")
    return out
