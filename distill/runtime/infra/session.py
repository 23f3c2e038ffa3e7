"""Connecting to Ray and MLflow, quietly by default."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from distill.config import ExperimentConfig
from distill.credentials import TRACKING_CREDENTIALS, refuse_credentials, split_credentials
from distill.runtime.infra.submit import TOKEN_HELP


@dataclass(frozen=True)
class Services:
    """The MLflow store and the Ray cluster a command uses, as its command line names them
    (None: the config's, then the environment's, then a local one), and whether their own
    console output is shown (``--verbose``)."""

    tracking: str | None = None
    address: str | None = None
    verbose: bool = False


def tracking_uri(cfg: ExperimentConfig, override: str | None = None) -> str:
    """--tracking-uri, then the config, then $MLFLOW_TRACKING_URI, then ./mlflow.db; also sets the
    client's retry budget for a tracking server that does not answer (``tracking.max_retries``,
    ``tracking.backoff_factor``; the environment's MLflow variables unless the config sets them).

    A local default is made absolute so Ray workers (other cwd) write to the same store."""
    for field, var in (("max_retries", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"),
                       ("backoff_factor", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")):
        if field in cfg.tracking.model_fields_set or var not in os.environ:
            os.environ[var] = str(getattr(cfg.tracking, field))
    return resolve_tracking_uri(override or cfg.tracking.uri)


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri`` (--tracking-uri or tracking.uri), else $MLFLOW_TRACKING_URI, else
    sqlite:///<absolute>/mlflow.db. Credentials come only from the environment: a password in
    ``uri`` is refused; one in $MLFLOW_TRACKING_URI moves to the variables MLflow's client reads
    (MLFLOW_TRACKING_USERNAME / _PASSWORD), as does the file $MLFLOW_TRACKING_PASSWORD_FILE names,
    so that no message, param or artifact that names the server carries them."""
    read_password_file()
    if uri:
        refuse_credentials(uri, "--tracking-uri", TRACKING_CREDENTIALS)
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{Path('mlflow.db').resolve()}"
    if "://" not in uri and not uri.startswith("file:"):  # a bare path: a local store
        path = Path(uri).expanduser().resolve()
        uri = f"sqlite:///{path}" if path.suffix == ".db" else path.as_uri()
    if uri.startswith("file:"):
        return _file_store(uri)
    clean, user, password = split_credentials(uri)
    if user is not None:
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
        if password is not None:
            os.environ["MLFLOW_TRACKING_PASSWORD"] = password
    return clean


def _file_store(uri: str) -> str:
    """MLflow's file store (a directory of runs), which MLflow 3 refuses unless
    $MLFLOW_ALLOW_FILE_STORE is true: refused here first, saying what to use instead."""
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1"):
        return uri
    raise ValueError(f"tracking URI {uri}: a directory is MLflow's file store, which MLflow no longer develops and "
                     "refuses by default; track to a database file instead (a path ending in .db, e.g. "
                     "--tracking-uri mlflow.db, or sqlite:///ABSOLUTE/PATH/mlflow.db), or set "
                     "MLFLOW_ALLOW_FILE_STORE=true to use the file store anyway")


PASSWORD_FILE = "MLFLOW_TRACKING_PASSWORD_FILE"


def read_password_file() -> None:
    """The tracking password from the file $MLFLOW_TRACKING_PASSWORD_FILE names (a mounted
    secret), into MLFLOW_TRACKING_PASSWORD for MLflow's client, unless that is set already."""
    path = os.environ.get(PASSWORD_FILE)
    if not path or os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return
    try:
        password = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{PASSWORD_FILE}={path}: cannot read the tracking password from it "
                         f"({getattr(exc, 'strerror', None) or exc}); point it at a readable file holding only the "
                         "password") from None
    if not password:
        raise ValueError(f"{PASSWORD_FILE}={path}: the file is empty; write the tracking password into it")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = password


class _DropMessages(logging.Filter):
    """Drops the records whose message contains one of ``fragments``."""

    def __init__(self, *fragments: str) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


# Ray Data warns that a job "will hang" when, at the moment a dataset starts, every CPU is held:
# in a chain that is the last relabel tasks giving their CPUs back, never a job waiting for
# a CPU nothing frees (the resource check refuses plans the cluster cannot place, before any work).
_NOT_A_HANG = _DropMessages("does not have any available CPUs. The Dataset job will hang")
# Ray ≥ 2.52 says on every start that it found a token in ~/.ray and uses it: news only with
# --verbose. Its warning that authentication is *disabled* stays.
_TOKEN_IN_USE = _DropMessages("Token authentication is enabled for this Ray cluster")
_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def quiet_logs() -> None:
    """Keep Ray's and MLflow's INFO chatter, and warnings that are wrong for the platform's own
    plan, out of the way (``--verbose`` shows them)."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.util").setLevel(logging.ERROR)  # deprecation notes of Ray's own internals
    # A failed task's traceback, logged before the exception reaches pld (which names the stage,
    # step and path in one line); --verbose shows it, with pld's own traceback.
    for name in ("ray.data._internal.execution.streaming_executor_state", "ray.data.exceptions"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
    # Tune's result files are off (above: pld sweep reads each trial's result from Tune itself), so
    # its warning after a sweep that it found no result.json for any trial is noise
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    for name, drop in (("ray.data.dataset", _NOT_A_HANG), (_AUTH_LOGGER, _TOKEN_IN_USE)):
        if drop not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(drop)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def init_ray(cfg: ExperimentConfig, address: str | None = None, verbose: bool = False) -> None:
    import ray
    import ray.data

    # Ray Train's controller notices a finished or failed worker group at this poll interval
    # (default 2 s); stages are short, so poll faster — a speed setting, verbose or not.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    if not verbose:
        quiet_logs()
    if ray.is_initialized():  # inside a Tune trial or a test: the process's own Data settings still apply
        configure_data(progress_bars=verbose)
        return
    address = cfg.ray.resolved_address(address)
    # Worker output (Ray's and libraries' chatter) stays in Ray's log files unless --verbose;
    # stage progress reaches the driver through a queue (see train.py), errors through exceptions.
    kwargs = dict(logging_level=logging.INFO if verbose else logging.WARNING, log_to_driver=verbose)
    if address is None:
        # A local Ray binds its dashboard (and the state API Ray Train relies on) to 127.0.0.1.
        kwargs["dashboard_host"] = "127.0.0.1"
        # Ray Train starts a PreemptionWatcher actor — one more process — for every fit, to poll for
        # nodes being drained by an autoscaler; a local Ray has no such nodes.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        if cfg.ray.num_cpus:
            kwargs["num_cpus"] = cfg.ray.num_cpus
        if not verbose:
            kwargs["runtime_env"] = {"worker_process_setup_hook": "distill.runtime.infra.quiet.quiet_worker"}
        # Relabel tasks run in Ray's pooled worker processes, which keep torch imported and the
        # teacher cached. While a stage trains, Ray Train's actors (controller, workers, helpers)
        # push the process count over Ray's soft limit (num_cpus) and the idle pooled workers are
        # killed after 1 s, so every relabel started cold again. A higher soft limit keeps them.
        kwargs["_system_config"] = {"num_workers_soft_limit": int(cfg.ray.num_cpus or os.cpu_count() or 1) + 8}
    if address is not None and (problem := not_listening(address)):
        raise ConnectionError(problem)  # at once: Ray itself would wait over two minutes
    try:
        # joining a cluster that refuses the token, Ray's core worker writes ~25 retry lines to
        # the process's stderr before it gives up: kept out of the console unless --verbose
        with native_stderr_held(address is not None and not verbose):
            ray.init(address=address, **{k: v for k, v in kwargs.items() if v is not None})
    except ConnectionError:
        if address is None:
            raise
        raise ConnectionError(not_joined_message(address)) from None
    configure_data(progress_bars=verbose)


@contextmanager
def native_stderr_held(hold: bool):
    """While ``hold``, what anything in this process writes to file descriptor 2 (Python and
    native code alike) goes to a temporary file, dropped afterwards. Only around joining a
    remote cluster: a local Ray starts its own processes, which would inherit the file."""
    if not hold:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def not_listening(address: str) -> str | None:
    """Why nothing at ``address`` (host:port of a GCS) can be a cluster, or None if something listens."""
    import socket

    if address == "auto" or address.startswith("ray://"):
        return None  # Ray finds the local cluster itself; a Ray Client server speaks another protocol
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except (OSError, ValueError):
        return (f"ray.address {address}: no Ray cluster answers there; start it (ray start --head) or fix "
                "--address / ray.address / RAY_ADDRESS")
    return None


def not_joined_message(address: str) -> str:
    """Why ``ray.init(address)`` failed though something listens there: on a cluster with token
    authentication, a missing or wrong token."""
    mode = os.environ.get("RAY_AUTH_MODE")
    default = Path.home() / ".ray" / "auth_token"  # Ray sends it when RAY_AUTH_MODE is unset (Ray ≥ 2.52)
    if mode == "token" and (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        given = "the token given"
    elif mode in (None, "token") and default.is_file():
        given = f"the token in {default}"
    else:
        given = None
    return (f"the Ray cluster at {address} answers but did not let this driver in: "
            + (f"it refused {given} (a wrong token, or a cluster of another Ray version)" if given
               else "no token was given, and a cluster with token authentication refuses a driver without one")
            + f"; {TOKEN_HELP}")


def configure_data(progress_bars: bool = False) -> None:
    """Ray Data settings of this process (a DataContext is per process: Tune trials need them too).
    Its progress bars (a bar per Parquet read's sampling, per relabel) only with ``--verbose``:
    the console shows the chain's own lines."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = progress_bars
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    # Rows leave every Ray Data stage in the order they entered it, so the same config and seed
    # give the same Parquet row order and, with it, the same training batches
    # (docs/reliability.md: reproducibility). The cost is a little buffering; nothing here is large.
    ctx.execution_options.preserve_order = True
    # The V1 Parquet reader: V2 starts fresh FooterReader processes on every read (docs/design-notes.md);
    # RAY_DATA_USE_DATASOURCE_V2=1 opts back in.
    ctx.use_datasource_v2 = os.environ.get("RAY_DATA_USE_DATASOURCE_V2", "0") not in ("0", "false", "False")
    # A floor of 1 read block instead of 200 tiny ones: Ray's other rules size them (docs/design-notes.md).
    ctx.read_op_min_num_blocks = 1


def bundles_that_fit(bundle: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many copies of a resource bundle the nodes can hold, each copy on one node."""
    return sum(int(min(node.get(k, 0) // v for k, v in bundle.items() if v > 0)) for node in nodes) if nodes else 0


def largest_node(nodes: list[dict[str, float]]) -> dict[str, float]:
    return max(nodes, key=lambda n: (n.get("CPU", 0), n.get("GPU", 0)), default={})


def describe_resources(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU") if k == "CPU" or resources.get(k))


def describe_nodes(nodes: list[dict[str, float]]) -> str:
    return "; ".join(describe_resources(n) for n in nodes) or "none"


def alive_nodes() -> list[dict[str, float]]:
    """The resources of each live node of the connected Ray cluster."""
    import ray

    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def check_resources(cfg: ExperimentConfig) -> list[str]:
    """Refuse, before any work, a config the cluster cannot place (Ray would wait forever). On an
    autoscaling cluster (``ray.autoscaling``) a training worker no node holds yet is let through;
    the returned notes say so, and each stage waits for it at most ``train.resource_wait_s``."""
    import ray

    from distill.config import ConfigError

    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    nodes = alive_nodes()
    # GPUs first: on a cluster without enough, the per-node checks below would blame the CPUs
    if cfg.train.use_gpu and cfg.train.num_workers > gpus and not cfg.ray.autoscaling:
        raise ConfigError(f"train.use_gpu: {cfg.train.num_workers} worker(s) need a GPU each, but the cluster has "
                          f"{gpus:g}; set train.use_gpu: false or add GPU nodes")
    if cfg.relabel.gpus_per_actor and cfg.relabel.actors * cfg.relabel.gpus_per_actor > gpus:
        raise ConfigError(f"relabel.gpus_per_actor: the actors need "
                          f"{cfg.relabel.actors * cfg.relabel.gpus_per_actor:g} GPUs, the cluster has {gpus:g}; set "
                          "relabel.gpus_per_actor: 0 (the teacher runs on CPUs) or add GPU nodes")
    worker = {"CPU": cfg.train.cpus_per_worker, **({"GPU": 1} if cfg.train.use_gpu else {})}
    fits = bundles_that_fit(worker, nodes)
    notes = []
    if fits < cfg.train.num_workers:  # Ray places each worker's bundle on one node: totals are not enough
        problem = (f"a worker needs {describe_resources(worker)} on one node and {cfg.train.num_workers} such worker(s) are "
                   f"asked, but the cluster's nodes hold {fits} (largest node: {describe_resources(largest_node(nodes))})")
        if not cfg.ray.autoscaling:
            raise ConfigError(f"train: {problem}; lower train.cpus_per_worker or train.num_workers "
                              "(or set ray.autoscaling: true if the cluster adds nodes)")
        notes.append(f"ray.autoscaling: {problem} yet; each stage waits for them at most "
                     f"{cfg.train.resource_wait_s:g} s (train.resource_wait_s)")
    train_cpus = cfg.train.num_workers * cfg.train.cpus_per_worker
    if train_cpus > cpus and not cfg.ray.autoscaling:
        raise ConfigError(f"train.num_workers × train.cpus_per_worker = {train_cpus:g} CPUs, but the cluster has "
                          f"{cpus:g}; lower them")
    relabel_cpus = cfg.relabel.actors * cfg.relabel.cpus_per_actor
    if relabel_cpus >= cpus:
        raise ConfigError(f"relabel.actors × relabel.cpus_per_actor = {relabel_cpus:g} CPUs leaves none of the cluster's "
                          f"{cpus:g} for reading and cropping; lower them")
    relabel = {"CPU": cfg.relabel.cpus_per_actor, **({"GPU": cfg.relabel.gpus_per_actor}
                                                     if cfg.relabel.gpus_per_actor else {})}
    if not bundles_that_fit(relabel, nodes):
        raise ConfigError(f"relabel: a teacher task needs {describe_resources(relabel)} on one node, but no node has them "
                          f"(largest node: {describe_resources(largest_node(nodes))}); lower relabel.cpus_per_actor")
    return notes
