"""What a stage pays to start, in each runner, with one and several workers.

    python benchmarks/stage_startup.py [--workers 1,2] [--repeats 3] [--json OUT]

On a one-node cluster without GPUs, one worker trains in the driver (Ray Train's local mode,
``train.runner: auto``), or in one actor started for the stage where the driver is itself an actor
(a pld sweep's Tune trial); several workers train in as many actors, each running the local mode,
joined in one process group (``runner: actor``). Anything else trains in a Ray Train worker group,
for which Ray Train V2 starts a controller, an actor per worker and three helpers
(PlacementGroupCleaner, SynchronizationActor, DatasetManager), each a new Python process, at every
``fit()``. This times a loop that trains nothing (it reads one batch of its dataset shard,
all-reduces one tensor and reports, as a stage's first epoch would), with a trainer built as
``train_stage`` builds a stage's, in a Ray that ``pld`` starts: from the start to the loop's first
line, and from the loop's return to the runner returning. The local mode, the actors
(``_InAnActor``, the platform's runner, from their creation to rank 0's result) and the worker
groups take turns, after one untimed run of each kind. Then, in a second Ray with Python's import
profiler on in every worker process (``PYTHONPROFILEIMPORTTIME``), one worker group's fit per
worker count, and the seconds each of its processes spent importing, read from Ray's worker logs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import ray
import ray.data
import ray.train
from ray.train import DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Queue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from distill.config import TrainConfig, load_config  # noqa: E402
from distill.runtime.execution.train import _InAnActor, dataset_shard, save_local_checkpoint  # noqa: E402
from distill.runtime.infra.session import init_ray  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"


def idle_loop(config: dict) -> dict:
    """A stage's loop without its epochs: the shard's first batch, one all-reduce, one report (and,
    run by ``runner: actor``, rank 0's checkpoint, which the runner reads back)."""
    import time

    import torch

    started = time.time()
    ctx = ray.train.get_context()
    for _ in dataset_shard(config).iter_torch_batches(batch_size=64):
        break
    if ctx.get_world_size() > 1:
        import torch.distributed as dist

        dist.all_reduce(torch.ones(1))
    if config.get("checkpoint_dir") and ctx.get_world_rank() == 0:
        with tempfile.TemporaryDirectory() as empty:
            save_local_checkpoint(empty, config["checkpoint_dir"], 0)
    ray.train.report({"epoch": 0})
    return {"loop_started": started, "loop_ended": time.time()}


def idle_trainer(workers: int, dataset, storage: str, name: str, **loop_config) -> TorchTrainer:
    """``workers`` 0: Ray Train's local mode (the loop in this process)."""
    return TorchTrainer(
        idle_loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=name, storage_path=storage, logging_config=LoggingConfig(log_level="WARNING"),
                             failure_config=FailureConfig(max_failures=0, controller_failure_limit=0)),
        datasets=None if "shard" in loop_config else {"train": dataset},
        dataset_config=DataConfig(datasets_to_split="all" if workers > 1 else []))


def timed_fit(workers: int, dataset, storage: str, name: str) -> dict:
    """One ``fit()`` of a worker group, or of the local mode in the driver (``workers`` 0)."""
    trainer = idle_trainer(workers, dataset, storage, name)
    started = time.time()
    loop = trainer.fit().return_value
    ended = time.time()
    return {"fit_s": ended - started, "to_loop_s": loop["loop_started"] - started,
            "after_loop_s": ended - loop["loop_ended"]}


def timed_actors_fit(workers: int, dataset, storage: str, name: str, progress: Queue) -> dict:
    """``train.runner: actor`` as a stage runs it: ``workers`` actors started on this node, each
    running the local mode (several join one process group), from the runner's start to rank 0's
    result."""
    train = TrainConfig(num_workers=workers, cpus_per_worker=1, runner="actor", keep="average", max_failures=0)
    in_actors = _InAnActor(partial(idle_trainer, dataset=dataset, storage=storage, name=name),
                           f"{storage}/{name}-local", train, name, progress, dataset)
    started = time.time()
    loop, _ = in_actors.fit()
    ended = time.time()
    return {"fit_s": ended - started, "to_loop_s": loop["loop_started"] - started,
            "after_loop_s": ended - loop["loop_ended"]}


# --- Ray's worker logs: worker-<id>-<job>-<pid>.{out,err}; .out begins ":job_id:… :actor_name:X" ---

IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|")


def import_seconds(err_text: str) -> float:
    """Seconds a process spent importing, from ``-X importtime`` lines (the sum of their self times)."""
    return sum(int(m.group(1)) for line in err_text.splitlines() if (m := IMPORT_LINE.match(line))) / 1e6


def process_name(out_text: str) -> str | None:
    """The actor (or task) a worker process ran first, from its log's first line; None: none yet."""
    m = re.search(r":actor_name:(\S+)", out_text) or re.search(r":task_name:(\S+)", out_text)
    return m.group(1) if m else None


def import_profile(log_dir: Path, before: set[str]) -> list[dict]:
    """Each worker process whose log is not in ``before``: its name and its import seconds."""
    rows = []
    for err in sorted(log_dir.glob("worker-*.err")):
        if err.name in before:
            continue
        out = err.with_suffix(".out")
        name = process_name(out.read_text(errors="replace")) if out.exists() else None
        rows.append({"process": name or "(idle pooled worker)", "pid": int(err.stem.rsplit("-", 1)[-1]),
                     "import_s": import_seconds(err.read_text(errors="replace"))})
    return sorted(rows, key=lambda r: -r["import_s"])


def session_logs() -> Path:
    return Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"


def report(result: dict) -> str:
    lines = [f"A stage's runner, with a loop that trains nothing ({result['repeats']} runs each, medians; "
             f"{os.cpu_count()} cores, load {result['load_start']:.1f} at the start)", "",
             f"{'runner':<28}{'fit s':>8}{'to loop s':>11}{'after loop s':>14}   runs (fit s)"]
    for key, runs in result["fits"].items():
        med = {k: statistics.median(r[k] for r in runs) if k in runs[0] else None
               for k in ("fit_s", "to_loop_s", "after_loop_s")}
        cells = "".join(f"{'':>{w}}" if med[k] is None else f"{med[k]:>{w}.2f}"
                        for k, w in (("fit_s", 8), ("to_loop_s", 11), ("after_loop_s", 14)))
        lines.append(f"{key:<28}{cells}   " + " ".join(f"{r['fit_s']:.2f}" for r in runs))
    for key, prof in result["imports"].items():
        lines += ["", f"{key}, import profiler on (fit {prof['fit_s']:.2f} s): seconds each new process spent importing"]
        lines += [f"  {p['process']:<32}{p['import_s']:>6.2f}" for p in prof["processes"]]
        lines.append(f"  {'all of them':<32}{sum(p['import_s'] for p in prof['processes']):>6.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts of the worker groups timed (default 1,2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]
    cfg = load_config(CONFIG)
    storage = tempfile.mkdtemp(prefix="pld-startup-")
    result = {"repeats": args.repeats, "workers": counts, "load_start": os.getloadavg()[0], "fits": {}, "imports": {}}

    init_ray(cfg)
    dataset = ray.data.range(2048).materialize()
    progress = Queue(actor_options={"num_cpus": 0})
    timed_fit(1, dataset, storage, "warm-up")
    timed_actors_fit(max(counts), dataset, storage, "warm-up-actors", progress)
    runners = {"local (driver)": ("local", 0), **{f"actors of {n} (runner actor)": ("actor", n) for n in counts},
               **{f"worker group of {n}": ("workers", n) for n in counts}}
    for i in range(args.repeats):
        for key, (runner, n) in runners.items():
            fit = (timed_actors_fit(n, dataset, storage, f"r{i}-actors-{n}", progress) if runner == "actor"
                   else timed_fit(n, dataset, storage, f"r{i}-{n}"))
            result["fits"].setdefault(key, []).append(fit)
            print(f"{key}: {result['fits'][key][-1]['fit_s']:.2f} s", flush=True)
    ray.shutdown()

    os.environ["PYTHONPROFILEIMPORTTIME"] = "1"  # a new Ray's raylet, and so every worker process, inherits it
    try:
        init_ray(cfg)
    finally:
        del os.environ["PYTHONPROFILEIMPORTTIME"]
    dataset = ray.data.range(2048).materialize()
    timed_fit(1, dataset, storage, "warm-up")
    logs = session_logs()
    for n in counts:
        time.sleep(2)  # the last fit's processes have written their logs
        before = {p.name for p in logs.glob("worker-*.err")}
        fit = timed_fit(n, dataset, storage, f"profile-{n}")
        time.sleep(2)
        result["imports"][f"worker group of {n}"] = {**fit, "processes": import_profile(logs, before)}
    ray.shutdown()
    result["load_end"] = os.getloadavg()[0]

    print()
    print(report(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
