"""Connecting to Ray and MLflow, quietly by default."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from distill.config import ExperimentConfig


def tracking_uri(cfg: ExperimentConfig, override: str | None = None) -> str:
    """--tracking-uri, then the config, then $MLFLOW_TRACKING_URI, then ./mlflow.db.

    A local default is made absolute so Ray workers (other cwd) write to the same store."""
    uri = override or cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path('mlflow.db').resolve()}"
    if "://" not in uri:  # a bare path means a local file store
        return Path(uri).resolve().as_uri()
    return uri


def quiet_logs() -> None:
    """Keep Ray's and MLflow's INFO chatter out of the way; progress bars stay."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.util").setLevel(logging.ERROR)  # deprecation notes of Ray's own internals
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def quiet_worker() -> None:
    """worker_process_setup_hook: the same quiet logging in every Ray worker process."""
    for name in ("ray.data", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def init_ray(cfg: ExperimentConfig, address: str | None = None, verbose: bool = False) -> None:
    import ray
    import ray.data

    if not verbose:
        quiet_logs()
    if ray.is_initialized():
        return
    address = address or cfg.ray.address or os.environ.get("RAY_ADDRESS")
    # Worker output (Ray's and libraries' chatter) stays in Ray's log files unless --verbose;
    # stage progress reaches the driver through a queue (see train.py), errors through exceptions.
    kwargs = dict(logging_level=logging.INFO if verbose else logging.WARNING, log_to_driver=verbose)
    if address is None:
        # A local Ray binds its dashboard (and the state API Ray Train relies on) to 127.0.0.1.
        kwargs["dashboard_host"] = "127.0.0.1"
        if cfg.ray.num_cpus:
            kwargs["num_cpus"] = cfg.ray.num_cpus
        if not verbose:
            kwargs["runtime_env"] = {"worker_process_setup_hook": "distill.runtime.session.quiet_worker"}
    ray.init(address=address, **{k: v for k, v in kwargs.items() if v is not None})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
