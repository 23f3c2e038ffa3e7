"""pld submit's parts that need no cluster: its flags and its one-line refusals."""

from __future__ import annotations

import pytest

from distill.cli import main
from distill.runtime.infra.submit import parse_env, refusal_message


def test_env_flags_become_the_jobs_variables_and_a_bad_one_is_named():
    assert parse_env(["A=1", "URI=http://h:5000/x?a=b"]) == {"A": "1", "URI": "http://h:5000/x?a=b"}
    with pytest.raises(ValueError, match="--env NOEQUALS: expected NAME=VALUE"):
        parse_env(["NOEQUALS"])


def test_a_refusal_says_whether_a_token_was_given_and_what_to_set(monkeypatch):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    missing = refusal_message("http://h:8265", RuntimeError("Unauthorized: Missing authentication token"))
    assert "no token was given" in missing and missing.endswith("or RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "x" * 32)
    assert "it refused the token given" in refusal_message("http://h:8265", RuntimeError("Forbidden"))


def test_submit_without_a_command_or_with_a_missing_directory_is_one_line(capsys):
    assert main(["submit", "--address", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err.strip() == ("pld: error: pld submit: give the command after --, for example: "
                                               "pld submit -- pld run configs/x.yaml")
    assert main(["submit", "--address", "http://127.0.0.1:9", "--working-dir", "/no/such/dir", "--", "echo"]) == 2
    assert capsys.readouterr().err.strip() == "pld: error: --working-dir /no/such/dir: no such directory"
