"""The train step of a stage: one student (or the teacher, or a baseline) with Ray Train's ``TorchTrainer``.

Workers read their shard of the distilled dataset with ``get_dataset_shard``, validate every
epoch on their shard of the validation split at the stage's input length (stream protocol,
true labels, counts summed across workers), and report a checkpoint per epoch; the best one
on validation becomes the stage's model. The same code runs on CPUs and GPUs:
``prepare_model`` places the model and wraps it for DDP when there are several workers.

One CPU worker on a one-node cluster trains in the driver instead (``train.runner``: Ray Train's
local mode): the same loop, without starting a controller, a worker and three helper actors
(each a new process, 10-13 s a stage on 2 cores, docs/benchmarks.md), in the driver's own
thread while a helper thread hands the epochs' reports on (docs/design-notes.md: why). Where
the driver cannot run it (a pld sweep's Tune trial, whose process refuses ray.train's API), the
same local mode runs in one Ray actor started for the stage (``runner: actor``, about 3 s).
Several CPU workers on a one-node cluster train in as many actors, each running the local mode
with torchrun's variables, which join them in one gloo process group (two: 3.5 s against 12.3 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import ray
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from distill.config import EvalConfig, TrainConfig
from distill.core.checkpoint import SPEC, ModelSpec, load_model_dir, save_model_dir
from distill.core.crops import num_samples
from distill.runtime.infra import storage
from distill.runtime.infra.errors import ResourceWaitTimeout, placement_timed_out
from distill.runtime.execution.relabel import TRAIN_COLUMNS
from distill.stages import StageSpec

TRAIN_STATE = "train_state.pt"


def train_loop_per_worker(config: dict[str, Any]) -> list[dict]:
    """Runs on every Ray Train worker (or, runner local, in the driver): core/fit.py's loop, plus
    the dataset shard, the all-reduce of counts, a report and a checkpoint per epoch."""
    from distill.core.fit import (Validation, kept_model, load_fit_state, scored_epoch, start_fit, steps_per_epoch,
                                  train_epoch)

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    stage: StageSpec = config["stage"]
    train: TrainConfig = config["train"]
    torch.set_num_threads(max(1, int(train.cpus_per_worker)))
    torch.manual_seed(stage.seed + rank)
    device = ray.train.torch.get_device()

    spec = ModelSpec(**config["spec"])
    model = ray.train.torch.prepare_model(spec.build())
    augmentation = _augmentation(config, spec, train, device)
    epochs = stage.epochs
    fit = start_fit(model, train, epochs=epochs, steps_per_epoch=steps_per_epoch(config["rows"], world, train.batch_size),
                    device=device)
    state = _saved_train_state(config, device)
    if state:  # restarted after a failure: continue after the last reported epoch
        load_fit_state(fit, state)
    resumed_at = fit.start_epoch if state else None  # visible in progress reports: a restart did not start over

    shard = dataset_shard(config)
    # The validation split is small and fixed: each worker scores its every world-th clip.
    val_waves, val_labels = config["validation"]
    validation = Validation((val_waves[rank::world], val_labels[rank::world]), input_samples=stage.input_samples,
                            hop_samples=config["hop_samples"], silence_index=config["silence_index"],
                            batch_size=config["eval_batch_size"], device=device, precision=train.precision)

    for epoch in range(fit.start_epoch, epochs):
        started = time.perf_counter()
        batches = shard.iter_torch_batches(batch_size=train.batch_size, device=device,
                                           local_shuffle_buffer_size=min(config["rows"], 2048),
                                           local_shuffle_seed=stage.seed + 1000 * epoch + rank)
        total_loss, seen = train_epoch(fit, batches, stage, train, augmentation, epoch=epoch, rank=rank, device=device)
        kept = kept_model(fit, epoch, epochs, train.average_epochs)
        tensors = [torch.tensor([total_loss, float(seen)], dtype=torch.float64)]
        if scored_epoch(epoch, epochs, train.validate_every):
            counts = validation.counts(fit.net)
            tensors += [counts, validation.counts(kept) if kept is not fit.net else counts]
        losses, *scores = _summed_over_workers(tensors, world, device)
        metrics = {"epoch": epoch, "train_loss": float(losses[0] / max(losses[1], 1))}
        if scores:
            metrics["val_acc"] = float(scores[0][0] / max(scores[0][1], 1))
            if kept is not fit.net:  # the averaged weights, kept as the stage's model
                metrics["kept_val_acc"] = float(scores[1][0] / max(scores[1][1], 1))
        metrics["epoch_seconds"] = time.perf_counter() - started
        fit.history.append(metrics)
        _checkpoint_and_report(config, spec, fit, kept, metrics, rank=rank, world=world, resumed_at=resumed_at)
        if _stop_requested(config):  # runner local: the driver could not take this epoch's report
            break
    return fit.history


def dataset_shard(config: dict[str, Any]):
    """This worker's shard of the stage's dataset: Ray Train's, or, in one of several actors (runner
    actor), the one the driver cut for it (local mode with several processes takes no dataset)."""
    return config["shard"] if config.get("shard") is not None else ray.train.get_dataset_shard("train")


def _augmentation(config: dict[str, Any], spec: ModelSpec, train: TrainConfig, device):
    """The stage's augmentation on this worker's device: its noise and room banks when on."""
    from distill.core.fit import Augmentation

    active = train.augment.active
    return Augmentation(
        noise=config["noise"].to(device) if config["noise"] is not None and active else None,
        rooms=config["rooms"].to(device) if config.get("rooms") is not None and active else None,
        sample_rate=spec.features.get("sample_rate", 16000), hop_ms=spec.features.get("hop_ms", 10.0),
        n_mels=spec.features.get("n_mels", 40))


def _summed_over_workers(tensors: list[torch.Tensor], world: int, device) -> list[torch.Tensor]:
    """Each worker's counts summed over all workers, in one all-reduce (one worker: as they are)."""
    if world == 1:
        return tensors
    import torch.distributed as dist

    stats = torch.cat(tensors).to(device)
    dist.all_reduce(stats)
    return [part.cpu() for part in stats.split([len(t) for t in tensors])]


def _checkpoint_and_report(config: dict[str, Any], spec: ModelSpec, fit, kept: torch.nn.Module, metrics: dict, *,
                           rank: int, world: int, resumed_at: int | None) -> None:
    """Rank 0 writes the epoch's checkpoint (the kept model and the train state) and sends the
    epoch to the driver; every rank reports to Ray Train."""
    from distill.core.fit import fit_state

    stage, epoch = config["stage"], metrics["epoch"]
    with tempfile.TemporaryDirectory() as tmp:
        if rank == 0:
            save_model_dir(tmp, kept, ModelSpec(**{**asdict(spec), "extra": {
                "epoch": epoch, "val_acc": metrics.get("kept_val_acc", metrics.get("val_acc")),
                **({"averaged_epochs": int(fit.averaged.n_averaged)} if kept is not fit.net else {})}}))
            torch.save(fit_state(fit, epoch), Path(tmp) / TRAIN_STATE)
            if config.get("checkpoint_dir"):  # runner local: Ray Train keeps no checkpoint, the platform does
                save_local_checkpoint(tmp, config["checkpoint_dir"], epoch)
                if not config["train"].keep_all_checkpoints:
                    prune_local_checkpoints(config["checkpoint_dir"], config["train"].keep)
            # The driver prints this line and logs the metrics to MLflow as it arrives, so workers
            # need neither the tracking store nor MLflow itself.
            config["progress"].put({"stage": stage.name, "epochs": stage.epochs, "pid": os.getpid(), "world": world,
                                    "resumed_at_epoch": resumed_at, **metrics,
                                    # the epochs a restart did not train again, for a new run's curves
                                    **({"restored": fit.history[:epoch]} if epoch == resumed_at else {})})
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp) if rank == 0 else None)


def _saved_train_state(config: dict[str, Any], device: torch.device) -> dict | None:
    """The train state to continue from: the local runner's last checkpoint (``resume_dir``,
    passed by the driver) or the one Ray Train hands a restarted worker group; None: none."""
    if config.get("resume_dir"):
        return torch.load(Path(config["resume_dir"]) / TRAIN_STATE, map_location=device, weights_only=True)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / TRAIN_STATE, map_location=device, weights_only=True)


# --- the local runner's checkpoints: <checkpoint_dir>/epoch-NNNN/, whole once COMPLETE is written ---

COMPLETE = "COMPLETE"


def save_local_checkpoint(local_dir: str | Path, checkpoint_dir: str, epoch: int) -> None:
    target = storage.join(checkpoint_dir, f"epoch-{epoch:04d}")
    storage.upload_dir(local_dir, target)
    storage.write_text(storage.join(target, COMPLETE), "")  # last: a killed copy is never read back


def local_checkpoints(checkpoint_dir: str) -> list[str]:
    """The local runner's whole checkpoints, oldest first."""
    return [storage.join(checkpoint_dir, d) for d in storage.list_dirs(checkpoint_dir)
            if d.startswith("epoch-") and storage.is_file(storage.join(checkpoint_dir, d, COMPLETE))]


def kept_local_checkpoint(checkpoints: list[str], keep: str) -> str:
    """The stage's model among the local runner's checkpoints: the last (``average``: it holds
    the averaged weights) or the first with the best validation accuracy (``best``)."""
    if keep == "average":
        return checkpoints[-1]
    scores = [json.loads(storage.read_text(storage.join(c, SPEC)))["extra"]["val_acc"] for c in checkpoints]
    return checkpoints[scores.index(max(scores))]


def prune_local_checkpoints(checkpoint_dir: str, keep: str) -> None:
    """Remove the local runner's checkpoints but two: the stage's kept one and the last (what a
    restart continues from), as Ray Train's ``num_to_keep=1`` does. Each loses its completion
    mark first, so one half-removed by a kill is never read back as whole."""
    saved = local_checkpoints(checkpoint_dir)
    needed = {saved[-1], kept_local_checkpoint(saved, keep)} if saved else set()
    for checkpoint in saved:
        if checkpoint not in needed:
            storage.remove_file(storage.join(checkpoint, COMPLETE))
            storage.remove_tree(checkpoint)


def stage_runner(train: TrainConfig) -> str:
    """Where a stage trains (``train.runner``, ``TrainConfig.resolved_runner``'s rule applied to
    this cluster and driver)."""
    if train.runner != "auto":
        return train.runner
    from ray.util.client import ray as client

    from distill.runtime.infra.session import alive_nodes

    return train.resolved_runner(one_node=len(alive_nodes()) == 1, client=client.is_connected(),
                                 in_actor=inside_an_actor())


def inside_an_actor() -> bool:
    return ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None


WAIT_NOTICE_S = 10.0  # a stage whose workers are not placed by then says what it waits for


def _pending_placement() -> str | None:
    """What Ray Train's placement groups still wait for (``None``: nothing is pending)."""
    from ray.util import placement_group_table

    from distill.runtime.infra.session import alive_nodes, describe_nodes, describe_resources

    pending = [pg for pg in placement_group_table().values() if pg.get("state") == "PENDING"]
    if not pending:
        return None
    bundles = [b for pg in pending for b in pg.get("bundles", {}).values()]
    return (f"{len(bundles)} training worker(s) of {describe_resources(bundles[0])} each on one node "
            f"({pending[0].get('strategy')}); the cluster's nodes: {describe_nodes(alive_nodes())}")


def _node_addresses() -> dict[str, str]:
    """node id → address of each live node."""
    import ray

    return {n["NodeID"]: n.get("NodeManagerAddress", "?") for n in ray.nodes() if n.get("Alive")}


def _fit_with_progress(trainer: TorchTrainer | _InAnActor, progress: Queue, on_epoch: Callable[[dict], None],
                       wait_s: float):
    """``trainer.fit()`` in a thread while this one hands the workers' epoch reports to ``on_epoch``
    (and, once, a note if a worker group still waits for resources after ``WAIT_NOTICE_S``; and a
    note as soon as a node of the cluster is lost, so a stage that waits for its workers says why).
    A stage's actor (on the driver's node) sends its own waiting note through ``progress``."""
    box: dict[str, Any] = {}
    group = isinstance(trainer, TorchTrainer)
    nodes, lost, next_census = _node_addresses(), {}, time.monotonic() + 2 if group else float("inf")

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    settled, next_look = False, time.monotonic() + WAIT_NOTICE_S
    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    while thread.is_alive() or not progress.empty():
        try:
            on_epoch(progress.get(timeout=0.5))
            settled = True  # the workers run
        except Empty:
            if time.monotonic() > next_census:
                next_census = time.monotonic() + 2
                for node_id in nodes.keys() - _node_addresses().keys() - lost.keys():
                    lost[node_id] = nodes[node_id]
                    on_epoch({"node_lost": f"node {nodes[node_id]} ({node_id[:8]}) left the cluster; Ray Train "
                                           "restarts the workers from the last epoch's checkpoint once the cluster "
                                           f"holds them again, waiting up to {wait_s:g} s (train.resource_wait_s)"})
                    settled = False  # the restarted workers may wait for a placement: say what for
            if group and not settled and time.monotonic() > next_look:  # not yet placed? look every few seconds
                next_look = time.monotonic() + WAIT_NOTICE_S / 2
                if waiting := _pending_placement():
                    settled, box["waiting"] = True, waiting
                    on_epoch({"waiting_for": f"{waiting}; waiting up to {wait_s:g} s (train.resource_wait_s)"})
    thread.join()
    if "error" in box:
        if placement_timed_out(box["error"]):
            waiting = box.get("waiting", "the stage's training workers")
            gone = "".join(f"node {address} was lost; " for address in lost.values())
            raise ResourceWaitTimeout(f"{gone}waited {wait_s:g} s (train.resource_wait_s) for {waiting}; add a node "
                                      "that holds a worker (or let the autoscaler), or lower train.cpus_per_worker / "
                                      "train.num_workers") from None
        raise box["error"]
    return box["result"]


_STOPS: dict[str, threading.Event] = {}  # runner local: stop_key -> set when the loop should stop after its epoch


def _stop_requested(config: dict[str, Any]) -> bool:
    stop = _STOPS.get(config.get("stop_key", ""))
    return stop is not None and stop.is_set()


def _fit_in_this_thread(trainer: TorchTrainer, progress: Queue, on_epoch: Callable[[dict], None],
                        stop: threading.Event) -> Any:
    """``trainer.fit()`` of Ray Train's local mode in this thread, the loop's too, while a helper
    thread hands the epochs' reports to ``on_epoch``. Tensors a helper thread allocates come from
    a glibc arena of its own, which gives its pages back and faults them in again: validation ran
    1.8x slower there (docs/design-notes.md). If ``on_epoch`` fails (the tracking server gone, say),
    ``stop`` tells the loop to end after its epoch, and that error is raised here."""
    failed: list[BaseException] = []
    done = threading.Event()

    def hand_on() -> None:
        while not done.is_set() or not progress.empty():
            try:
                report = progress.get(timeout=0.5)
            except Empty:
                continue
            if failed:
                continue  # drained: the chain stops with the first error
            try:
                on_epoch(report)
            except BaseException as exc:  # raised in the caller's thread once the loop has stopped
                failed.append(exc)
                stop.set()

    reports = threading.Thread(target=hand_on, name="pld-epoch-reports", daemon=True)
    reports.start()
    try:
        result = trainer.fit()
    finally:
        done.set()
        reports.join()
        if failed:
            raise failed[0]  # what stopped the loop, whatever else the fit raised
    return result


def _first_line(exc: BaseException) -> str:
    """An error's first line, for a one-line restart notice."""
    return (str(exc).strip().splitlines() or [""])[0][:200]


def _fit_locally(trainer: Callable[..., TorchTrainer], checkpoint_dir: str, train: TrainConfig, progress: Queue,
                 on_epoch: Callable[[dict], None] | None, member: dict | None = None) -> tuple[list[dict], str] | None:
    """Ray Train's local mode (``num_workers=0``: the loop runs in this process), which keeps no
    checkpoint and restarts nothing: each epoch's checkpoint goes to ``checkpoint_dir``, and a
    failure (up to ``train.max_failures``), like a new driver after a killed one, continues from
    the last. Returns the loop's history and the kept checkpoint.

    ``member``: this process is one of a group's (runner actor, several workers): its shard of the
    dataset, and torchrun's variables, with which the local mode joins the group's process group.
    A member restarts nothing itself (the group restarts together); one of rank > 0 returns None."""
    restarts, extra = train.max_failures, {}
    if member is not None:
        os.environ.update(member["env"])
        restarts, extra = 0, {"shard": member["shard"]}
    stop_key = f"{checkpoint_dir}#{time.monotonic_ns()}"
    _STOPS[stop_key] = stop = threading.Event()
    try:
        for attempt in range(restarts + 1):
            saved = local_checkpoints(checkpoint_dir)
            resume_dir = storage.local_copy(saved[-1]) if saved else None
            try:
                local = trainer(0, checkpoint_dir=checkpoint_dir, resume_dir=resume_dir, stop_key=stop_key, **extra)
                # in a stage's actor (on_epoch None) the reports stay in the queue for the driver
                result = local.fit() if on_epoch is None else _fit_in_this_thread(local, progress, on_epoch, stop)
                break
            except Exception as exc:
                if attempt == restarts or stop.is_set():  # a report that failed is no training failure
                    raise
                # said, never silent: a restart repeats the epochs after the last whole checkpoint
                print(f"   training failed ({type(exc).__name__}: {_first_line(exc)}); restart {attempt + 1} of "
                      f"{train.max_failures} (train.max_failures), from the last whole epoch checkpoint", flush=True)
    finally:
        del _STOPS[stop_key]
    if member is not None and member["env"]["RANK"] != "0":
        return None  # rank 0 writes the checkpoints and returns them
    saved = local_checkpoints(checkpoint_dir)
    if not saved:
        raise RuntimeError(f"{checkpoint_dir}: training reported no checkpoint")
    return result.return_value or [], kept_local_checkpoint(saved, train.keep)


@ray.remote
class StageActor:
    """runner actor: a stage's worker in this actor's process, in Ray Train's local mode as the
    driver runs it (its checkpoints and in-process restarts too); the epochs reach the driver
    through the progress queue. One process to start per worker, against a worker group's
    controller, workers and three or four helpers."""

    def ready(self) -> bool:
        return True

    def free_port(self) -> int:
        """A free TCP port on this node, for the group's process group (rank 0 listens on it)."""
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def fit(self, trainer: Callable[..., TorchTrainer], checkpoint_dir: str, train: TrainConfig,
            member: dict | None = None):
        return _fit_locally(trainer, checkpoint_dir, train, None, None, member)


def _member_env(rank: int, world: int, port: int) -> dict[str, str]:
    """torchrun's variables for one of ``world`` processes on this node: with them, Ray Train's
    local mode joins a gloo process group (rendezvous at rank 0's port) and gives ray.train's
    context this rank and world, so ``prepare_model`` wraps the model in DDP as a worker group's
    workers do."""
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


class _InAnActor:
    """runner actor, seen by ``_fit_with_progress`` as a trainer: ``fit()`` trains the stage in
    ``train.num_workers`` fresh ``StageActor``s on the driver's node (waiting up to
    train.resource_wait_s for their CPUs), each given an equal shard of the dataset. If a process
    dies, or one of several fails, all start again, up to train.max_failures, from the last
    epoch's checkpoint. Returns what ``_fit_locally`` returns (rank 0's)."""

    def __init__(self, trainer: Callable[..., TorchTrainer], checkpoint_dir: str, train: TrainConfig, name: str,
                 progress: Queue, dataset: Any = None):
        self.trainer, self.checkpoint_dir, self.train, self.name = trainer, checkpoint_dir, train, name
        self.progress = progress  # where a note that the actors wait for their CPUs goes, as the epochs do
        workers = train.num_workers
        # equal shards (as a worker group's split), cut once: a restarted group reads the same ones
        self.shards = dataset.split(workers, equal=True) if workers > 1 else [None]

    def _wanted(self) -> str:
        n, cpus = self.train.num_workers, self.train.cpus_per_worker
        return f"{cpus:g} CPU" if n == 1 else f"{n} x {cpus:g} CPU"

    def _refuse_what_the_node_cannot_hold(self) -> None:
        """More CPUs than the driver's node has would wait forever: say so at once."""
        here = ray.get_runtime_context().get_node_id()
        has = next((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n["NodeID"] == here), 0)
        n, cpus = self.train.num_workers, self.train.cpus_per_worker
        if n * cpus > has:
            setting = "train.cpus_per_worker" if n == 1 else "train.num_workers x train.cpus_per_worker"
            raise ResourceWaitTimeout(
                f"the driver's node has {has:g} CPU, fewer than the {n * cpus:g} ({setting}) that stage {self.name}'s "
                f"training {'actor needs' if n == 1 else 'actors need'} (train.runner: actor); lower "
                f"{setting.replace(' x ', ' or ')}, or set train.runner: workers to train on other nodes")

    def _placed(self, actors: list) -> None:
        """Return once every actor runs; after WAIT_NOTICE_S say what they wait for, and after
        train.resource_wait_s give up, saying so."""
        wait_s, n = self.train.resource_wait_s, len(actors)
        ready = [actor.ready.remote() for actor in actors]
        done, _ = ray.wait(ready, num_returns=n, timeout=min(WAIT_NOTICE_S, wait_s))
        if len(done) < n and wait_s > WAIT_NOTICE_S:
            self.progress.put({"waiting_for": f"{self._wanted()} on the driver's node for stage {self.name}'s "
                                              f"training {'actor' if n == 1 else 'actors'} (train.runner: actor); "
                                              f"waiting up to {wait_s:g} s (train.resource_wait_s)"})
            done, _ = ray.wait(ready, num_returns=n, timeout=wait_s - WAIT_NOTICE_S)
        if len(done) < n:
            raise ResourceWaitTimeout(
                f"waited {wait_s:g} s (train.resource_wait_s) for {self._wanted()} on the driver's node to train "
                f"stage {self.name} in {'an actor' if n == 1 else f'{n} actors'} (train.runner: actor); free CPUs "
                "there, lower train.cpus_per_worker, or set train.runner: workers to train on another node")
        ray.get(ready)

    def _run(self, actors: list):
        """Each actor's fit; the first failure is raised at once (the others, waiting in a
        collective, are killed by the caller). Returns rank 0's result."""
        if len(actors) == 1:
            return ray.get(actors[0].fit.remote(self.trainer, self.checkpoint_dir, self.train))
        port = ray.get(actors[0].free_port.remote())
        runs = [actor.fit.remote(self.trainer, self.checkpoint_dir, self.train,
                                 {"env": _member_env(rank, len(actors), port), "shard": self.shards[rank]})
                for rank, actor in enumerate(actors)]
        pending = runs
        while pending:
            done, pending = ray.wait(pending)
            ray.get(done)
        return ray.get(runs[0])

    def fit(self) -> tuple[list[dict], str]:
        from ray.exceptions import RayActorError, RayTaskError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        train = self.train
        self._refuse_what_the_node_cannot_hold()
        # on the driver's node, whose paths the checkpoints are written to and read back from
        # (and outside the placement group of a Tune trial, which holds no CPU for it)
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        # one actor restarts a failed loop itself (_fit_locally); a group restarts together
        restarted = (RayActorError, RayTaskError) if train.num_workers > 1 else RayActorError
        for attempt in range(train.max_failures + 1):
            actors = [StageActor.options(num_cpus=train.cpus_per_worker, scheduling_strategy=here).remote()
                      for _ in range(train.num_workers)]
            try:
                self._placed(actors)
                return self._run(actors)
            except restarted as exc:  # a process died (killed, out of memory), or a member's loop failed
                if attempt == train.max_failures:
                    raise
                died = isinstance(exc, RayActorError)
                why = _first_line(exc) if died else f"{type(exc.cause).__name__}: {_first_line(exc.cause)}"
                print(f"   the stage's training {'actor died' if died else 'actors failed'} ({why}); restart "
                      f"{attempt + 1} of {train.max_failures} (train.max_failures), from the last whole epoch "
                      "checkpoint", flush=True)
            finally:
                for actor in actors:
                    ray.kill(actor)
        raise AssertionError("unreachable")


@dataclass
class StageData:
    """What a stage trains on and where it writes."""
    train_ds: Any  # ray.data.Dataset: the stage's distilled dataset
    rows: int
    validation: tuple  # (waveforms, labels) of the validation split, at full clip length
    storage_dir: str | Path  # Ray Train's checkpoints and results
    model_dir: str | Path  # the best checkpoint's model, the stage's model
    noise: Any = None  # the NoiseBank that train.augment mixes in (None: none)
    rooms: Any = None  # the RoomBank it reverberates with (None: none)


def train_stage(stage: StageSpec, spec: ModelSpec, data: StageData, train: TrainConfig, evaluation: EvalConfig,
                progress: Queue, on_epoch: Callable[[dict], None]) -> dict:
    """Fit one stage; copies the best checkpoint's model to ``data.model_dir`` and returns a summary.

    ``progress`` is a Ray queue (made once per chain: an actor is not free to start) through
    which rank 0 sends each epoch's metrics to ``on_epoch`` on the driver."""
    config = dict(progress=progress, stage=stage, spec=asdict(spec), train=train, rows=data.rows, noise=data.noise,
                  rooms=data.rooms,
                  validation=data.validation, hop_samples=num_samples(evaluation.stream_hop_ms, stage.sample_rate),
                  silence_index=spec.silence_index,
                  eval_batch_size=evaluation.batch_size)
    workers, use_gpu, cpus = train.num_workers, train.use_gpu, train.cpus_per_worker
    # Ray Train waits this long for its placement group, then (controller_failure_limit=0) fails
    # instead of trying again forever; the controller actor reads it from the driver's environment.
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(train.resource_wait_s)
    started = time.perf_counter()  # the stage's whole training cost: its dataset's read as well as the fit
    # Materialized once: each epoch then streams blocks from the object store instead of
    # re-reading the source and cutting the crops again.
    datasets = {"train": data.train_ds.select_columns(["waveform", *TRAIN_COLUMNS]).materialize()}

    def trainer(num_workers: int, **extra: Any) -> TorchTrainer:
        # a group's actor has its shard in its config: local mode with several processes takes no dataset
        return TorchTrainer(
            train_loop_per_worker,
            train_loop_config={**config, **extra},
            scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus, **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(name=stage.name, storage_path=storage.resolve(data.storage_dir),
                                 failure_config=FailureConfig(max_failures=train.max_failures, controller_failure_limit=0),
                                 logging_config=LoggingConfig(log_level="WARNING"),
                                 # keep best: the best by val_acc, and always the latest: two; average: the
                                 # latest, which holds the averaged weights (train.keep_all_checkpoints: all)
                                 checkpoint_config=CheckpointConfig(
                                     num_to_keep=None if train.keep_all_checkpoints else 1,
                                     checkpoint_score_attribute="val_acc" if train.keep == "best" else None,
                                     checkpoint_score_order="max")),
            datasets=None if "shard" in extra else datasets,
            # One worker reads the whole dataset: no streaming split, so no split-coordinator actor
            # (one process start fewer per stage); several workers each get an equal shard.
            dataset_config=DataConfig(datasets_to_split="all" if workers > 1 else []),
        )

    runner = stage_runner(train)
    if runner in ("local", "actor"):
        checkpoint_dir = storage.join(data.storage_dir, f"{stage.name}-local")
        if runner == "local":
            history, kept = _fit_locally(trainer, checkpoint_dir, train, progress, on_epoch)
        else:
            in_actors = _InAnActor(trainer, checkpoint_dir, train, stage.name, progress, datasets["train"])
            history, kept = _fit_with_progress(in_actors, progress, on_epoch, train.resource_wait_s)
        kept_dir = contextlib.nullcontext(storage.local_copy(kept))
    else:
        result = _fit_with_progress(trainer(workers), progress, on_epoch, train.resource_wait_s)
        # average: the last epoch's checkpoint holds the averaged weights; best: the best epoch's
        best = result.checkpoint if train.keep == "average" else result.get_best_checkpoint(metric="val_acc", mode="max")
        if best is None:
            raise RuntimeError(f"stage {stage.name}: training reported no checkpoint")
        history, kept_dir = result.return_value or [], best.as_directory()
    with kept_dir as d:
        storage.upload_dir(d, data.model_dir, ignore=(TRAIN_STATE, COMPLETE))
        _, best_spec = load_model_dir(d)
    return {"history": history, "best_epoch": best_spec.extra.get("epoch"), "runner": runner,
            "best_val_acc": best_spec.extra.get("val_acc"), "seconds": time.perf_counter() - started}
