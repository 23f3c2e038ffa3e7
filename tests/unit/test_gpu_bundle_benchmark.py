"""benchmarks/gpu_bundle.py's choice of what travels to a GPU machine: the project's requirement
closure (extras and markers followed, markers read for the target Python), less the image's
packages and what the check never imports; and the image list it reads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("gpu_bundle", Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bundle.py")
bundle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bundle)

# A small world of installed distributions: name → requirement strings.
WORLD = {
    "app": ["Ray[data]>=2", "mlflow", "old-backport; python_version < '3.12'", "tests-only; extra == 'test'"],
    "ray": ["click", "pyarrow; extra == 'data'", "pandas; extra == 'data'", "dashboard; extra == 'default'"],
    "mlflow": ["click", "sqlalchemy"],
    "click": [], "pyarrow": ["numpy"], "pandas": ["numpy"], "numpy": [], "sqlalchemy": [], "old-backport": [],
}


def closure(python_version=None):
    return bundle.requirement_closure("app", lambda n: WORLD.get(n.lower()), lambda n: f"{n.lower()}-1.0", python_version)


def test_the_closure_follows_extras_and_reads_markers_for_the_target_python():
    assert set(closure("3.11")) == {"ray", "mlflow", "click", "pyarrow", "pandas", "numpy", "sqlalchemy", "old-backport"}
    # The backport is for Pythons before 3.12: a 3.12 machine does not get it. Ray's 'default'
    # extra was not asked for, and the root's own test extra is not followed.
    assert set(closure("3.12")) == {"ray", "mlflow", "click", "pyarrow", "pandas", "numpy", "sqlalchemy"}
    assert closure("3.12")["ray"] == "ray-1.0"


def test_an_extra_asked_for_later_is_still_followed():
    world = {"app": ["other", "lib"], "other": ["lib[extra]"], "lib": ["plain", "more; extra == 'extra'"],
             "plain": [], "more": []}
    # A stack: "lib" is met first without its extra, then again through "other" with it.
    found = bundle.requirement_closure("app", lambda n: world.get(n), lambda n: "1", "3.12")
    assert set(found) == {"lib", "other", "plain", "more"}


def test_a_requirement_not_installed_here_is_named():
    world = {"app": ["absent"]}
    with pytest.raises(SystemExit, match="absent is required"):
        bundle.requirement_closure("app", lambda n: world.get(n), lambda n: "1")


def test_the_bundle_leaves_out_the_image_and_what_the_check_never_imports():
    found = closure("3.12")
    chosen = bundle.to_bundle(found, image={"NumPy", "pandas", "click"}, skipped={"SQLAlchemy": "unused"})
    assert chosen == {"ray": "ray-1.0", "mlflow": "mlflow-1.0", "pyarrow": "pyarrow-1.0"}


def test_the_shipped_image_list_is_read_with_its_comments_and_holds_torch_not_ray(tmp_path):
    image = bundle.read_image(bundle.IMAGE)
    assert {"torch", "torchaudio", "onnxruntime", "numpy", "pyarrow"} <= image
    assert not {"ray", "mlflow", "pydantic", "soundfile", "espeakng-loader"} & image
    listed = tmp_path / "image.txt"
    listed.write_text("# a comment\nTorch_Audio  # trailing\n\nnumpy\n")
    assert bundle.read_image(listed) == {"torch-audio", "numpy"}


def test_gpu_check_puts_the_bundle_before_the_machines_packages_and_stops_at_a_failed_import(tmp_path):
    """PLD_SITE: the bundle is unpacked and its packages come first, so a bundle's ray shadows the
    python's own; when an import fails, the check stops at step 1 and says so in steps.log."""
    import os
    import subprocess
    import sys
    import tarfile

    broken = tmp_path / "site" / "ray"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('the bundle probe shadows ray')\n")
    with tarfile.open(tmp_path / "site.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "site", arcname=".")
    env = {**os.environ, "PLD_SITE": str(tmp_path / "site.tar.xz"), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(bundle.ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    steps = (tmp_path / "out" / "steps.log").read_text()
    assert proc.returncode != 0
    assert "1. unpacking" in steps and "the bundle probe shadows ray" in steps
    assert "1. failed" in steps and "3. throughput.py" not in steps


def test_the_image_stand_in_sees_the_listed_packages_and_not_the_others(tmp_path):
    import subprocess

    python = bundle.stand_in_image(tmp_path / "image", {"numpy"})
    probe = "import importlib.util as u; print(u.find_spec('numpy') is not None, u.find_spec('ray') is not None)"
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.split() == ["True", "False"]


def test_only_what_a_local_cluster_never_loads_is_dropped(tmp_path):
    kept = ["ray/dashboard/client/build/index.html", "ray/dashboard/client/build/static/js/main.js", "ray/_raylet.so",
            "mlflow/server/__init__.py"]
    dropped = ["ray/jars/ray_dist.jar", "ray/dashboard/client/build/static/js/main.js.map", "mlflow/server/js/build/index.html"]
    for rel in kept + dropped:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    bundle.drop_unused(tmp_path)
    assert all((tmp_path / rel).exists() for rel in kept)
    assert not any((tmp_path / rel).exists() for rel in dropped)
    assert not (tmp_path / "ray" / "jars").exists()
