"""The pre-flight resource check's arithmetic: Ray places each bundle on one node."""

from __future__ import annotations

from distill.runtime.session import bundles_that_fit, largest_node


def test_bundles_fit_per_node_not_per_cluster_total():
    two_small = [{"CPU": 1.0}, {"CPU": 1.0}]
    assert bundles_that_fit({"CPU": 2}, two_small) == 0  # 2 CPUs in total, none on one node
    assert bundles_that_fit({"CPU": 1}, two_small) == 2
    assert bundles_that_fit({"CPU": 0.5}, [{"CPU": 2.0}]) == 4
    gpu_node, cpu_node = {"CPU": 8.0, "GPU": 2.0}, {"CPU": 16.0}
    assert bundles_that_fit({"CPU": 1, "GPU": 1}, [gpu_node, cpu_node]) == 2  # the GPUs bound it
    assert bundles_that_fit({"CPU": 1}, []) == 0
    assert largest_node([cpu_node, gpu_node]) == cpu_node and largest_node([]) == {}
