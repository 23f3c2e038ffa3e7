"""A study's contrasts: ``pld@500 - direct@500``, the difference of two of a chain's networks,
each a method at an input length, estimated per protocol in every cell."""

from __future__ import annotations

import re
from dataclasses import dataclass

from distill.config import ExperimentConfig
from distill.methods import methods
from distill.stages import plan_chain


@dataclass(frozen=True)
class Term:
    """``pld@500``: a method's network at an input length."""

    method: str
    input_ms: int

    def __str__(self) -> str:
        return f"{self.method}@{self.input_ms}"


@dataclass(frozen=True)
class Contrast:
    """``a - b``: the difference estimated, per protocol, in every cell."""

    a: Term
    b: Term

    def __str__(self) -> str:
        return f"{self.a} - {self.b}"

    def stages(self, config: ExperimentConfig) -> tuple[str, str]:
        """The names of the two stages of ``config``'s chain the contrast compares."""
        return stage_name(config, self.a), stage_name(config, self.b)


_TERM = r"([a-z_][a-z0-9_]*)@(\d+)"
_CONTRAST = re.compile(rf"^\s*{_TERM}\s*[-−]\s*{_TERM}\s*$")  # the minus sign as typed, or as typeset


def term_methods() -> tuple[str, ...]:
    """What a contrast's term may name: the teacher, or a registered method (distill/methods.py;
    also the values of the pld.method tag)."""
    return ("teacher", *(m.name for m in methods()))


def parse_contrast(text: str) -> Contrast:
    """``"pld@500 - direct@500"`` → Contrast; ValueError saying what is wrong otherwise."""
    known = term_methods()
    match = _CONTRAST.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not METHOD@MS - METHOD@MS (methods: {', '.join(known)})")
    a, b = Term(match[1], int(match[2])), Term(match[3], int(match[4]))
    for term in (a, b):
        if term.method not in known:
            raise ValueError(f"{text!r}: unknown method {term.method!r} (methods: {', '.join(known)})")
    if a == b:
        raise ValueError(f"{text!r} compares {a} with itself")
    return Contrast(a, b)


def stage_name(config: ExperimentConfig, term: Term) -> str:
    """The stage of ``config``'s chain that ``term`` names: teacher@L is the teacher (of length
    L), pld@L the PLD student of length L, direct@L and one_shot@L the baselines at L."""
    stages = plan_chain(config)
    for s in stages:
        method = "teacher" if s.kind == "teacher" else s.method
        if method == term.method and s.input_ms == term.input_ms:
            return s.name
    have = ", ".join(f"{'teacher' if s.kind == 'teacher' else s.method}@{s.input_ms}" for s in stages)
    raise ValueError(f"{term} is not a stage of this chain (its stages: {have})")
