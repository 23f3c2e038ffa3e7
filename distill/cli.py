"""The ``pld`` command line.

  pld run CONFIG [--set a.b=c …] [--tracking-uri URI] [--address ADDR] [--verbose] [--new] [--share-stages] [--dry-run]
  pld resume RUN_ID [--tracking-uri URI] [--address ADDR] [--verbose]
  pld submit [--address http://HOST:8265] [--working-dir DIR] [--env NAME=VALUE …] [--no-wait] -- COMMAND …
  pld sweep CONFIG --grid KEY=[V1,V2,…] [--grid …] [--set a.b=c …] [--max-concurrent N] [--tracking-uri URI]
  pld eval RUN_ID --data SPEC [--split test] [--name PREFIX] [--json] [--tracking-uri URI]
  pld report RUN_ID [--out DIR] [--tracking-uri URI]
  pld compare RUN_ID RUN_ID … [--tracking-uri URI]
  pld export RUN_ID [--stage NAME] [--out DIR] [--register NAME] [--int8] [--tracking-uri URI]
  pld predict MODEL AUDIO… [--hop-ms 100] [--threshold T | --max-fa-per-hour 10] [--merge-ms 1000] [--json] [--tracking-uri URI]
  pld study STUDY.yaml [--records DIR] [--tracking-uri URI] [--address ADDR] [--verbose]
  pld study report STUDY.yaml [--records DIR] [--out DIR]
  pld data check SPEC [--json]
  pld data synth --out DIR [--seed N] [--speakers N] [--val-fraction F] [--test-fraction F] [--repeats N] [--unknown-words N]
                 [--engines ENGINE=W,...] [--heldout-engine-val ENGINE[:FAMILY]] [--heldout-engine-test ENGINE[:FAMILY]]
                 [--unseen-engine-speakers N] [--rate-range LO HI] [--word-duration F]
                 [--vtl-range LO HI] [--placement uniform|center|loudest] [--center-jitter-ms MS] [--pause-ms LO HI]
                 [--heldout-val-voices N|VOICES] [--heldout-test-voices N|VOICES] [--workers N] [--overwrite]

SPEC names a dataset: NAME:PATH (a registry name and a root directory, e.g.
speech_commands_test:/data/sc_test_v2 or folder:/data/sounds) or a YAML file with a data: block.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from typing import Any

import yaml

from distill.corpus.command import add_synth_arguments
from distill.runtime.infra.submit import add_submit_arguments


def _parse_sets(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            from distill.config import ConfigError

            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.epochs=3), got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)  # YAML scalars/lists only; nothing is evaluated
        except yaml.YAMLError as exc:
            from distill.config import ConfigError

            raise ConfigError(f"--set {key.strip()}: not a plain YAML value ({str(exc).splitlines()[0]})") from None
    return overrides


def _services(args: argparse.Namespace):
    """The MLflow store and Ray cluster a command's flags name."""
    from distill.runtime.infra.session import Services

    return Services(tracking=args.tracking_uri, address=args.address, verbose=args.verbose)


def cmd_run(args: argparse.Namespace) -> int:
    from distill.config import load_config

    cfg = load_config(args.config, _parse_sets(args.set), overrides_flag="--set")
    if args.dry_run:
        from distill.stages import describe_run

        from distill.config import ConfigError

        text, problem = describe_run(cfg, address=args.address)
        print(text, end="")
        if problem:  # the plan is printed, but this config would not run here: say so last, and fail
            raise ConfigError(f"data: {problem} (the dry run could not read the dataset; fix data.path, or run "
                              "where the data is)")
        return 0
    from distill.runtime.execution.chain import run_chain

    run_chain(cfg, _services(args), new=args.new, share_stages=args.share_stages)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from distill.runtime.analysis.sweep import parse_grid, run_sweep

    if args.max_concurrent < 1:
        raise ValueError("--max-concurrent must be at least 1")
    rows = run_sweep(args.config, _parse_sets(args.set), parse_grid(args.grid), tracking=args.tracking_uri,
                     address=args.address, max_concurrent=args.max_concurrent, verbose=args.verbose)
    return 0 if any(r["status"] == "ok" for r in rows) else 1


def cmd_resume(args: argparse.Namespace) -> int:
    from distill.runtime.execution.chain import run_chain
    from distill.runtime.infra.resume import chain_config

    cfg = chain_config(args.run_id, args.tracking_uri)
    run_chain(cfg, _services(args), resume_run_id=args.run_id)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from distill.runtime.infra.submit import parse_env, submit

    entrypoint = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    submit(entrypoint, args.address, working_dir=args.working_dir, env=parse_env(args.env), wait=not args.no_wait)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from distill.corpus.command import synthesize_from_args

    synthesize_from_args(args)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from distill.data.base import parse_data_spec
    from distill.runtime.execution.chain_eval import eval_json, eval_table, evaluate_chain

    options = parse_data_spec(args.data)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print  # noqa: E731 (stdout stays JSON)
    rows = evaluate_chain(args.run_id, options, split=args.split, name=args.name, tracking=args.tracking_uri, say=say)
    if args.json:
        print(json.dumps(eval_json(rows), indent=2))
    else:
        print(eval_table(rows))
        print(f"logged to the chain's runs as {args.name or options.name}_acc_<protocol>")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from distill.runtime.analysis.report import report_chain

    html = report_chain(args.run_id, args.out, tracking=args.tracking_uri)
    print(f"report: {html} (with report.md and its PNGs beside it); logged as artifacts report/ of run {args.run_id}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from distill.runtime.analysis.report import compare_chains

    print(compare_chains(args.run_ids, tracking=args.tracking_uri, out_dir=args.out))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from distill.runtime.deployment.export import export_run

    export_run(args.run_id, stage=args.stage, out=args.out, register=args.register, int8=args.int8,
               tracking=args.tracking_uri)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from distill.runtime.deployment.predict import load_model, operating_point, predict_files

    if args.hop_ms <= 0:
        raise ValueError(f"--hop-ms {args.hop_ms}: must be positive")
    err = lambda line: print(line, file=sys.stderr)  # noqa: E731 (stdout holds the detections only)
    spotter, card = load_model(args.model, tracking=args.tracking_uri, say=err)
    if args.merge_ms < 0:
        raise ValueError(f"--merge-ms {args.merge_ms}: must be 0 (no merging) or more")
    if args.threshold is not None and args.max_fa_per_hour is not None:
        raise ValueError("give --threshold or --max-fa-per-hour, not both")
    if args.max_fa_per_hour is not None and args.max_fa_per_hour < 0:
        raise ValueError(f"--max-fa-per-hour {args.max_fa_per_hour}: must be 0 or more")
    point = operating_point(card, args.threshold, args.max_fa_per_hour)
    return predict_files(spotter, card, args.audio, point, hop_ms=args.hop_ms, merge_ms=args.merge_ms,
                         as_json=args.json)


def cmd_study(args: argparse.Namespace) -> int:
    from distill.study.spec import load_study

    target = list(args.target)
    report = target[0] == "report" and len(target) == 2
    if len(target) != 1 and not report:
        raise ValueError("usage: pld study STUDY.yaml [...] or pld study report STUDY.yaml [...]")
    if args.out and not report:
        raise ValueError("--out is an option of pld study report")
    study = load_study(target[-1])
    from distill.study.run import default_records_dir, default_report_dir

    records = args.records or default_records_dir(study)
    if report:
        from distill.study.report import write_report

        out = args.out or default_report_dir(study)
        data = write_report(study, records, out)
        n = sum(len(c["seeds"]) for c in data["cells"])
        print(f"study report: {out}/report.md (and report.json, figures) from {n} record(s) in {records}")
        return 0
    from distill.study.run import run_study

    run_study(study, records_dir=records, tracking=args.tracking_uri, address=args.address, verbose=args.verbose)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from distill.data.base import build_source_index, parse_data_spec
    from distill.data.check import report, report_json, scan

    options = parse_data_spec(args.spec)
    index = build_source_index(options)
    result = scan(index, options)
    if args.json:
        print(json.dumps(report_json(index, result), indent=2))
    else:
        print(report(index, options, result), end="")
    return 1 if len(result.quarantine) else 0  # scripts can gate on a clean dataset


def add_connection_args(parser: argparse.ArgumentParser, ray: bool = True) -> None:
    """Where a command tracks (MLflow) and, for commands that run chains, computes (Ray)."""
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    if ray:
        parser.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    add_verbose(parser, ray)


def add_verbose(parser: argparse.ArgumentParser, ray: bool = False) -> None:
    """--verbose on every subcommand: an error's full traceback (and, where Ray runs, its logs)."""
    parser.add_argument("--verbose", action="store_true",
                        help="print an error's full traceback" + (" and forward Ray's worker logs and INFO "
                                                                  "messages to the console" if ray else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pld", description="Progressive Label Distillation on Ray, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a PLD chain from a YAML config")
    run.add_argument("config", help="experiment YAML (see configs/)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    add_connection_args(run)
    run.add_argument("--new", action="store_true",
                     help="start a new chain even if an unfinished one with the same config exists (default: resume it)")
    run.add_argument("--share-stages", action="store_true",
                     help="reuse a stage (teacher, baseline, student) that another chain in the same storage root "
                          "finished from the same inputs, instead of training it again")
    run.add_argument("--dry-run", action="store_true", help="print the resolved config and the stage plan, then exit")
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser("sweep", help="one chain per grid point, as Ray Tune trials under one MLflow sweep run")
    sweep.add_argument("config", help="base experiment YAML")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=[V1,V2,...]",
                       help="a config field and its values (YAML list); several --grid make a cartesian grid")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config field")
    sweep.add_argument("--max-concurrent", type=int, default=1, help="chains in flight at once (default 1)")
    add_connection_args(sweep)
    sweep.set_defaults(func=cmd_sweep)

    sm = sub.add_parser("submit", help="run a command as a Ray job on a cluster and follow its output "
                                       "(ray job submit, with one-line refusals)")
    add_submit_arguments(sm)
    add_verbose(sm, ray=True)
    sm.set_defaults(func=cmd_submit)

    resume = sub.add_parser("resume", help="continue an unfinished chain at its first unfinished stage")
    resume.add_argument("run_id", metavar="RUN_ID", help="the chain's MLflow parent run id")
    add_connection_args(resume)
    resume.set_defaults(func=cmd_resume)

    ev = sub.add_parser("eval", help="evaluate every model of a finished chain on another dataset")
    ev.add_argument("run_id", metavar="RUN_ID", help="the chain's MLflow parent run id (printed at the end of pld run)")
    ev.add_argument("--data", required=True, metavar="SPEC", help="NAME:PATH or a YAML file with a data: block")
    ev.add_argument("--split", default="test", help="split of the dataset to evaluate on (default: test)")
    ev.add_argument("--name", help="metric prefix (default: the dataset's registry name)")
    ev.add_argument("--json", action="store_true", help="print a JSON array, one object per model")
    add_connection_args(ev, ray=False)
    ev.set_defaults(func=cmd_eval)

    rep = sub.add_parser("report", help="write a chain's HTML/Markdown report with plots and log it to the chain's run")
    rep.add_argument("run_id", metavar="RUN_ID", help="the chain's MLflow parent run id")
    rep.add_argument("--out", help="directory for report.html, report.md and the PNGs (default: a temporary one)")
    add_connection_args(rep, ray=False)
    rep.set_defaults(func=cmd_report)

    cmp = sub.add_parser("compare", help="print chains side by side: differing config values, accuracies per stage")
    cmp.add_argument("run_ids", metavar="RUN_ID", nargs="+", help="chain parent run ids")
    cmp.add_argument("--out", help="also write compare.png (accuracy against input length, per chain) here")
    add_connection_args(cmp, ray=False)
    cmp.set_defaults(func=cmd_compare)

    exp = sub.add_parser("export", help="a stage's model as ONNX (waveform in, posteriors out) with labels.json, "
                                        "a model card (and, with --int8, an int8 variant); optionally registered in MLflow")
    exp.add_argument("run_id", metavar="RUN_ID", help="a chain run (default: its final PLD student) or a stage run")
    exp.add_argument("--stage", help="the chain's stage to export (e.g. teacher, direct_500ms)")
    exp.add_argument("--out", help="output folder (default: ./export-<stage>-<run id prefix>)")
    exp.add_argument("--register", metavar="NAME", help="log an MLflow pyfunc model and register it as NAME "
                                                         "(alias @current)")
    # opt-in, and kept only where it pays: int8 must measure ≥ 1.3x faster than fp32 here (docs/deploy.md)
    exp.add_argument("--int8", action="store_true", help="also write model.int8.onnx, the network's convolutions "
                                                        "quantized to int8, only when it measures at least 1.3x faster "
                                                        "than fp32 on this machine (the card records the figure)")
    add_connection_args(exp, ray=False)
    exp.set_defaults(func=cmd_export)

    pr = sub.add_parser("predict", help="spot keywords in audio files of any length (exit 1 if a file cannot be read)")
    pr.add_argument("model", metavar="MODEL", help="a chain or stage run id, models:/NAME@ALIAS (or /VERSION), "
                                                   "or an exported .onnx file")
    pr.add_argument("audio", metavar="AUDIO", nargs="+", help="audio files (WAV, FLAC, OGG; any rate and channels)")
    pr.add_argument("--hop-ms", type=float, default=100.0, help="time between decisions (default 100)")
    pr.add_argument("--threshold", type=float, help="keyword posterior that fires (default: the card's operating "
                                                    "point for --max-fa-per-hour)")
    pr.add_argument("--max-fa-per-hour", type=float,
                    help="fire at the card's lowest threshold whose false accepts per hour on the test split's "
                         "silence and unknown words stay within this (default 10)")
    pr.add_argument("--merge-ms", type=float, default=1000.0,
                    help="detections of one keyword within this many ms of a stronger one are merged into it "
                         "(default 1000; 0: every threshold crossing)")
    pr.add_argument("--json", action="store_true", help="JSON lines, one detection each")
    add_connection_args(pr, ray=False)
    pr.set_defaults(func=cmd_predict)

    st = sub.add_parser("study", usage="pld study [report] STUDY.yaml [--records DIR] [--out DIR] "
                                       "[--tracking-uri URI] [--address ADDR] [--verbose]", help="run a study (every cell x seed as a chain, one record each; finished ones "
                                      "reused), or `pld study report STUDY.yaml` for its tables and figures")
    st.add_argument("target", nargs="+", metavar="[report] STUDY.yaml", help="the study file, after `report` for the report")
    st.add_argument("--records", help="records folder (default: <study file's folder>/<study name>/records)")
    st.add_argument("--out", help="report: output folder (default: <study file's folder>/<study name>/report)")
    add_connection_args(st)
    st.set_defaults(func=cmd_study)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="scan a dataset: clips per label and split, every problem "
                                          "(exit 1 when there are problems)")
    check.add_argument("spec", metavar="SPEC", help="NAME:PATH or a YAML file with a data: block")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    add_verbose(check)
    check.set_defaults(func=cmd_check)
    synth = data.add_parser("synth", help="synthesize a Speech Commands-layout corpus offline with espeak-ng")
    add_synth_arguments(synth)
    add_verbose(synth)
    synth.set_defaults(func=cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "verbose", False):  # before any MLflow or Ray call: their INFO lines only with --verbose
        from distill.runtime.infra.session import quiet_logs

        quiet_logs()
    from distill.config import ConfigError

    from distill.runtime.infra.errors import StepError, describe_os_error
    from distill.runtime.infra.submit import SubmitError

    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError, KeyError, StepError, OSError,
            SubmitError) as exc:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        if isinstance(exc, KeyError) and exc.args:
            message = exc.args[0]
        elif isinstance(exc, OSError) and not isinstance(exc, (FileNotFoundError, FileExistsError)):
            message = describe_os_error(exc)  # not a bare "[Errno N] …" without the path
        elif isinstance(exc, FileNotFoundError) and not exc.filename and exc.errno:
            message = describe_os_error(exc)
        else:
            message = exc
        print(f"pld: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pld: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from distill.runtime.infra.errors import (refused_message, step_error_within, tracking_message, tracking_refused,
                                            tracking_unreachable)

        if not (tracking_unreachable(exc) or tracking_refused(exc)):
            raise
        if getattr(args, "verbose", False):
            traceback.print_exc()
        if tracking_refused(exc) and step_error_within(exc) is None:
            print(f"pld: error: {refused_message(exc)}", file=sys.stderr)
            return 2
        hidden = step_error_within(exc)  # the step that failed first; closing its runs failed after it
        if hidden is not None:
            print(f"pld: error: {hidden}", file=sys.stderr)
            return 2
        resume = getattr(args, "run_id", None) if args.command == "resume" else None
        print(f"pld: error: {tracking_message(exc, resume)}"
              + ("" if resume else " (a chain that started: pld resume with the chain run id printed above)"),
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
