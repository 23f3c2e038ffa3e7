"""Where a stage's labels come from: the chain's methods, one registered object each.

``pld`` is the chain itself: each student learns from the stage before it. A baseline trains
at the final length, on the final student's crops with its recipe, and differs only in who
labels those crops: ``direct`` the clips' own labels, ``one_shot`` the full-length teacher.

A new baseline is one module; the chain plans it, and the plots, the report, the chain's
headline metrics and ``pld study``'s contrasts read it from here::

    from distill.methods import Method, register_method

    register_method(Method("from_750ms", "from the 750 ms student", color="tab:purple", marker="D",
                           teacher=lambda planned: next(s.name for s in planned if s.input_ms == 750)))

then ``chain.baselines: [direct, from_750ms]``. An installed package registers its own with an
entry point in the group ``pld.methods``, as models do in ``pld.models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from distill.core.registry import Registry

if TYPE_CHECKING:
    from distill.stages import StageSpec

PLD = "pld"


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # legend text
    color: str  # matplotlib colour of its points
    marker: str  # matplotlib marker of its points
    # which stage labels this method's crops, from those planned so far (the teacher, then the
    # students in order); None: no teacher, the clips' own labels
    teacher: Callable[[Sequence["StageSpec"]], str] | None = None

    @property
    def is_baseline(self) -> bool:
        return self.name != PLD

    def teacher_of(self, planned: Sequence["StageSpec"]) -> str | None:
        return None if self.teacher is None else self.teacher(planned)


METHODS: Registry[Method] = Registry("method", plugins="pld.methods")


def register_method(method: Method) -> Method:
    return METHODS.register(method.name)(method)


def get_method(name: str) -> Method:
    return METHODS.get(name)


def methods() -> list[Method]:
    """Every registered method, in registration order (pld first, then the built-in baselines)."""
    return [METHODS.get(name) for name in METHODS.names(ordered=True)]


def baselines() -> list[str]:
    return [m.name for m in methods() if m.is_baseline]


register_method(Method(PLD, "PLD (teacher → students)", "tab:blue", "o", teacher=lambda planned: planned[-1].name))
register_method(Method("direct", "direct (clip labels)", "tab:red", "s"))
register_method(Method("one_shot", "one-shot (teacher labels)", "tab:green", "^",
                       teacher=lambda planned: planned[0].name))
