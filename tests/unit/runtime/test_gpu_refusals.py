"""GPU settings on a cluster without GPUs: the pre-flight check (``check_resources``, run before
any stage) refuses them, naming the setting and what to do. The cluster is described to the
check, as Ray would (no Ray is started): one node of 8 CPUs, with or without GPUs."""

from __future__ import annotations

import re

import pytest

from distill.config import ConfigError, load_config
from distill.runtime.infra import session

CPU_ONLY = [{"CPU": 8.0, "memory": 8e9}]
WITH_GPUS = [{"CPU": 8.0, "GPU": 4.0, "memory": 8e9}]


@pytest.fixture
def cluster(monkeypatch):
    """``cluster(nodes)``: the check sees a cluster of these nodes."""
    import ray

    def use(nodes: list[dict[str, float]]) -> None:
        total: dict[str, float] = {}
        for node in nodes:
            for key, amount in node.items():
                total[key] = total.get(key, 0) + amount
        monkeypatch.setattr(ray, "cluster_resources", lambda: dict(total))  # no GPU key without GPUs, as Ray's
        monkeypatch.setattr(session, "alive_nodes", lambda: [dict(n) for n in nodes])

    return use


@pytest.mark.parametrize("workers", [1, 2])
def test_train_use_gpu_on_a_cluster_without_gpus_is_refused_naming_it_and_the_fix(cluster, workers):
    cfg = load_config(None, {"train.use_gpu": True, "train.num_workers": workers})
    cluster(WITH_GPUS)
    assert session.check_resources(cfg) == []  # the config itself is placeable: only the GPUs are missing
    cluster(CPU_ONLY)
    with pytest.raises(ConfigError) as refused:
        session.check_resources(cfg)
    message = str(refused.value)
    assert "train.use_gpu" in message, message
    assert re.search(r"train\.use_gpu: false|add GPU nodes", message), message  # not "lower cpus_per_worker"


@pytest.mark.parametrize("gpus", [1, 0.5])
def test_relabel_gpus_per_actor_on_a_cluster_without_gpus_is_refused_naming_it_and_the_fix(cluster, gpus):
    cfg = load_config(None, {"relabel.gpus_per_actor": gpus})
    cluster(WITH_GPUS)
    assert session.check_resources(cfg) == []
    cluster(CPU_ONLY)
    with pytest.raises(ConfigError) as refused:
        session.check_resources(cfg)
    message = str(refused.value)
    assert "relabel.gpus_per_actor" in message, message
    assert re.search(r"relabel\.gpus_per_actor: 0\b|add GPU nodes", message), message  # not "lower cpus_per_actor"


def test_a_worker_given_a_gpu_whose_torch_sees_none_is_refused_naming_the_setting(monkeypatch):
    """Inside a Ray worker: a GPU asked for but no CUDA device visible to torch is an error, not a
    silent run on the CPU that would report CPU figures as GPU ones."""
    import torch

    from distill.runtime.execution.evaluate import worker_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert worker_device(False, "train.use_gpu") == torch.device("cpu")
    with pytest.raises(RuntimeError, match=r"relabel\.gpus_per_actor asks for a GPU.*sees no CUDA device.*set relabel\.gpus_per_actor to 0"):
        worker_device(True, "relabel.gpus_per_actor")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert worker_device(True, "train.use_gpu") == torch.device("cuda")
