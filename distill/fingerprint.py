"""What of a resolved config decides the numbers a run produces: the part that fingerprints a
study cell and a stage shared between chains."""

from __future__ import annotations

import json
from typing import Any

# What does not change a single number a run produces, and so is left out of a cell's
# fingerprint: the run's name (each cell and seed names its run), where it stores and tracks
# (a study moved to another disk or MLflow server is the same study), which cluster runs it,
# and how long or how often training waits and retries (a restart continues from the last
# epoch's checkpoint), whether a stage trains in the driver, in actors or in a worker group (one
# worker: the same loop, the same weights, test_faults_integration.py; several: the same loop on
# shards cut otherwise, so close weights, not equal ones), how many of its checkpoints a stage keeps, how often it
# scores its validation split (nothing trains on it: the curves get fewer points), and whether a
# chain also scores the held-out parts (it adds metrics, changes none). Everything else stays in, even what looks operational: train.num_workers
# shards the data and changes the gradient steps, batch sizes and precisions change the
# arithmetic, and cpus_per_worker sets torch's threads, whose reductions round differently.
NOT_RESULTS = ("name", "storage", "tracking", "ray", "train.resource_wait_s", "train.max_failures",
               "train.runner", "train.keep_all_checkpoints", "train.validate_every", "stages.*.train.validate_every",
               "eval.held_out_parts")


def semantic_config(resolved: dict[str, Any], drop: tuple[str, ...] = NOT_RESULTS) -> dict[str, Any]:
    """``resolved`` (a config's ``model_dump(mode="json")``) without the ``drop`` keys (dotted; a
    ``*`` stands for every key at its level, as in ``stages.*.train``)."""
    out = json.loads(json.dumps(resolved))  # a deep copy of plain JSON
    for key in drop:
        *parents, leaf = key.split(".")
        nodes = [out]
        for p in parents:
            nodes = [child for node in nodes if isinstance(node, dict)
                     for child in (node.values() if p == "*" else [node.get(p, {})])]
        for node in nodes:
            if isinstance(node, dict):
                node.pop(leaf, None)
    if isinstance(out.get("stages"), dict):  # a stage recipe left setting nothing is no recipe
        out["stages"] = {name: recipe for name, recipe in out["stages"].items() if _sets_something(recipe)}
    return out


def _sets_something(node: Any) -> bool:
    return any(_sets_something(v) for v in node.values()) if isinstance(node, dict) else node is not None
