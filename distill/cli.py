"""The ``pld`` command line.

  pld run CONFIG [--set a.b=c …] [--tracking-uri URI] [--address ADDR] [--verbose]
  pld data synth --out DIR [--seed N] [--speakers N] [--repeats N] [--unknown-words N] [--workers N] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml


def _parse_sets(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            from distill.config import ConfigError

            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.epochs=3), got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)  # YAML scalars/lists only; nothing is evaluated
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    from distill.config import load_config

    cfg = load_config(args.config, _parse_sets(args.set))
    from distill.runtime.chain import run_chain

    run_chain(cfg, tracking=args.tracking_uri, address=args.address, verbose=args.verbose)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from distill.data.synth import UNKNOWN_WORDS, synthesize_corpus

    if not 1 <= args.unknown_words <= len(UNKNOWN_WORDS):
        raise ValueError(f"--unknown-words must be between 1 and {len(UNKNOWN_WORDS)}")
    synthesize_corpus(args.out, seed=args.seed, speakers=args.speakers, repeats=args.repeats, workers=args.workers,
                      unknown_words=UNKNOWN_WORDS[:args.unknown_words], overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pld", description="Progressive Label Distillation on Ray, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a PLD chain from a YAML config")
    run.add_argument("config", help="experiment YAML (see configs/)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    run.add_argument("--verbose", action="store_true", help="forward Ray's worker logs and INFO messages to the console")
    run.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    run.set_defaults(func=cmd_run)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    synth = data.add_parser("synth", help="synthesize a Speech Commands-layout corpus offline with espeak-ng")
    synth.add_argument("--out", required=True, help="output directory")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--speakers", type=int, default=40, help="number of synthetic speakers")
    synth.add_argument("--repeats", type=int, default=1, help="utterances of each word per speaker")
    synth.add_argument("--unknown-words", type=int, default=20,
                       help="how many non-keyword words to synthesize for _unknown_ (of 20)")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing corpus")
    synth.set_defaults(func=cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from distill.config import ConfigError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"pld: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pld: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
