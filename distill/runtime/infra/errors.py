"""Errors a user can act on: a failed step of a chain named with its stage, its step and the
path; a full disk named with the storage root, the space left and the command that resumes; an
object store or tracking server that stopped answering, named with the command that resumes."""

from __future__ import annotations

import errno
import re
import shutil
from contextlib import contextmanager
from typing import Iterator

NO_SPACE = re.compile(r"no space left on device|\[errno 28\]", re.IGNORECASE)
# what pyarrow's S3 client (the AWS SDK) says when the endpoint refuses, drops or does not answer
STORE_DOWN = re.compile(r"AWS Error (NETWORK_CONNECTION|SERVICE_UNAVAILABLE|SLOW_DOWN|REQUEST_TIMEOUT)"
                        r"|curlCode: (6|7|28|52|55|56)\b|Could not connect to server", re.IGNORECASE)


class StepError(RuntimeError):
    """A step of a chain failed on a file or the disk; the message says which, where and what to do."""


class ResourceWaitTimeout(RuntimeError):
    """The cluster did not place a stage's training workers within train.resource_wait_s."""


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
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "controller_failure", None)]
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


def step_error_within(exc: BaseException) -> StepError | None:
    """A StepError that a later error (say, MLflow failing to close the run it ended) hid."""
    return next((e for e in _chain(exc) if isinstance(e, StepError)), None)


REFUSED = ("UNAUTHENTICATED", "PERMISSION_DENIED")  # MLflow's error codes for HTTP 401 and 403


def tracking_refused(exc: BaseException) -> BaseException | None:
    """The tracking server's refusal (wrong or missing credentials, or no permission), if that is what failed."""
    return next((e for e in _chain(exc) if getattr(e, "error_code", None) in REFUSED), None)


def find_run(client, run_id: str):
    """``client.get_run(run_id)``, or a ValueError saying the run is not in this store and how to
    point at the right one. A refusal (credentials) is not a missing run: it propagates as is,
    and cli.py says which credentials to set."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if tracking_refused(exc):
            raise
        raise ValueError(f"run {run_id!r} not found in the tracking store {client.tracking_uri}; pass --tracking-uri "
                         "(or set MLFLOW_TRACKING_URI) to the store the chain used") from None


def tracking_unreachable(exc: BaseException) -> bool:
    """The tracking server did not answer within the client's retries."""
    return not tracking_refused(exc) and any(
        type(e).__name__ in ("ConnectionError", "MaxRetryError", "NewConnectionError")
        or (type(e).__name__ == "MlflowException" and "API request to" in str(e)) for e in _chain(exc))


def refused_message(exc: BaseException) -> str:
    """One line for a refusal: which server, why, and what to set (never the password)."""
    import os
    import re

    import mlflow

    from distill.credentials import TRACKING_CREDENTIALS

    refusal = tracking_refused(exc)
    endpoint = re.search(r"endpoint (\S+)", str(refusal))
    where = f"the tracking server {mlflow.get_tracking_uri()}" + (f" ({endpoint.group(1)})" if endpoint else "")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if refusal.error_code == "UNAUTHENTICATED":
        who = (f"user {user!r} with the password given was not accepted" if user
               else "no credentials were given")
        return f"{where} refused the request (HTTP 401): {who}; set {TRACKING_CREDENTIALS}"
    return (f"{where} refused user {user!r} (HTTP 403, permission denied): ask the server's admin for EDIT permission "
            "on the experiment (tracking.experiment), or name an experiment of your own there")


def placement_timed_out(exc: BaseException) -> bool:
    """Ray Train gave up placing a worker group (its start timeout, not a training error)."""
    return any(type(e).__name__ == "WorkerGroupStartupTimeoutError" for e in _chain(exc))


def store_unreachable(exc: BaseException) -> str | None:
    """The object store's own words when it did not answer (also through Ray's wrapped errors)."""
    for e in _chain(exc):
        for line in str(e).splitlines():
            if STORE_DOWN.search(line):
                return line.strip()[:300]
    return None


def tracking_message(exc: BaseException, chain_run_id: str | None) -> str:
    import os

    import mlflow

    return (f"the tracking server {mlflow.get_tracking_uri()} did not answer within the retry budget "
            f"({os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '7')} retries, back-off factor "
            f"{os.environ.get('MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR', '2')} s: tracking.max_retries, "
            "tracking.backoff_factor); start it again"
            + (f", then finish the chain with: pld resume {chain_run_id}" if chain_run_id else ""))


@contextmanager
def step(stage: str, name: str, *, storage_root: object, chain_run_id: str):
    """Run one step of a stage; a full disk or a failed file operation becomes a ``StepError``.
    ``storage_root``: a ``StorageRoot`` or its location, named in the message."""
    try:
        yield
    except StepError:
        raise
    except Exception as exc:
        if any(NO_SPACE.search(str(e)) or (isinstance(e, OSError) and e.errno == errno.ENOSPC) for e in _chain(exc)):
            raise StepError(f"stage {stage}, {name}: no space left on device under storage.root {storage_root} "
                            f"({_free_mib(str(storage_root))}); free space there (or set storage.root to a larger disk "
                            f"for a new chain), then finish this one with: pld resume {chain_run_id}") from exc
        if isinstance(exc, ResourceWaitTimeout):
            raise StepError(f"stage {stage}, {name}: {exc}; then finish the chain with: pld resume {chain_run_id}") from exc
        if reason := store_unreachable(exc):
            raise StepError(f"stage {stage}, {name}: the object store of storage.root {storage_root} did not answer "
                            f"({reason}); once it answers again, finish the chain with: pld resume {chain_run_id} "
                            "(finished stages and sealed datasets are reused)") from exc
        if tracking_refused(exc):
            raise StepError(f"stage {stage}, {name}: {refused_message(exc)}; then finish the chain with: "
                            f"pld resume {chain_run_id}") from exc
        if tracking_unreachable(exc):
            raise StepError(f"stage {stage}, {name}: {tracking_message(exc, chain_run_id)}") from exc
        if isinstance(exc, OSError):
            raise StepError(f"stage {stage}, {name}: {describe_os_error(exc)}") from exc
        raise
