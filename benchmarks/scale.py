"""What a chain costs as its training set grows: bytes, time and memory per stage.

    python benchmarks/scale.py [--corpus data/synth-sc] [--factors 1 4 16 45] [--json OUT] [--workdir DIR]

For each factor F the corpus's training clips are repeated F times under new speaker names
(hard links: the same audio under new clip ids, so new crop offsets; validation and test stay
as they are), and `pld run` runs the quickstart's config with the paper's schedule
(1000 → 900 → … → 500 ms, both baselines) at one epoch per stage, as a user runs it. The default
corpus has 1,440 training clips, so F = 45 is Speech Commands' size (about 65 k).

Per stage, from its MLflow run and its folder: rows, bytes written (distilled dataset, model,
Ray Train's or the local runner's checkpoints), relabel crops/s and train samples/s. Over the
chain, sampled every 0.5 s: peak resident memory of the driver and of the largest Ray worker
process (all its resident pages, and its private ones: a worker's RSS also counts the
object-store pages it maps), and peak use of /dev/shm above its level before the run (where Ray's
object store lives, up to the cap Ray sets). Then, across factors: seconds and bytes per
training clip (flat = linear) and the memory peaks (flat = bounded).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quickstart.yaml"
PAPER = ["chain.lengths_ms=[1000,900,800,700,600,500]", "train.epochs=1", "train.teacher_epochs=1"]


def held_out(corpus: Path) -> set[str]:
    """Relative paths of the clips the corpus's lists put in validation or test."""
    names = set()
    for name in ("validation_list.txt", "testing_list.txt"):
        if (corpus / name).exists():
            names |= {line.strip() for line in (corpus / name).read_text().splitlines() if line.strip()}
    return names


def scaled_corpus(corpus: Path, out: Path, factor: int) -> int:
    """``corpus`` with every training clip of a word folder linked ``factor`` times (copies
    under new speaker ids); returns how many clip files it has."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    keep = held_out(corpus)
    files = 0
    for entry in sorted(corpus.iterdir()):
        target = out / entry.name
        if entry.is_file() or entry.name.startswith("_"):  # lists, manifests, noise, held-out parts: as they are
            target.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
            continue
        target.mkdir()
        for wav in sorted(entry.glob("*.wav")):
            os.link(wav, target / wav.name)
            files += 1
            if f"{entry.name}/{wav.name}" in keep:
                continue
            speaker, rest = wav.name.split("_", 1)
            for r in range(1, factor):
                copy = hashlib.blake2b(f"{speaker}/{r}".encode(), digest_size=4).hexdigest()
                os.link(wav, target / f"{copy}_{rest}")
                files += 1
    return files


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def shm_used() -> int:
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def memory(pid: int | str) -> dict[str, int]:
    """Resident bytes of a process (Linux /proc; zeros once it is gone): ``rss`` all of it,
    ``private`` its anonymous pages (what it allocated itself), ``shared`` the pages of /dev/shm it
    has mapped (Ray's object store, capped by Ray and counted once in ``shm_above_start``)."""
    fields = {"VmRSS:": "rss", "RssAnon:": "private", "RssShmem:": "shared"}
    out = dict.fromkeys(fields.values(), 0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(maxsplit=1)[0] if line else ""
            if key in fields:
                out[fields[key]] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def descendants(root: int) -> set[str]:
    """``root``'s process and every process below it, as /proc names."""
    children: dict[str, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # the parent is the field after the command's closing parenthesis and the state
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(entry.name)
    found, todo = set(), [str(root)]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def ray_worker_pids(under: int | None = None) -> dict[str, str]:
    """Processes whose command line is a Ray worker's (``ray::…``), with the task or actor it runs;
    with ``under``, only those below that process (a run's own, not another cluster's on the machine)."""
    pids = {}
    mine = descendants(under) if under is not None else None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (mine is None or entry.name in mine):
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"ray::"):
                pids[entry.name] = cmdline.split(b"\0")[0].decode(errors="replace").split()[0]
    return pids


def run_sampled(cmd: list[str], env: dict, cwd: Path, log: Path) -> dict:
    """Run ``cmd``; every 0.5 s read the driver's and each of its Ray workers' memory and /dev/shm
    (the driver starts its own cluster, so its workers are its descendants).
    A worker's RSS counts the object-store pages it maps; its private (anonymous) bytes do not."""
    base = shm_used()
    peak = {"driver_rss": 0, "driver_private": 0, "worker_rss": 0, "worker_private": 0, "workers_rss_sum": 0,
            "workers_private_sum": 0, "shm_above_start": 0}
    largest = {"rss": "", "private": ""}  # the task or actor of the largest worker by each measure
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            driver = memory(proc.pid)
            workers = [(name, memory(pid)) for pid, name in ray_worker_pids(under=proc.pid).items()]
            for field in ("rss", "private"):
                peak[f"driver_{field}"] = max(peak[f"driver_{field}"], driver[field])
                peak[f"workers_{field}_sum"] = max(peak[f"workers_{field}_sum"], sum(m[field] for _, m in workers))
                for name, m in workers:
                    if m[field] > peak[f"worker_{field}"]:
                        peak[f"worker_{field}"], largest[field] = m[field], name
            peak["shm_above_start"] = max(peak["shm_above_start"], shm_used() - base)
            time.sleep(0.5)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}); its console: {log}")
    return {**peak, "largest_worker": largest["rss"], "largest_private_worker": largest["private"],
            "wall_s": time.perf_counter() - started}


def chain_stages(uri: str) -> tuple[dict, list[dict]]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("pld").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("pld.kind") == "chain")
    run_dir = Path(parent.data.tags["pld.run_dir"])
    stages = []
    for name in parent.data.tags["pld.stages"].split(","):
        run = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id and r.info.run_name == name)
        m, rows, epochs = run.data.metrics, int(run.data.params["rows"]), int(run.data.params["epochs"])
        folder = run_dir / "stages" / name
        stages.append({"stage": name, "rows": rows, "epochs": epochs, "relabel_s": m["relabel_seconds"],
                       "train_s": m["train_seconds"], "eval_s": m["eval_seconds"],
                       "relabel_crops_per_s": rows / m["relabel_seconds"],
                       "train_samples_per_s": rows * epochs / m["train_seconds"],
                       "dataset_bytes": tree_bytes(folder / "data"), "model_bytes": tree_bytes(folder / "model"),
                       "checkpoint_bytes": tree_bytes(folder / "train"), "stage_bytes": tree_bytes(folder)})
    return {"run_dir": str(run_dir), "source_bytes": tree_bytes(run_dir / "source"), "run_bytes": tree_bytes(run_dir),
            "chain_s": parent.data.metrics["chain_seconds"],
            "train_clips": stages[0]["rows"]}, stages


def one_factor(corpus: Path, work: Path, factor: int) -> dict:
    folder = work / f"x{factor}"
    files = scaled_corpus(corpus, folder / "corpus", factor)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    sets = [f"data.path={folder / 'corpus'}", f"storage.root={folder / 'runs'}", *PAPER]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "distill.cli", "run", str(CONFIG), *[a for s in sets for a in ("--set", s)],
           "--tracking-uri", uri]
    memory = run_sampled(cmd, env, folder, folder / "console.log")
    chain, stages = chain_stages(uri)
    return {"factor": factor, "files": files, **chain, "memory": memory, "stages": stages}


def report(results: list[dict]) -> str:
    mb = lambda b: b / 1e6  # noqa: E731
    out = [f"{'clips':>7} {'stage':<16} {'rows':>7} {'dataset MB':>10} {'ckpt MB':>8} {'relabel/s':>9} {'train/s':>8}"]
    for r in results:
        for s in r["stages"]:
            out.append(f"{r['train_clips']:>7} {s['stage']:<16} {s['rows']:>7} {mb(s['dataset_bytes']):>10.2f} "
                       f"{mb(s['checkpoint_bytes']):>8.2f} {s['relabel_crops_per_s']:>9.0f} {s['train_samples_per_s']:>8.0f}")
    out += ["", f"{'clips':>7} {'chain s':>8} {'s/clip':>7} {'run MB':>8} {'source MB':>9} {'run/source':>10} "
                f"{'driver MB':>9} {'private':>7} {'worker MB':>9} {'private':>7} {'shm MB':>7}"]
    for r in results:
        m = r["memory"]
        out.append(f"{r['train_clips']:>7} {r['chain_s']:>8.0f} {r['chain_s'] / r['train_clips']:>7.3f} "
                   f"{mb(r['run_bytes']):>8.1f} {mb(r['source_bytes']):>9.1f} {r['run_bytes'] / r['source_bytes']:>10.2f} "
                   f"{mb(m['driver_rss']):>9.0f} {mb(m['driver_private']):>7.0f} {mb(m['worker_rss']):>9.0f} "
                   f"{mb(m['worker_private']):>7.0f} {mb(m['shm_above_start']):>7.0f}")
    if len(results) > 1:
        a, b = results[0], results[-1]
        per = lambda r, k: r[k] / r["train_clips"]  # noqa: E731
        out.append(f"\nfrom {a['train_clips']} to {b['train_clips']} clips: seconds per clip ×"
                   f"{per(b, 'chain_s') / per(a, 'chain_s'):.2f}, bytes per clip ×{per(b, 'run_bytes') / per(a, 'run_bytes'):.2f}, "
                   f"driver peak ×{b['memory']['driver_rss'] / a['memory']['driver_rss']:.2f}, "
                   f"largest worker peak ×{b['memory']['worker_rss'] / max(a['memory']['worker_rss'], 1):.2f} "
                   f"(private ×{b['memory']['worker_private'] / max(a['memory']['worker_private'], 1):.2f})")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=ROOT / "data" / "synth-sc")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16, 45])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--workdir", type=Path, help="keep the corpora and runs here (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pld-scale-")).resolve()
    results = []
    for factor in args.factors:
        print(f"[scale] ×{factor} …", flush=True)
        results.append(one_factor(args.corpus.resolve(), work, factor))
        print(report(results[-1:]), flush=True)
        if args.json:  # after every factor: a long run keeps what it measured
            args.json.write_text(json.dumps(results, indent=2) + "\n")
        if not args.workdir:
            shutil.rmtree(work / f"x{factor}", ignore_errors=True)
    print("\n" + report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
