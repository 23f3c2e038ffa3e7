"""``pld submit``: a command run as a Ray job on a cluster, through its job server (the
dashboard's port), with what it prints followed on the console and its end as the exit code.

The same as ``ray job submit``, except at the door: a cluster with token authentication that
turns this submission away (no token, a wrong one), a server that does not answer, or a job
that fails, each ends in one line saying what to do, not in Ray's traceback.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

POLL_S = 1.0
# what a driver (session.not_joined_message) or a submission without the cluster's token must do
TOKEN_HELP = ("set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (a file holding the cluster's token) or "
              "RAY_AUTH_TOKEN")


def add_submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
                        help="the cluster's job server (default: $RAY_API_SERVER_ADDRESS, else http://127.0.0.1:8265)")
    parser.add_argument("--working-dir", help="a directory uploaded for the job, its working directory (the checkout)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the job (MLFLOW_TRACKING_URI=..., for example)")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return; do not follow it")
    parser.add_argument("entrypoint", nargs=argparse.REMAINDER,
                        help="-- then the command, for example: -- pld run configs/x.yaml")


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``--env NAME=VALUE`` flags as a dict; a flag without ``=`` is one clear error."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env {pair}: expected NAME=VALUE")
        out[key] = value
    return out


class SubmitError(RuntimeError):
    """A submission refused or a job that did not succeed, in one line."""


def refusal_message(address: str, exc: BaseException) -> str:
    """One line for a job server that turned the submission away: which, why, and what to set."""
    text = str(exc)
    token_given = os.environ.get("RAY_AUTH_MODE") == "token" and bool(
        os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"))
    why = ("it refused the token given (a wrong token, or a cluster of another Ray version)"
           if token_given or "Invalid authentication token" in text else
           "no token was given, and a cluster with token authentication refuses a submission without one")
    return f"the Ray job server at {address} did not accept this submission: {why}; {TOKEN_HELP}"


def _client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except AuthenticationError as exc:
        raise SubmitError(refusal_message(address, exc)) from None
    except ConnectionError as exc:
        raise SubmitError(f"the Ray job server at {address} did not answer ({str(exc).splitlines()[0][:200]}); "
                          "check --address (the dashboard's http://HOST:8265) and that the cluster is up") from None


def submit(entrypoint: list[str], address: str, *, working_dir: str | None = None, env: dict[str, str] | None = None,
           wait: bool = True, say: Callable[[str], None] = print) -> str:
    """Submit ``entrypoint`` (a command and its arguments) as a job; with ``wait``, print its
    output as it comes and raise ``SubmitError`` unless it succeeds. Returns the job's id."""
    import shlex

    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus

    if not entrypoint:
        raise ValueError("pld submit: give the command after --, for example: pld submit -- pld run configs/x.yaml")
    if working_dir is not None and not Path(working_dir).is_dir():
        raise FileNotFoundError(f"--working-dir {working_dir}: no such directory")
    client = _client(address)
    runtime_env = {k: v for k, v in (("working_dir", working_dir), ("env_vars", env or None)) if v}
    try:
        job_id = client.submit_job(entrypoint=shlex.join(entrypoint), runtime_env=runtime_env or None)
    except AuthenticationError as exc:
        raise SubmitError(refusal_message(address, exc)) from None
    say(f"job {job_id} submitted to {address}")
    if not wait:
        return job_id
    shown = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            say(logs[shown:].rstrip("\n"))
            shown = len(logs)
        if status.is_terminal():
            break
        time.sleep(POLL_S)
    if status != JobStatus.SUCCEEDED:
        message = (client.get_job_info(job_id).message or "").strip().splitlines()
        raise SubmitError(f"job {job_id} {status.value.lower()}" + (f": {message[-1]}" if message else "")
                          + f" (its whole log: ray job logs --address {address} {job_id})")
    say(f"job {job_id} succeeded")
    return job_id
