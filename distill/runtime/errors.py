"""Errors a user can act on: a failed step of a chain named with its stage, its step and the
path, and a full disk named with the storage root, the space left and the command that resumes."""

from __future__ import annotations

import errno
import re
import shutil
from contextlib import contextmanager
from typing import Iterator

NO_SPACE = re.compile(r"no space left on device|\[errno 28\]", re.IGNORECASE)


class StepError(RuntimeError):
    """A step of a chain failed on a file or the disk; the message says which, where and what to do."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes, and what Ray wrapped (a remote task's or a training run's error)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
        todo += [x for x in getattr(e, "args", ()) if isinstance(x, BaseException)]


def _free_mib(path: str) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2 ** 20:.0f} MiB free"
    except OSError:
        return "free space unknown"


def describe_os_error(exc: BaseException) -> str:
    """One line: the OS's reason and the path it concerns (or that the error named none)."""
    os_error = next((e for e in _chain(exc) if isinstance(e, OSError) and (e.errno or e.filename)), None)
    if os_error is None:
        return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    paths = [p for p in (os_error.filename, getattr(os_error, "filename2", None)) if p]
    reason = os_error.strerror or errno.errorcode.get(os_error.errno or 0, type(os_error).__name__)
    return (f"{reason}: {' → '.join(map(str, paths))}" if paths
            else f"{reason} (the error names no file; run with --verbose for the traceback)")


@contextmanager
def step(stage: str, name: str, *, storage_root: str, chain_run_id: str):
    """Run one step of a stage; a full disk or a failed file operation becomes a ``StepError``."""
    try:
        yield
    except StepError:
        raise
    except Exception as exc:
        if any(NO_SPACE.search(str(e)) or (isinstance(e, OSError) and e.errno == errno.ENOSPC) for e in _chain(exc)):
            raise StepError(f"stage {stage}, {name}: no space left on device under storage.root {storage_root} "
                            f"({_free_mib(storage_root)}); free space there (or set storage.root to a larger disk "
                            f"for a new chain), then finish this one with: pld resume {chain_run_id}") from exc
        if isinstance(exc, OSError):
            raise StepError(f"stage {stage}, {name}: {describe_os_error(exc)}") from exc
        raise
