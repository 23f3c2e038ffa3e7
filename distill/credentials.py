"""Credentials stay out of configs, command lines, logs and runs: a config is printed, logged
and shared, so a URI that carries a user name or password is refused, and credentials come
only from the environment."""

from __future__ import annotations

TRACKING_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_PASSWORD_FILE, "
                        "a file holding the password; or MLFLOW_TRACKING_TOKEN) in the environment")


def refuse_credentials(uri: str | None, where: str, variables: str) -> str | None:
    """``uri`` unless it carries a user name or password: a config is printed, logged and
    shared, so credentials come only from the environment (``variables``, named in the error)."""
    if uri and "://" in uri and split_credentials(uri)[1] is not None:
        raise ValueError(f"{where} holds a user name or password; credentials never go in a config or on the "
                         f"command line (both are printed and logged): remove them from the URI and set {variables}")
    return uri


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """(the URI without its user info, the user, the password) of a URL; the user and password
    are None when it has none."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri, None, None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return (urlunsplit(parts._replace(netloc=netloc)), unquote(parts.username or ""),
            None if parts.password is None else unquote(parts.password))
