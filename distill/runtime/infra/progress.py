"""A heartbeat for a long step that prints nothing while it works (decoding the source,
relabelling, evaluating): a line every so often saying which step runs and for how long, so a
console that is quiet is never mistaken for a hang. A step shorter than the interval prints
nothing. Training has its own lines, one per epoch."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

EVERY_S = 20.0


@contextmanager
def heartbeat(say: Callable[[str], None], label: str, every_s: float = EVERY_S) -> Iterator[None]:
    """While the block runs, ``say`` "   LABEL: still running, N s" every ``every_s`` seconds."""
    done = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            say(f"   {label}: still running, {time.monotonic() - started:.0f} s")

    thread = threading.Thread(target=beat, name=f"pld-heartbeat-{label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
