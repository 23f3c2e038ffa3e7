"""The local runner's checkpoints (runtime/execution/train.py): which are whole, which one a stage keeps,
and when a stage trains in the driver at all."""

from __future__ import annotations

import json

import pytest

from distill.config import TrainConfig
from distill.runtime.execution import train as train_module
from distill.runtime.execution.train import COMPLETE, kept_local_checkpoint, local_checkpoints, \
    prune_local_checkpoints, stage_runner


def write_checkpoint(root, epoch, val_acc, complete=True):
    d = root / f"epoch-{epoch:04d}"
    d.mkdir(parents=True)
    (d / "model.json").write_text(json.dumps({"extra": {"epoch": epoch, "val_acc": val_acc}}))
    if complete:
        (d / COMPLETE).write_text("")
    return str(d)


def test_only_whole_checkpoints_count_and_the_kept_one_follows_train_keep(tmp_path):
    first = write_checkpoint(tmp_path, 0, 0.50)
    best = write_checkpoint(tmp_path, 1, 0.80)
    write_checkpoint(tmp_path, 2, 0.80)  # as good, later: best keeps the first of equals
    last = write_checkpoint(tmp_path, 3, 0.70)
    write_checkpoint(tmp_path, 4, 0.99, complete=False)  # the copy a killed driver left
    (tmp_path / "stray").mkdir()
    saved = local_checkpoints(str(tmp_path))
    assert saved[0] == first and saved[-1] == last and len(saved) == 4
    assert kept_local_checkpoint(saved, "best") == best
    assert kept_local_checkpoint(saved, "average") == last  # it holds the averaged weights
    assert local_checkpoints(str(tmp_path / "missing")) == []


def test_a_stage_keeps_its_kept_checkpoint_and_the_last(tmp_path):
    """After each epoch (train.keep_all_checkpoints off): best keeps the best so far and the
    last; average keeps the last alone (it holds the averaged weights). A half-written one
    (no COMPLETE) is left to the restart that overwrites it."""
    for epoch, acc in enumerate([0.5, 0.8, 0.7]):
        write_checkpoint(tmp_path / "best", epoch, acc)
        prune_local_checkpoints(str(tmp_path / "best"), "best")
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["epoch-0001", "epoch-0002"]
    write_checkpoint(tmp_path / "best", 3, 0.9)
    write_checkpoint(tmp_path / "best", 4, 0.1, complete=False)
    prune_local_checkpoints(str(tmp_path / "best"), "best")
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["epoch-0003", "epoch-0004"]
    for epoch in range(3):
        write_checkpoint(tmp_path / "average", epoch, 0.9 - epoch / 10)
        prune_local_checkpoints(str(tmp_path / "average"), "average")
    assert [p.name for p in (tmp_path / "average").iterdir()] == ["epoch-0002"]
    prune_local_checkpoints(str(tmp_path / "none"), "best")  # nothing saved yet: nothing to do


@pytest.mark.parametrize("options, nodes, driver, actor", [
    ({}, 1, "local", "actor"),
    ({}, 2, "workers", "workers"),  # another node may be the one meant to train
    ({"num_workers": 2}, 1, "actor", "actor"),  # one process group of actors, no worker group's helpers
    ({"num_workers": 2}, 2, "workers", "workers"),
    ({"use_gpu": True}, 1, "workers", "workers"),
    ({"runner": "workers"}, 1, "workers", "workers"),
    ({"runner": "local"}, 3, "local", "local"),
    ({"runner": "actor"}, 3, "actor", "actor"),
])
def test_auto_trains_on_one_node_in_the_driver_or_in_actors(monkeypatch, options, nodes, driver,
                                                                                    actor):
    import distill.runtime.infra.session

    monkeypatch.setattr(distill.runtime.infra.session, "alive_nodes", lambda: [{"CPU": 2.0}] * nodes)
    assert stage_runner(TrainConfig(**options)) == driver
    # inside an actor (a Tune trial of pld sweep), whose process refuses ray.train's API in local mode
    monkeypatch.setattr(train_module, "inside_an_actor", lambda: True)
    assert stage_runner(TrainConfig(**options)) == actor
