"""What a GPU machine that reaches no package index needs to run `benchmarks/gpu_check.sh`, in one
file small enough to travel with the working tree.

    python benchmarks/gpu_bundle.py [--out .gpu-bundle] [--python-version 3.12] [--limit-mib 56]

The lent machines (the device tool's KINDS.md) carry PyTorch, torchaudio, onnxruntime, pyarrow,
pandas and a hundred more, but not Ray, MLflow, pydantic or soundfile, and reach no index; what
travels with a call is at most 64 MiB. Ray's wheel alone is 79 MB. So this script:

1. takes the project's requirement closure from this environment's metadata (the versions
   verified here, extras followed: ``ray[data,train,tune,default]``, ``mlflow[auth]``);
2. leaves out what the machine's image holds (``benchmarks/gpu_image.txt``) and what the check
   never imports (``NOT_FOR_THE_CHECK``: the synthesis engines other than espeak-ng, profilers);
3. installs the rest for the machine's Python and platform into a folder (``pip install
   --target --no-deps --only-binary``), drops what a local cluster never loads (``DROPPED``:
   Ray's Java jar, the dashboard's source maps, MLflow's web UI), and packs it as ``site.tar.xz``
   with ``MANIFEST.txt`` beside it.

On the GPU machine: ``PLD_SITE=.gpu-bundle/site.tar.xz benchmarks/gpu_check.sh OUT`` unpacks it
and runs the check with the image's own python3 (carry ``.gpu-bundle``). ``--python-version``
and ``--platform`` build it for another machine. A rehearsal on this one (docs/benchmarks.md,
"The GPU check")::

    python benchmarks/gpu_bundle.py --python-version 3.11 --out /tmp/bundle --image-venv /tmp/image
    PLD_SITE=/tmp/bundle/site.tar.xz PYTHON=/tmp/image/bin/python benchmarks/gpu_check.sh --dry-run OUT
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "benchmarks" / "gpu_image.txt"
PROJECT = "pld-platform"
# Installed here, never imported by throughput.py --quick --espeak-only (each a lazy import in distill).
NOT_FOR_THE_CHECK = {
    "pyopenjtalk-plus": "Open JTalk engine", "sudachipy": "Open JTalk's dictionary", "sudachidict-core": "the same",
    "hibari-tts": "hibari engine", "py-nanotts": "Pico engine", "pyroomacoustics": "reverberation augmentation",
    "py-spy": "Ray's stack dumps", "virtualenv": "Ray's per-job virtualenvs", "distlib": "virtualenv's",
    "python-discovery": "virtualenv's",
}
# Paths under the site folder (globs) that a local Ray cluster and a sqlite MLflow store never load:
# Ray's Java workers, the dashboard's source maps (its build itself is needed: without it the
# dashboard does not start), MLflow's web UI (the check starts no `mlflow server`).
DROPPED = ["ray/jars", "ray/dashboard/client/build/**/*.map", "mlflow/server/js/build"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]


def requirement_closure(root: str, requires, version, python_version: str | None = None) -> dict[str, str]:
    """Every distribution ``root`` needs, name → version, following extras and markers (those on
    the Python version read as ``python_version``'s, the target machine's). ``requires(name)``
    gives a distribution's requirement strings (None when it is not installed), ``version(name)``
    its version: importlib.metadata's, or a test's fakes."""
    target = {"python_version": python_version, "python_full_version": f"{python_version}.0"} if python_version else {}
    found: dict[str, set[str]] = {}
    versions: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(root, set())]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in found and extras <= found[key]:
            continue
        reqs = requires(name)
        if reqs is None:
            raise SystemExit(f"{name} is required (by the closure of {root}) but not installed here: "
                             f"run `make install` first, then build the bundle from that venv")
        found[key] = found.get(key, set()) | extras
        versions[key] = version(name)
        environments = [{**target, "extra": e} for e in (found[key] or {""})]
        for text in reqs:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate(env) for env in environments):
                continue
            todo.append((req.name, set(req.extras)))
    versions.pop(canonicalize_name(root))
    return dict(sorted(versions.items()))


def to_bundle(closure: dict[str, str], image: set[str], skipped=NOT_FOR_THE_CHECK) -> dict[str, str]:
    """The closure less what the image holds and what the check never imports."""
    left_out = {canonicalize_name(n) for n in image} | {canonicalize_name(n) for n in skipped}
    return {name: v for name, v in closure.items() if name not in left_out}


def read_image(path: Path) -> set[str]:
    """Package names, one a line; ``#`` starts a comment."""
    names = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return {canonicalize_name(n) for n in names if n}


def installed(name: str):
    try:
        return metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        return None


def drop_unused(site: Path) -> None:
    for pattern in DROPPED:
        for path in site.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def stand_in_image(venv: Path, image: set[str]) -> Path:
    """A venv that sees only this environment's distributions the image list names (linked, not
    copied): the machine's image, here, for a rehearsal of the bundle. Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--clear", str(venv)], check=True)
    linked = venv / "image-site"
    linked.mkdir()
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in image:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            source = Path(dist.locate_file(top))
            if source.exists() and not (linked / top).exists():
                (linked / top).symlink_to(source)
    (next(venv.glob("lib/python*/site-packages")) / "image.pth").write_text(f"{linked}\n")
    return venv / "bin" / "python"


def build(out: Path, python_version: str, platforms: list[str], limit_mib: float, image: set[str]) -> int:
    closure = requirement_closure(PROJECT, installed, metadata.version, python_version)
    wanted = to_bundle(closure, image)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pld-gpu-bundle-") as tmp:
        site = Path(tmp) / "site"
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--target", str(site), "--no-deps", "--no-compile",
               "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
               *[a for p in platforms for a in ("--platform", p)], *[f"{n}=={v}" for n, v in wanted.items()]]
        if subprocess.run(cmd).returncode:
            print(f"pip could not fetch every wheel for Python {python_version} on {platforms}: see above", file=sys.stderr)
            return 1
        drop_unused(site)
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts point at this machine's python
        unpacked = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
        with tarfile.open(out / "site.tar.xz", "w:xz", preset=9) as tar:
            tar.add(site, arcname=".")
    packed = (out / "site.tar.xz").stat().st_size
    lines = [f"# for Python {python_version} on {platforms[0]}; {len(wanted)} distributions, "
             f"{unpacked / 2**20:.1f} MiB unpacked, {packed / 2**20:.1f} MiB packed",
             *[f"{n}=={v}" for n, v in wanted.items()],
             "# left out, on the image: " + " ".join(sorted(n for n in closure if n in image)),
             "# left out, not imported by the check: " + " ".join(sorted(n for n in closure if n in NOT_FOR_THE_CHECK)),
             "# dropped paths: " + " ".join(DROPPED)]
    (out / "MANIFEST.txt").write_text("\n".join(lines) + "\n")
    print(lines[0])
    if packed > limit_mib * 2**20:
        print(f"{out / 'site.tar.xz'} is {packed / 2**20:.1f} MiB, over --limit-mib {limit_mib}: it would not travel "
              f"with the working tree (64 MiB in all)", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu-bundle")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python (KINDS.md: 3.12.3)")
    ap.add_argument("--platform", action="append", help=f"wheel platform tags (default: {PLATFORMS})")
    ap.add_argument("--limit-mib", type=float, default=56, help="refuse a bundle larger than this (the tree travels in 64 MiB)")
    ap.add_argument("--image", type=Path, default=IMAGE, help="package names the machine's image holds")
    ap.add_argument("--image-venv", type=Path, help="also make a venv here that sees only the image's packages "
                    "(from this environment), to rehearse the bundle on this machine")
    args = ap.parse_args()
    if args.image_venv:
        print(f"the image's stand-in: {stand_in_image(args.image_venv, read_image(args.image))}")
    return build(args.out, args.python_version, args.platform or PLATFORMS, args.limit_mib, read_image(args.image))


if __name__ == "__main__":
    sys.exit(main())
