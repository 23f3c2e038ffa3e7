"""The heartbeat of a long, otherwise silent step."""

from __future__ import annotations

import time

import pytest

from distill.runtime.infra.progress import heartbeat


def test_a_long_step_says_it_is_still_running_and_a_short_one_says_nothing():
    lines: list[str] = []
    with heartbeat(lines.append, "student_500ms relabel", every_s=0.05):
        time.sleep(0.28)
    assert len(lines) >= 3 and all(line.startswith("   student_500ms relabel: still running, ") for line in lines)
    quiet: list[str] = []
    with heartbeat(quiet.append, "source decode", every_s=5):
        pass
    assert quiet == []


def test_the_heartbeat_stops_with_its_step_even_when_the_step_fails():
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), heartbeat(lines.append, "evaluate", every_s=0.05):
        time.sleep(0.12)
        raise RuntimeError("boom")
    seen = len(lines)
    time.sleep(0.2)
    assert seen >= 1 and len(lines) == seen  # nothing after the step ended
