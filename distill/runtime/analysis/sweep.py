"""``pld sweep``: one PLD chain per grid point, each a Ray Tune trial, under one MLflow sweep run.

Every point is validated before anything starts (a typo in the 5th point should not surface
an hour in). Trials reserve no CPUs themselves: a chain's relabel tasks and training workers
ask the cluster for what they need, so concurrent trials share the cluster through Ray's
scheduler, and ``--max-concurrent`` bounds how many chains are in flight. A trial that crashes
is reported as failed; the others run on.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Callable

import mlflow
import yaml

from distill.names import BEST_CHAIN, KIND, PROTOCOLS, SWEEP_POINT
from distill.config import ConfigError, ExperimentConfig, load_config
from distill.runtime.execution.tracking import format_table, use_experiment
from distill.runtime.infra.storage import StorageRoot



def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``KEY=[v1, v2, …]`` (YAML, never evaluated) → {key: values}."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        try:
            values = yaml.safe_load(text) if sep else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--grid {key}: not a YAML list ({str(exc).splitlines()[0]})") from None
        if not key or not isinstance(values, list) or not values:
            raise ConfigError(f"--grid expects KEY=[VALUE, …] with at least one value, got {item!r}")
        grid[key.strip()] = values
    if not grid:
        raise ConfigError("pld sweep needs at least one --grid KEY=[VALUE, …]")
    return grid


def sweeps_location(cfg: ExperimentConfig) -> str:
    """Where Tune keeps a sweep's trials: ``sweeps/`` under the storage root, a local path or a
    URI (Tune takes either)."""
    return StorageRoot.of(cfg.storage.root).join("sweeps")


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _trial(config: dict, *, configs: list[dict], tracking: str, sweep_run_id: str) -> None:
    """Runs inside a Tune trial actor: one whole chain, nested under the sweep's MLflow run."""
    from ray import tune

    from distill.runtime.execution.chain import run_chain
    from distill.runtime.infra.session import Services

    point = config["point"]
    cfg = ExperimentConfig.model_validate(configs[point])
    result = run_chain(cfg, Services(tracking=tracking), new=True,
                       tags={"mlflow.parentRunId": sweep_run_id, SWEEP_POINT: str(point)})
    final = next(r for r in result.rows if r["stage"] == f"student_{cfg.chain.lengths_ms[-1]}ms")
    tune.report({"chain_run_id": result.parent_run_id, "chain_seconds": result.seconds,
                 **{f"acc_{p}": final[f"acc_{p}"] for p in PROTOCOLS}})


def trial_rows(results, points: list[dict[str, Any]]) -> list[dict]:
    """One row per grid point from Tune's results: its values, ok or failed (with the error's
    last line), the chain run and the final student's accuracies."""
    rows = []
    for result in results:
        point = result.config["point"]
        row = {"point": point, **{k: json.dumps(v) for k, v in points[point].items()}}
        if result.error is not None:
            row.update(status="failed", error=str(result.error).strip().splitlines()[-1][:200])
        else:
            m = result.metrics
            row.update(status="ok", chain_run_id=m["chain_run_id"], **{f"acc_{p}": m[f"acc_{p}"] for p in PROTOCOLS})
        rows.append(row)
    return sorted(rows, key=lambda r: r["point"])


def run_sweep(config_path: str, overrides: dict[str, Any], grid: dict[str, list[Any]], *, tracking: str | None = None,
              address: str | None = None, max_concurrent: int = 1, verbose: bool = False,
              say: Callable[[str], None] = print) -> list[dict]:
    from ray import tune

    from distill.runtime.infra.session import check_resources, init_ray, tracking_uri

    points = grid_points(grid)
    configs = []
    for i, point in enumerate(points):
        try:
            configs.append(load_config(config_path, {**overrides, **point}))
        except ConfigError as exc:
            raise ConfigError(f"grid point {i} {point}: {exc}") from None
    base = configs[0]
    uri = tracking_uri(base, tracking)
    init_ray(base, address, verbose=verbose)
    for note in {note for cfg in configs for note in check_resources(cfg)}:
        say(note)
    mlflow.set_tracking_uri(uri)
    use_experiment(base.tracking.experiment)
    storage = sweeps_location(base)
    with mlflow.start_run(run_name=f"{base.name}-sweep", tags={KIND: "sweep"}) as sweep:
        mlflow.log_params({"grid": json.dumps(grid), "points": len(points), "max_concurrent": max_concurrent})
        mlflow.log_dict(base.model_dump(mode="json"), "base_config.yaml")
        say(f"sweep run {sweep.info.run_id}: {len(points)} chains, at most {max_concurrent} at a time")
        trainable = tune.with_resources(
            # the resolved URI; credentials reach the trials through the environment their workers inherit
            tune.with_parameters(_trial, configs=[c.model_dump(mode="json") for c in configs], tracking=uri,
                                 sweep_run_id=sweep.info.run_id),
            # no CPU for the trial itself (its chain asks for what it needs); Tune wants a non-empty request
            {"CPU": 0, "memory": 64 * 1024**2})
        tuner = tune.Tuner(
            trainable, param_space={"point": tune.grid_search(list(range(len(points))))},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(name=f"{base.name}-{sweep.info.run_id}", storage_path=storage, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)))
        rows = trial_rows(tuner.fit(), points)
        done = [r for r in rows if r["status"] == "ok"]
        best = max(done, key=lambda r: r["acc_stream"]) if done else None
        columns = ["point", *grid, "status", "acc_window", "acc_stream", "acc_center", "chain_run_id"]
        table = format_table(rows, columns)
        mlflow.log_text(format_table(rows, columns, markdown=True), "sweep.md")
        mlflow.log_metrics({"trials_ok": len(done), "trials_failed": len(rows) - len(done)})
        if best:
            mlflow.log_metric("best_acc_stream", best["acc_stream"])
            mlflow.set_tag(BEST_CHAIN, best["chain_run_id"])
    say("\n" + table)
    for r in rows:
        if r["status"] == "failed":
            say(f"point {r['point']} failed: {r['error']}")
    if best:
        say("best (final student, stream protocol): point " + str(best["point"]) + " "
            + ", ".join(f"{k}={best[k]}" for k in grid) + f" → acc_stream {best['acc_stream']:.4f} "
            f"(chain {best['chain_run_id']})")
    say(f"sweep run id: {sweep.info.run_id}")
    return rows
