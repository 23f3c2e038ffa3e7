"""Which corpus and which augmentation make a teacher that hears words, not one synthesizer.

    python benchmarks/engine_choice.py --corpus data/synth-sc --before-corpus data/synth-espeak \
        --work benchmarks/results/engine-choice [--only NAME ...] [--epochs 30]

Each setting trains the quickstart's 1000 ms teacher (a chain 1000 -> 500 ms with a 1-epoch
student and no baselines, so that only the teacher matters) and evaluates it with `pld eval` on
the multi-engine corpus's validation split, its unseen-accent validation part, its unseen-engine
validation part (what chooses), and, for the record only, the test split, its unseen-accent part
and the unseen-engine test part. "before" trains on the espeak-only corpus (another seed, so no
speaker is shared). Every setting's numbers go to WORK/NAME.json as it finishes; a finished
setting gets only the parts it lacks (a part added since), from its run in WORK/mlflow.db.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

BASE = ["chain.lengths_ms=[1000,500]", "chain.baselines=[]", "train.epochs=1"]
AUG = "train.augment."
SETTINGS: dict[str, list[str]] = {
    "before": [],  # the espeak-only corpus, the standard augmentation
    "engines": [],  # the multi-engine corpus, the standard augmentation
    "speed": [AUG + "speed_prob=0.5", AUG + "speed_range=[0.85,1.15]"],
    "reverb": [AUG + "reverb_prob=0.5"],
    "gain": [AUG + "gain_prob=0.5"],
    "band": [AUG + "band_prob=0.5"],
    "codec": [AUG + "codec_prob=0.3"],
    "specaug": [AUG + "spec_time_masks=2", AUG + "spec_freq_masks=2"],
    "warp": [AUG + "warp_prob=0.5"],
    "mixstyle": [AUG + "mixstyle_prob=0.5"],
    "mixup": [AUG + "mixup_prob=0.5"],
}


def pld(*args: str) -> str:
    proc = subprocess.run([str(Path(sys.executable).parent / "pld"), *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"pld {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def _eval_json(run_id: str, spec: str, name: str, split: str, tracking: str) -> str:
    out = pld("eval", run_id, "--data", spec, "--split", split, "--name", name, "--json", "--tracking-uri", tracking)
    return out[out.index("["):out.rindex("]") + 1]


def score(result: dict, parts: tuple[tuple[str, str, str], ...], tracking: str) -> dict:
    """``result`` with the teacher's accuracy on each of ``parts`` (key, data spec, split) it lacks."""
    for key, spec, split in parts:
        if key not in result:
            rows = json.loads(_eval_json(result["run_id"], spec, key, split, tracking))
            teacher = next(r for r in rows if r["stage"] == "teacher")
            result[key] = {p: round(teacher[f"acc_{p}"], 4) for p in ("window", "stream", "center")}
    return result


def finished_chain(tracking: str, name: str) -> str | None:
    import mlflow
    client = mlflow.MlflowClient(tracking)
    experiment = client.get_experiment_by_name("pld")
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}' and "
                              "attributes.status = 'FINISHED' and tags.`pld.kind` = 'chain'")
    return runs[0].info.run_id if runs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--before-corpus", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--config", default="configs/quickstart.yaml")
    ap.add_argument("--epochs", type=int, default=None, help="teacher epochs (default: the config's)")
    ap.add_argument("--only", nargs="*", help="settings to run (default: all)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=KEY=VALUE;KEY=VALUE",
                    help="a further setting on the multi-engine corpus")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = str(Path(args.corpus).resolve())
    settings = dict(SETTINGS)
    for item in args.extra:
        name, _, sets = item.partition("=")
        settings[name] = [s for s in sets.split(";") if s]
    unseen_accent = work / "unseen_accent_test.yaml"
    unseen_accent.write_text(f"data:\n  name: speech_commands\n  path: {corpus}\n"
                             "  testing_list: testing_unseen_voice_list.txt\n")
    unseen_accent_val = work / "unseen_accent_validation.yaml"
    unseen_accent_val.write_text(f"data:\n  name: speech_commands\n  path: {corpus}\n"
                                 "  validation_list: validation_unseen_voice_list.txt\n")
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    parts = (("validation", f"speech_commands:{corpus}", "validation"),
             ("unseen_accent_validation", str(unseen_accent_val), "validation"),
             ("unseen_engine_validation", f"speech_commands_test:{corpus}/_unseen_engine_validation_", "test"),
             ("test", f"speech_commands:{corpus}", "test"),
             ("unseen_accent_test", str(unseen_accent), "test"),
             ("unseen_engine_test", f"speech_commands_test:{corpus}/_unseen_engine_test_", "test"))
    for name in args.only or settings:
        out = work / f"{name}.json"
        if out.exists():  # finished: only the parts it lacks (a part added since) are scored
            result = json.loads(out.read_text())
            if all(key in result for key, _, _ in parts):
                continue
            out.write_text(json.dumps(score(result, parts, tracking), indent=2) + "\n")
            continue
        data = str(Path(args.before_corpus if name == "before" else args.corpus).resolve())
        sets = BASE + [f"data.path={data}", f"storage.root={work / 'runs'}", f"tracking.uri={tracking}",
                       f"name=choice-{name}"] + settings[name]
        if args.epochs:
            sets.append(f"train.teacher_epochs={args.epochs}")
        t0 = time.time()
        run_id = finished_chain(tracking, f"choice-{name}")  # trained before the evaluation stopped
        if run_id is None:
            log = pld("run", args.config, "--new", *[x for s in sets for x in ("--set", s)])
            run_id = re.findall(r"chain run id: ([0-9a-f]{32})", log)[0]
        result = {"setting": name, "sets": settings[name], "corpus": data, "run_id": run_id,
                  "train_s": round(time.time() - t0, 1)}
        result = score(result, parts, tracking)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{name}: " + ", ".join(f"{k} {v['stream']:.3f}" for k, v in result.items() if isinstance(v, dict)),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
