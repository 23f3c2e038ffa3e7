"""Faults inside a stage, on a real local Ray: a relabel worker and a training worker are
killed by pid while they run; the stage completes with the right rows, and training continues
from its last checkpoint (in a worker group, and in the driver: the local runner). Relabeling is
reproducible to the byte of every column, and the two runners train the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import ray
import ray.util.state
import torch
from ray.util.queue import Queue

from conftest import write_sc_layout
from distill.config import EvalConfig, RelabelConfig, TrainConfig, load_config
from distill.core.checkpoint import ModelSpec, save_model_dir
from distill.core.labels import LabelSpec
from distill.data.base import build_source_index
from distill.runtime.infra.manifest import IntegrityError, is_sealed, read_manifest, seal
from distill.runtime.execution.relabel import Teacher, read_training_crops, relabel_crops
from distill.runtime.infra.session import init_ray
from distill.runtime.execution.source import load_split_arrays, write_source_dataset
from distill.runtime.infra.errors import ResourceWaitTimeout
from distill.runtime.execution.train import StageData, train_stage
from distill.stages import StageSpec

pytestmark = pytest.mark.integration
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    speakers = [f"{i:08x}" for i in range(16)]
    corpus = write_sc_layout(root / "corpus", KEYWORDS + ["bed", "cat"], speakers, val={speakers[0]}, test={speakers[1]})
    cfg = load_config(None, {"data.path": str(corpus), "ray.num_cpus": 2})
    init_ray(cfg)
    index = build_source_index(cfg.data)
    write_source_dataset(index, cfg.data, root / "source")
    torch.manual_seed(0)
    spec = ModelSpec(model="res8", options={}, labels=index.labels, input_ms=1000, features=cfg.features.model_dump())
    save_model_dir(root / "teacher", spec.build(), spec)
    yield dict(root=root, labels=index.labels, features=cfg.features.model_dump())
    ray.shutdown()


def relabel(setup, out, seed=0, view=LabelSpec(), labels=None, precision="fp32"):
    stage = StageSpec("student_750ms", "student", "pld", 750, "teacher", 1, crops_per_clip=4, seed=seed, labels=view)
    return relabel_crops(setup["root"] / "source", out, stage,
                         RelabelConfig(batch_size=32, actors=1, cpus_per_actor=1, precision=precision),
                         Teacher(str(setup["root"] / "teacher"), "teacher-run"), labels)


def train(root, name, spec, rows, data_dir, epochs, progress, on_epoch, *, label_mode="hard", temperature=1.0,
          seed=0, weight_decay=0.0, precision="fp32", max_failures=0, runner="auto", keep="best", **train_options):
    """One stage's training as the chain runs it, without augmentation (the tests compare runs)."""
    stage = StageSpec(name, "student", "pld", 750, "teacher", epochs, seed=seed,
                      labels=LabelSpec(mode=label_mode, temperature=temperature))
    data = StageData(read_training_crops(Path(data_dir).parent, root / "source"), rows, load_split_arrays(root / "source", "validation"),
                     storage_dir=root / f"{name}-train", model_dir=root / f"{name}-model")
    cfg = TrainConfig(batch_size=32, lr=0.01, weight_decay=weight_decay, precision=precision, max_failures=max_failures,
                      augment={"enabled": False}, runner=runner, keep=keep, average_epochs=2, **train_options)
    return train_stage(stage, spec, data, cfg, EvalConfig(batch_size=128), progress, on_epoch)


def table(path):
    """The Parquet rows as a plain frame (tensor columns as bytes), in a canonical order."""
    t = pq.read_table(path)
    columns = {name: ([np.asarray(a).tobytes() for a in t.column(name).to_numpy(zero_copy_only=False)]
                      if name in ("waveform", "teacher_probs") else t.column(name).to_pylist())
               for name in t.column_names}
    return pd.DataFrame(columns).sort_values(["clip_id", "crop_index"], ignore_index=True)


@pytest.fixture(scope="module")
def reference(setup):
    manifest = relabel(setup, setup["root"] / "ref")
    return manifest, table(setup["root"] / "ref" / "data")


def test_local_ray_binds_its_dashboard_to_localhost(setup):
    url = ray._private.worker.get_dashboard_url()
    assert url.startswith("127.0.0.1:"), url


def test_confidence_filter_and_padded_view_on_ray(setup, reference):
    """The confidence filter keeps exactly the reference's rows at or above the threshold (and
    counts the rest); a padded teacher view labels the same crops from different inputs."""
    _, ref = reference
    threshold = float(np.median(ref.teacher_confidence))
    manifest = relabel(setup, setup["root"] / "confident", view=LabelSpec(min_confidence=threshold))
    kept = table(setup["root"] / "confident" / "data")
    expected = ref[ref.teacher_confidence >= threshold].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, expected)
    assert manifest["rows"] == len(expected) and manifest["dropped_low_confidence"] == len(ref) - len(expected) > 0
    assert manifest["crops"] == len(ref) and manifest["min_confidence"] == threshold
    assert "label_stats" not in manifest  # only when the caller names the labels

    padded = relabel(setup, setup["root"] / "padded", view=LabelSpec("pad", "center"), labels=setup["labels"])
    pad = table(setup["root"] / "padded" / "data")
    assert padded["teacher_view"] == {"mode": "pad", "pad_position": "center"}
    assert (pad.clip_id == ref.clip_id).all() and (pad.offset == ref.offset).all()  # the same crops are referenced
    assert not np.allclose(pad.teacher_confidence, ref.teacher_confidence)  # seen through zeros around them
    stats = padded["label_stats"]
    assert stats["agreement"] == pytest.approx((pad.teacher_label == pad.source_label).mean())
    assert set(stats) == {"agreement", "to_silence", "to_unknown"}

    with pytest.raises(ValueError, match=f"min_confidence 0.999 dropped all {len(ref)} crops"):
        relabel(setup, setup["root"] / "none", view=LabelSpec(min_confidence=0.999))


def test_relabeling_is_reproducible_exactly(setup, reference):
    manifest, ref = reference
    relabel(setup, setup["root"] / "again")
    again = table(setup["root"] / "again" / "data")
    assert manifest["rows"] == len(ref) == 4 * len(pq.read_table(setup["root"] / "source" / "data" / "split=train"))
    assert again.equals(ref)  # every column, every byte: crop references, labels, probabilities
    # and in the same order on disk (Ray Data preserves order), so training sees the same batches
    order = lambda d: pq.read_table(d, columns=["clip_id", "crop_index"]).to_pylist()  # noqa: E731
    assert order(setup["root"] / "again" / "data") == order(setup["root"] / "ref" / "data")
    assert ref.offset.nunique() > 10 and set(ref.teacher_run_id) == {"teacher-run"}


def test_training_reads_each_crop_cut_from_the_source_at_its_reference(setup, reference):
    """A stage's rows hold where its crops are, not their audio; training reads each crop cut
    from its source clip when the rows are read: the samples of cutting the source by hand, in
    the rows' order."""
    manifest, ref = reference
    root = setup["root"]
    written = pq.read_table(root / "ref" / "data", columns=["clip_id", "offset", "teacher_label_index"])
    source = pq.read_table(root / "source" / "data" / "split=train", columns=["clip_id", "waveform"])
    waves = np.stack(source.column("waveform").to_numpy(zero_copy_only=False))
    row_of = {c: i for i, c in enumerate(source.column("clip_id").to_pylist())}
    crop = manifest["crop_samples"]
    expected = np.stack([waves[row_of[c], o:o + crop] for c, o in zip(written.column("clip_id").to_pylist(),
                                                                       written.column("offset").to_pylist())])
    got = read_training_crops(root / "ref", root / "source").take_batch(len(expected) + 1, batch_format="numpy")
    assert got["waveform"].shape == expected.shape and (got["waveform"] == expected).all()
    assert got["teacher_label_index"].tolist() == written.column("teacher_label_index").to_pylist()
    audio_bytes = expected.size * expected.itemsize  # what the rows would weigh with their crops in them
    data_bytes = sum(f.stat().st_size for f in (root / "ref" / "data").rglob("*") if f.is_file())
    assert "waveform" not in pq.read_schema(next((root / "ref" / "data").glob("*.parquet"))).names
    assert data_bytes < 0.05 * audio_bytes, (data_bytes, audio_bytes)


def test_a_distilled_dataset_is_refused_when_its_source_changed_or_it_is_of_an_older_format(setup, reference,
                                                                                             tmp_path):
    import shutil

    root = setup["root"]
    shutil.copytree(root / "source", tmp_path / "source")
    shutil.copytree(root / "ref", tmp_path / "ref")
    source = seal(tmp_path / "source", json.loads((root / "source" / "manifest.json").read_text()))
    seal(tmp_path / "ref", read_manifest(tmp_path / "ref"), source_sha256=source["content_sha256"])
    assert read_training_crops(tmp_path / "ref", tmp_path / "source").count() == len(reference[1])
    part = next((tmp_path / "source" / "data" / "split=train").glob("*.parquet"))
    part.write_bytes(part.read_bytes() + b"\0")  # the source changed after the stage labelled it
    with pytest.raises(IntegrityError, match="changed after the manifest was written"):
        read_training_crops(tmp_path / "ref", tmp_path / "source")
    old = {k: v for k, v in read_manifest(tmp_path / "ref").items() if k != "format"}
    (tmp_path / "ref" / "manifest.json").write_text(json.dumps(old))  # a dataset pld wrote with its audio
    with pytest.raises(IntegrityError, match="format None.*run the stage again"):
        read_training_crops(tmp_path / "ref", root / "source")


def test_relabeling_survives_a_killed_worker(setup, reference):
    _, ref = reference
    script = Path(__file__).with_name("kill_relabel_worker.py")
    cmd = [sys.executable, str(script), str(setup["root"]), str(setup["root"] / "killed"),
           ray.get_runtime_context().gcs_address]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        # Ray 2.60's driver sometimes aborts (RAY_CHECK in task_manager.cc, PeekObjectRefStream)
        # when a streaming task's worker dies: Ray's bug, which takes `pld run` down with it. What
        # the failure table promises then: nothing half-written is sealed, and the stage's relabel
        # run again (what `pld resume` does) writes the whole dataset.
        assert "PeekObjectRefStream" in proc.stderr, proc.stderr[-3000:]  # no other way to fail
        assert not is_sealed(setup["root"] / "killed")
        relabel(setup, setup["root"] / "killed")
    else:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["killed"], "the relabel task finished before it could be killed"
        assert result["rows"] == len(ref)
    assert table(setup["root"] / "killed" / "data").equals(ref)  # retried, not lost or duplicated


def test_training_survives_a_killed_worker_and_continues_from_its_checkpoint(setup, reference):
    root = setup["root"]
    reports = []

    def on_epoch(m):
        reports.append(m)
        if len(reports) == 1:  # kill the worker in epoch 2, once epoch 1's checkpoint is on disk
            deadline = time.time() + 30
            while not list((root / "student-train").rglob("train_state.pt")) and time.time() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            os.kill(m["pid"], signal.SIGKILL)

    spec = ModelSpec(model="res8", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
    summary = train(root, "student", spec, reference[0]["rows"], root / "ref" / "data", 3,
                    Queue(actor_options={"num_cpus": 0}), on_epoch, max_failures=1, runner="workers")
    epochs = [m["epoch"] for m in reports]
    assert epochs[0] == 0 and epochs.count(0) == 1, epochs  # epoch 1 was not trained again
    assert epochs[-1] == 2 and sorted(set(epochs)) == [0, 1, 2]
    assert len({m["pid"] for m in reports}) == 2  # a new worker process finished the stage
    assert reports[-1]["resumed_at_epoch"] == 1
    assert (root / "student-model" / "model.pt").is_file() and summary["best_epoch"] in (0, 1, 2)


def test_the_local_runner_continues_from_its_checkpoint_after_a_failure(setup, reference, monkeypatch, capsys):
    import distill.core.fit

    root, reports, failed = setup["root"], [], []
    first_checkpoint = root / "local-train" / "local-local" / "epoch-0000" / "COMPLETE"
    real_loss = distill.core.fit.student_loss

    def failing_once(*args, **kwargs):  # the loop runs in this process: fail its first step after epoch 1
        if first_checkpoint.is_file() and not failed:
            failed.append(True)
            raise RuntimeError("injected failure")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(distill.core.fit, "student_loss", failing_once)
    spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
    summary = train(root, "local", spec, reference[0]["rows"], root / "ref" / "data", 3,
                    Queue(actor_options={"num_cpus": 0}), reports.append, max_failures=1, runner="local")
    assert failed
    epochs = [m["epoch"] for m in reports]
    assert epochs == [0, 1, 2], epochs  # epoch 1 was not trained again
    assert {m["pid"] for m in reports} == {os.getpid()}  # in this process: no worker was started
    assert reports[-2]["resumed_at_epoch"] == 1
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]  # the restart carried the first epoch's
    assert (root / "local-model" / "model.pt").is_file() and not (root / "local-model" / "COMPLETE").exists()
    said = [line for line in capsys.readouterr().out.splitlines() if "training failed" in line]
    assert said == ["   training failed (RuntimeError: injected failure); restart 1 of 1 (train.max_failures), "
                    "from the last whole epoch checkpoint"]  # a restart is said, never silent


def test_the_local_runner_trains_in_the_callers_thread_and_stops_when_a_report_fails(setup, reference,
                                                                                     monkeypatch, capsys):
    """The loop runs in the thread that calls it (tensors a helper thread allocates come from a
    glibc arena of its own, which gives pages back and faults them in again: validation ran 1.8x
    slower there, docs/design-notes.md); the reports go to ``on_epoch`` from a helper thread. If
    one fails (the tracking server gone), the loop stops after its epoch and the error is raised."""
    import threading

    import distill.core.fit

    root, loops = setup["root"], []
    real_epoch = distill.core.fit.train_epoch

    def spy(*args, **kwargs):
        loops.append(threading.current_thread())
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(distill.core.fit, "train_epoch", spy)
    spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
    reports = []
    train(root, "in-thread", spec, reference[0]["rows"], root / "ref" / "data", 2, Queue(actor_options={"num_cpus": 0}),
          lambda m: reports.append((m["epoch"], threading.current_thread())), runner="local")
    assert loops == [threading.current_thread()] * 2
    assert [epoch for epoch, _ in reports] == [0, 1] and all(t is not loops[0] for _, t in reports)

    loops.clear()
    seen = []

    def tracking_gone(m):
        seen.append(m["epoch"])
        raise ConnectionError("the tracking server did not answer")

    with pytest.raises(ConnectionError, match="did not answer"):
        train(root, "report-fails", spec, reference[0]["rows"], root / "ref" / "data", 6,
              Queue(actor_options={"num_cpus": 0}), tracking_gone, runner="local", max_failures=1)
    assert seen == [0]  # the first error is raised; later reports are not handed on
    assert 1 <= len(loops) <= 2, len(loops)  # stopped after the epoch it was in, not after all 6
    assert "training failed" not in capsys.readouterr().out  # a failed report is not retried as training


def test_the_local_runner_trains_the_weights_a_worker_trains(setup, reference):
    """One loop: in the driver (Ray Train's local mode), in a stage's actor (the same local mode in
    another process) or in a Ray Train worker, the same epochs, metrics and kept weights, to the bit."""
    root, runs = setup["root"], {}
    for runner in ("local", "actor", "workers"):
        reports = []
        spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
        summary = train(root, f"runner-{runner}", spec, reference[0]["rows"], root / "ref" / "data", 3,
                        Queue(actor_options={"num_cpus": 0}), reports.append, label_mode="soft", temperature=2.0,
                        seed=3, runner=runner, keep="average")
        weights = torch.load(root / f"runner-{runner}-model" / "model.pt", weights_only=True)
        runs[runner] = (reports, summary, weights)
    (local_reports, local, local_w) = runs["local"]
    pids = {runner: {m["pid"] for m in reports} for runner, (reports, _, _) in runs.items()}
    assert pids["local"] == {os.getpid()} and len(pids["actor"]) == 1 and len(pids["workers"]) == 1
    assert len(pids["local"] | pids["actor"] | pids["workers"]) == 3  # three processes
    strip = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in local["history"]]
    for runner in ("actor", "workers"):
        reports, other, other_w = runs[runner]
        assert [m["epoch"] for m in reports] == [m["epoch"] for m in local_reports] == [0, 1, 2]
        assert strip == [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in other["history"]]
        assert local["best_epoch"] == other["best_epoch"] == 2 and local["best_val_acc"] == other["best_val_acc"]
        assert local_w.keys() == other_w.keys() and all(torch.equal(local_w[k], other_w[k]) for k in local_w)


def test_a_stage_whose_actor_dies_continues_in_a_new_one_from_its_checkpoint(setup, reference, capsys):
    root, reports = setup["root"], []

    def on_epoch(m):  # epoch 1's checkpoint is whole before its report is sent: kill the actor then
        reports.append(m)
        if len(reports) == 1:
            os.kill(m["pid"], signal.SIGKILL)

    spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
    summary = train(root, "actor-killed", spec, reference[0]["rows"], root / "ref" / "data", 3,
                    Queue(actor_options={"num_cpus": 0}), on_epoch, max_failures=1, runner="actor")
    epochs = [m["epoch"] for m in reports]
    assert epochs[0] == 0 and epochs.count(0) == 1 and epochs[-1] == 2 and sorted(set(epochs)) == [0, 1, 2], epochs
    assert len({m["pid"] for m in reports}) == 2 and os.getpid() not in {m["pid"] for m in reports}
    assert reports[-1]["resumed_at_epoch"] == 1 and [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    assert (root / "actor-killed-model" / "model.pt").is_file()
    said = [line for line in capsys.readouterr().out.splitlines() if "training actor died" in line]
    assert len(said) == 1 and said[0].endswith("restart 1 of 1 (train.max_failures), from the last whole epoch "
                                               "checkpoint"), said  # a restart is said, never silent


def test_two_workers_train_in_two_actors_as_one_process_group(setup, reference):
    """Several CPU workers on one node (auto: runner actor): one actor each, joined in one gloo
    process group by Ray Train's local mode, each with an equal shard. Two runs train the same
    weights, to the bit; a Ray Train worker group of two, whose shards are cut otherwise, trains
    about as well."""
    root, runs = setup["root"], {}
    for runner in ("auto", "auto-again", "workers"):
        reports = []
        spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
        summary = train(root, f"two-{runner}", spec, reference[0]["rows"], root / "ref" / "data", 2,
                        Queue(actor_options={"num_cpus": 0}), reports.append, seed=5, num_workers=2,
                        runner=runner.removesuffix("-again"))
        weights = torch.load(root / f"two-{runner}-model" / "model.pt", weights_only=True)
        runs[runner] = (reports, summary, weights)
    assert [runs[r][1]["runner"] for r in runs] == ["actor", "actor", "workers"]
    assert not (root / "two-auto-train" / "two-auto").exists()  # no worker group's run directory
    assert (root / "two-auto-train" / "two-auto-local").is_dir()  # the platform's own checkpoints
    (reports, group, group_w) = runs["auto"]
    assert [m["epoch"] for m in reports] == [0, 1] and len({m["pid"] for m in reports}) == 1  # rank 0 reports
    assert os.getpid() not in {m["pid"] for m in reports}
    assert {m["world"] for m in reports} == {m["world"] for m in runs["workers"][0]} == {2}  # one process group
    _, again, again_w = runs["auto-again"]
    strip = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in group["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in again["history"]]
    assert group_w.keys() == again_w.keys() and all(torch.equal(group_w[k], again_w[k]) for k in group_w)
    workers = runs["workers"][1]["history"]
    assert [h["train_loss"] for h in group["history"]] == pytest.approx([h["train_loss"] for h in workers], rel=0.02)


def test_a_stage_in_two_actors_restarts_both_when_one_dies(setup, reference, capsys):
    root, reports = setup["root"], []

    def on_epoch(m):  # epoch 1's checkpoint is whole before its report is sent: kill rank 0 then
        reports.append(m)
        if len(reports) == 1:
            os.kill(m["pid"], signal.SIGKILL)

    spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
    summary = train(root, "two-killed", spec, reference[0]["rows"], root / "ref" / "data", 3,
                    Queue(actor_options={"num_cpus": 0}), on_epoch, max_failures=1, num_workers=2)
    epochs = [m["epoch"] for m in reports]
    assert epochs[0] == 0 and epochs.count(0) == 1 and epochs[-1] == 2 and sorted(set(epochs)) == [0, 1, 2], epochs
    assert len({m["pid"] for m in reports}) == 2 and reports[-1]["resumed_at_epoch"] == 1
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2] and (root / "two-killed-model" / "model.pt").is_file()
    said = [line for line in capsys.readouterr().out.splitlines() if "restart 1 of 1" in line]
    assert len(said) == 1 and "the stage's training actor" in said[0], said
    assert not [a for a in ray.util.state.list_actors(filters=[("class_name", "=", "StageActor"),
                                                                ("state", "=", "ALIVE")])]  # none left behind


def test_a_stage_actor_that_cannot_be_placed_says_what_it_waits_for_and_gives_up(setup, reference):
    root, reports = setup["root"], []
    spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
    args = (root, "actor-unplaced", spec, reference[0]["rows"], root / "ref" / "data", 1)
    # more CPUs than this Ray's node has (2): said at once
    with pytest.raises(ResourceWaitTimeout, match=r"^the driver's node has 2 CPU, fewer than the 3 "
                                                  r"\(train.cpus_per_worker\) that stage actor-unplaced's"):
        train(*args, Queue(actor_options={"num_cpus": 0}), reports.append, runner="actor", cpus_per_worker=3)
    with pytest.raises(ResourceWaitTimeout, match=r"^the driver's node has 2 CPU, fewer than the 3 \(train.num_workers "
                                                  r"x train.cpus_per_worker\) that stage actor-unplaced's training "
                                                  r"actors need .*; lower train.num_workers or train.cpus_per_worker"):
        train(*args, Queue(actor_options={"num_cpus": 0}), reports.append, num_workers=2, cpus_per_worker=1.5)

    @ray.remote(num_cpus=1)
    class Busy:
        def ready(self):
            return True

    # one CPU held: the stage's dataset is read on the other, and its actor (2 CPUs) waits, says so
    # after 10 s and gives up at 12
    busy = Busy.remote()
    ray.get(busy.ready.remote())
    started = time.monotonic()
    try:
        with pytest.raises(ResourceWaitTimeout) as exc:
            train(*args, Queue(actor_options={"num_cpus": 0}), reports.append, runner="actor", cpus_per_worker=2,
                  resource_wait_s=12)
    finally:
        ray.kill(busy)
    assert 12 <= time.monotonic() - started < 60
    assert str(exc.value).startswith("waited 12 s (train.resource_wait_s) for 2 CPU on the driver's node to train "
                                     "stage actor-unplaced in an actor (train.runner: actor)")
    assert [m["waiting_for"] for m in reports] == [
        "2 CPU on the driver's node for stage actor-unplaced's training actor (train.runner: actor); waiting up to "
        "12 s (train.resource_wait_s)"]  # said once, after 10 s


def test_training_from_the_same_dataset_is_bit_exact_on_cpu(setup, reference):
    root = setup["root"]
    weights = []
    for k in range(2):
        spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
        train(root, f"repro{k}", spec, reference[0]["rows"], root / "ref" / "data", 2,
              Queue(actor_options={"num_cpus": 0}), lambda m: None, label_mode="soft", temperature=2.0, seed=7,
              weight_decay=1e-4)
        weights.append(torch.load(root / f"repro{k}-model" / "model.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_bf16_relabeling_and_training_run_on_cpu(setup, reference):
    root = setup["root"]
    manifest = relabel(setup, root / "bf16", precision="bf16")
    bf16 = table(root / "bf16" / "data")
    assert manifest["rows"] == len(reference[1])
    probs = np.stack([np.frombuffer(b, np.float32) for b in bf16.teacher_probs])
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    spec = ModelSpec(model="tiny", options={}, labels=setup["labels"], input_ms=750, features=setup["features"])
    summary = train(root, "bf16", spec, manifest["rows"], root / "bf16" / "data", 1,
                    Queue(actor_options={"num_cpus": 0}), lambda m: None, label_mode="soft", precision="bf16")
    weights = torch.load(root / "bf16-model" / "model.pt", weights_only=True)
    assert summary["best_epoch"] == 0 and all(torch.isfinite(w.float()).all() for w in weights.values())
