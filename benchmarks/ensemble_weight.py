"""Which weight should an ensemble teacher give each member? Chosen on the unseen-engine validation part.

    python benchmarks/ensemble_weight.py --model RUN/stages/teacher/model --corpus data/synth-sc \
        --work DIR [--second-opinion CORPUS] [--weights 0 0.3 0.5 0.7 1] [--combine mean product] \
        [--unknown-offsets 0 -0.5 -1] [--speed-sets 1 0.9,1,1.1] [--max-validation-drop 0.005] [--json OUT]
    python benchmarks/ensemble_weight.py --pool SEED0.json SEED1.json ... [--max-validation-drop 0.005]

An ``ensemble``'s members each learn on their own loss, so its weights change no member's
training, only its answer (distill/core/ensemble.py): one trained ensemble is scored at every
weight. For two members, w is the second member's share (0: the first alone, 1: the second
alone), under each rule of ``--combine`` (``mean`` or ``product``, as the ``combine`` option),
at each ``--unknown-offsets`` (the ``unknown_offset`` option: added to the ``_unknown_``
class's log-posterior), and for each of ``--speed-sets`` (the ``speeds`` option: each member's
posteriors averaged over the input played at these speeds). Each member's posteriors on a part
are computed once per speed (stream protocol), then averaged and mixed. The row chosen is the
best on the unseen-engine validation part over every rule, weight, offset and set of speeds;
with ``--max-validation-drop``, only among the rows whose validation accuracy is within that of
the best row's (an offset must not buy the unseen engine with the corpus's own).
``--pool`` chooses for a recipe over several trained ensembles (seeds): each setting's accuracy is
the mean of its rows in the given ``--json`` records, and the same rule chooses.
The parts are benchmarks/engine_choice.py's: validation, unseen-accent validation, the
unseen-engine validation part (what chooses), and, for the record, test, unseen accents and the
unseen-engine test part; ``--second-opinion`` adds another corpus's unseen-engine validation part.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speech_embedding import clips, parts, waveforms  # noqa: E402 (the same parts, clips and scaling)

from distill.core.checkpoint import load_model_dir  # noqa: E402
from distill.core.ensemble import COMBINE, check_speeds, mixture_logits, offset_class, played_at  # noqa: E402
from distill.core.protocols import decide, protocol_starts, window_posteriors  # noqa: E402
from distill.names import UNKNOWN  # noqa: E402

CHOOSING_PART = "unseen_engine_validation"


def load_ensemble(model_dir: str):
    """The trained ensemble and its spec, read once for every part, or a clear error."""
    model, mspec = load_model_dir(model_dir)
    if mspec.model != "ensemble":
        raise ValueError(f"{model_dir}: model {mspec.model!r}, not an ensemble")
    return model, mspec


def member_posteriors(model, mspec, spec: str, split: str, speed: float = 1.0
                      ) -> tuple[list[torch.Tensor], np.ndarray, int | None]:
    """Each member's stream-protocol posteriors (clips, windows, classes) on a part, each window
    played at ``speed`` as the ``speeds`` option plays it, its labels as the model's indices, and
    the model's silence class."""
    frame, labels = clips(spec, split)
    unknown = sorted(set(frame.label) - set(mspec.labels))
    if unknown:
        raise ValueError(f"{spec} ({split}): labels {unknown} are not among the model's {mspec.labels}")
    waves = waveforms(frame)
    starts = protocol_starts(waves, mspec.input_samples, "stream")
    posts = [window_posteriors(lambda x, m=member.eval(): m(played_at(x, speed)), waves, mspec.input_samples, starts)
             for member in model.net.members]
    return posts, np.array([mspec.labels.index(v) for v in frame.label]), mspec.silence_index


def viewed(by_speed: dict[float, list[torch.Tensor]], speeds: list[float]) -> list[torch.Tensor]:
    """Each member's posteriors averaged over ``speeds`` (``by_speed``: member_posteriors' per speed)."""
    return [torch.stack(views).mean(0) for views in zip(*(by_speed[s] for s in speeds))]


def speed_set(text: str) -> list[float]:
    """``--speed-sets`` entry: ``1`` or ``0.9,1,1.1``."""
    try:
        speeds = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: playback speeds separated by commas, such as 0.9,1,1.1") from None
    try:
        return check_speeds(speeds)  # the option's own check
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def mixed_posteriors(posts: list[torch.Tensor], weights: list[float], combine: str = "mean",
                     unknown: int | None = None, offset: float = 0.0) -> torch.Tensor:
    """The members' posteriors combined as ``Ensemble`` combines them (core.ensemble.mixture_logits,
    then offset_class on the ``unknown`` class)."""
    log_posts = torch.stack(posts).clamp_min(1e-30).log()  # a softmax's zeros are underflow, not certainty
    return offset_class(mixture_logits(log_posts, weights, combine), unknown, offset).exp()


def mixed_decisions(posts: list[torch.Tensor], weights: list[float], silence: int | None,
                    combine: str = "mean", unknown: int | None = None, offset: float = 0.0) -> np.ndarray:
    return decide(mixed_posteriors(posts, weights, combine, unknown, offset), "stream", silence)


def mixed_accuracy(posts: list[torch.Tensor], weights: list[float], truth: np.ndarray, silence: int | None,
                   combine: str = "mean", unknown: int | None = None, offset: float = 0.0) -> float:
    return round(float((mixed_decisions(posts, weights, silence, combine, unknown, offset) == truth).mean()), 4)


def choose(rows: list[dict], max_validation_drop: float | None = None) -> dict:
    """The best row on the unseen-engine validation part (validation breaks a tie), among the rows
    within ``max_validation_drop`` of the best validation accuracy when it is given."""
    if max_validation_drop is not None:
        best = max(r["validation"] for r in rows)
        rows = [r for r in rows if r["validation"] >= best - max_validation_drop - 1e-9]
    return max(rows, key=lambda r: (r[CHOOSING_PART], r["validation"]))


def member_weights(w: float, members: int) -> list[float]:
    if members != 2:
        raise ValueError(f"--weights sweeps the second of two members' share; this ensemble has {members}")
    return [1 - w, w]


SETTING = ("combine", "w", "unknown_offset", "speeds")
# what a record written before an option existed scored with: the mean, no offset, the input as it is
SETTING_BEFORE = {"combine": "mean", "unknown_offset": 0.0, "speeds": [1.0]}


def setting_key(row: dict) -> tuple:
    return tuple(tuple(v) if isinstance(v, list) else v for v in (row.get(k, SETTING_BEFORE.get(k)) for k in SETTING))


def pool_rows(records: list[dict]) -> list[dict]:
    """Each setting's mean accuracy on every part over several ``--json`` records, or a clear error
    when a record lacks a setting another has."""
    keyed = [{setting_key(r): r for r in rec["rows"]} for rec in records]
    settings = list(keyed[0])
    for i, k in enumerate(keyed[1:], 1):
        if set(k) != set(settings):
            raise ValueError(f"--pool: record {i + 1} scores other settings than record 1 "
                             f"({sorted(set(k) ^ set(settings))}); score every model on the same grid")
    parts_ = [n for n in records[0]["rows"][0] if n not in SETTING]
    return [{**{k: list(v) if isinstance(v, tuple) else v for k, v in zip(SETTING, s)},
             **{n: round(float(np.mean([k[s][n] for k in keyed])), 4) for n in parts_}}
            for s in settings]


def print_table(rows: list[dict], chosen: dict) -> None:
    names = [n for n in rows[0] if n not in SETTING]
    print("| combine | w | unknown_offset | speeds | " + " | ".join(names) + " |\n|---|---|---|---|"
          + "---|" * len(names))
    for r in rows:
        speeds = ", ".join(f"{v:g}" for v in r.get("speeds", SETTING_BEFORE["speeds"]))
        print(f"| {r['combine']} | {r['w']:g}{' (chosen)' if r is chosen else ''} | {r['unknown_offset']:g} | "
              f"{speeds} | " + " | ".join(f"{r[n]:.3f}" for n in names) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a trained ensemble's model directory")
    ap.add_argument("--corpus", type=Path, help="the corpus whose parts score it")
    ap.add_argument("--work", type=Path, help="where the unseen-accent parts' specs are written")
    ap.add_argument("--pool", type=Path, nargs="+", help="--json records of several ensembles: choose on their means")
    ap.add_argument("--second-opinion", type=Path)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--combine", nargs="+", choices=COMBINE, default=list(COMBINE))
    ap.add_argument("--unknown-offsets", type=float, nargs="+", default=[0.0],
                    help="offsets added to the _unknown_ class's log-posterior (the unknown_offset option)")
    ap.add_argument("--speed-sets", type=speed_set, nargs="+", default=[[1.0]],
                    help="sets of playback speeds each member's posteriors are averaged over (the speeds option), "
                         "each as 0.9,1,1.1")
    ap.add_argument("--max-validation-drop", type=float,
                    help="choose only among rows within this of the best validation accuracy")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.pool:
        rows = pool_rows([json.loads(p.read_text()) for p in args.pool])
        chosen = choose(rows, args.max_validation_drop)
        print_table(rows, chosen)
        if args.json:
            args.json.write_text(json.dumps({"pooled": [str(p) for p in args.pool],
                                             **{f"chosen_{k}": chosen[k] for k in SETTING},
                                             "max_validation_drop": args.max_validation_drop, "rows": rows}, indent=1))
        return
    if not (args.model and args.corpus and args.work):
        ap.error("--model, --corpus and --work are required unless --pool is given")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    args.work.mkdir(parents=True, exist_ok=True)
    specs = parts(args.corpus.resolve(), args.work, args.second_opinion)
    model, mspec = load_ensemble(args.model)
    speeds = sorted({v for group in args.speed_sets for v in group})
    scored = {}  # part -> ({speed: each member's posteriors}, truth, silence)
    for name, (spec, split) in specs.items():
        by_speed = {v: member_posteriors(model, mspec, spec, split, v) for v in speeds}
        scored[name] = ({v: posts for v, (posts, _, _) in by_speed.items()}, *by_speed[speeds[0]][1:])
    members = len(next(iter(scored.values()))[0][speeds[0]])
    unknown = mspec.labels.index(UNKNOWN) if UNKNOWN in mspec.labels else None
    if unknown is None and any(args.unknown_offsets):
        raise SystemExit(f"--unknown-offsets: the model's labels {mspec.labels} have no {UNKNOWN} class to move")
    rows = [{"combine": combine, "w": w, "unknown_offset": offset, "speeds": group,
             **{name: mixed_accuracy(viewed(by_speed, group), member_weights(w, members), truth, silence, combine,
                                     unknown, offset)
                for name, (by_speed, truth, silence) in scored.items()}}
            for combine in args.combine for w in args.weights for offset in args.unknown_offsets
            for group in args.speed_sets]
    chosen = choose(rows, args.max_validation_drop)
    print_table(rows, chosen)
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "corpus": str(args.corpus), "chosen_w": chosen["w"],
                                         "chosen_combine": chosen["combine"],
                                         "chosen_unknown_offset": chosen["unknown_offset"],
                                         "chosen_speeds": chosen["speeds"],
                                         "max_validation_drop": args.max_validation_drop,
                                         "clips": {n: len(v[1]) for n, v in scored.items()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
