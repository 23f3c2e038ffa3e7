"""The pre-flight resource check's arithmetic (Ray places each bundle on one node), and where a
tracking URI's credentials go."""

from __future__ import annotations

import os

import pytest

from distill.runtime.infra.session import bundles_that_fit, largest_node


def test_bundles_fit_per_node_not_per_cluster_total():
    two_small = [{"CPU": 1.0}, {"CPU": 1.0}]
    assert bundles_that_fit({"CPU": 2}, two_small) == 0  # 2 CPUs in total, none on one node
    assert bundles_that_fit({"CPU": 1}, two_small) == 2
    assert bundles_that_fit({"CPU": 0.5}, [{"CPU": 2.0}]) == 4
    gpu_node, cpu_node = {"CPU": 8.0, "GPU": 2.0}, {"CPU": 16.0}
    assert bundles_that_fit({"CPU": 1, "GPU": 1}, [gpu_node, cpu_node]) == 2  # the GPUs bound it
    assert bundles_that_fit({"CPU": 1}, []) == 0
    assert largest_node([cpu_node, gpu_node]) == cpu_node and largest_node([]) == {}


def test_credentials_in_the_environments_uri_move_to_the_clients_variables_and_elsewhere_are_refused(monkeypatch):
    from distill.credentials import split_credentials
    from distill.runtime.infra.session import resolve_tracking_uri

    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_PASSWORD_FILE"):
        monkeypatch.setenv(var, "-")  # recorded, so what the code under test sets is undone after it
        monkeypatch.delenv(var)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://pld:s%40cret@127.0.0.1:5000/base")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000/base"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "pld" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "s@cret"
    with pytest.raises(ValueError, match="^--tracking-uri holds a user name or password") as refused:
        resolve_tracking_uri("http://pld:other@127.0.0.1:5000/base")
    assert "other" not in str(refused.value)
    assert split_credentials("https://user@[::1]:8443/x") == ("https://[::1]:8443/x", "user", None)
    assert split_credentials("http://127.0.0.1:5000") == ("http://127.0.0.1:5000", None, None)


def test_quiet_logs_drop_the_false_hang_warning_and_keep_the_others(caplog):
    import logging

    from distill.runtime.infra.session import quiet_logs

    quiet_logs()
    quiet_logs()  # twice: one filter, not two
    log = logging.getLogger("ray.data.dataset")
    assert len(log.filters) == 1
    with caplog.at_level(logging.WARNING, logger="ray.data.dataset"):
        log.warning("Warning: The Ray cluster currently does not have any available CPUs. The Dataset job will hang "
                    "unless more CPUs are freed up.")
        log.warning("Some other warning")
    assert [r.getMessage() for r in caplog.records] == ["Some other warning"]
    caplog.clear()
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    assert len(auth.filters) == 1
    with caplog.at_level(logging.WARNING, logger=auth.name):  # the token in use is news; an open cluster is not
        auth.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        auth.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    assert [r.getMessage()[:45] for r in caplog.records] == ["Token authentication is disabled for this Ray"]


def test_native_stderr_is_held_only_when_asked(capfd):
    from distill.runtime.infra.session import native_stderr_held

    with native_stderr_held(True):
        os.write(2, b"gcs_client.cc: InvalidAuthToken, retrying\n")  # as Ray's native code writes
    with native_stderr_held(False):
        os.write(2, b"shown\n")
    os.write(2, b"after\n")  # the descriptor is back
    assert capfd.readouterr().err == "shown\nafter\n"


def test_ray_data_progress_bars_only_when_verbose():
    import ray.data

    from distill.runtime.infra.session import configure_data

    configure_data()
    assert ray.data.DataContext.get_current().enable_progress_bars is False
    configure_data(progress_bars=True)
    assert ray.data.DataContext.get_current().enable_progress_bars is True
    configure_data()


def test_a_local_tracking_path_is_a_database_file_and_a_file_store_is_refused_unless_allowed(tmp_path, monkeypatch):
    """MLflow 3 refuses its file store (a directory of runs) with an exception from deep inside
    its client: a path ending in .db is an SQLite store; a directory is refused first, saying so."""
    from distill.runtime.infra.session import resolve_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD_FILE", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert resolve_tracking_uri("runs/mlflow.db") == f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    for uri in ("mlruns", f"file://{tmp_path}/mlruns", f"file:{tmp_path}/mlruns"):
        with pytest.raises(ValueError, match=r"^tracking URI file:.*mlruns: a directory is MLflow's file store.*"
                                             r"a path ending in \.db.*MLFLOW_ALLOW_FILE_STORE=true"):
            resolve_tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert resolve_tracking_uri("mlruns") == (tmp_path / "mlruns").as_uri()
