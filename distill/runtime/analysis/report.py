"""``pld report`` and ``pld compare``: a chain's results from MLflow, as pictures and tables.

``pld report RUN_ID`` reads the chain's stage runs (their metrics, the confusion matrices they
logged as ``eval/confusion.json``) and writes ``report.html`` (no external resources; it
references its PNGs beside it), ``report.md`` and the PNGs of ``runtime/analysis/plots.py`` to a directory,
then logs them under ``report/`` of the chain's run. ``pld compare`` prints several chains'
accuracies side by side, with the config values they differ in.
"""

from __future__ import annotations

import html
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException

from distill.names import CONFIG_ARTIFACT, CONFUSION_ARTIFACT, INPUT_MS, METHOD, PROTOCOLS
from distill.runtime.analysis import plots
from distill.runtime.execution.chain_eval import chain_runs
from distill.runtime.execution.tracking import COLUMN_FORMATS, SUMMARY_COLUMNS, fmt, format_table, summary_row
from distill.runtime.infra.errors import tracking_refused

METRICS = ("test_acc_window", "test_acc_stream", "test_acc_center", "test_fa_per_hour_at_90_recall",
           "test_recall_at_1_fa_per_hour", "macs", "latency_us", "label_agreement", "relabel_to_silence",
           "relabel_to_unknown", "dropped_low_confidence", "best_val_acc", "train_clip_agreement")
CURVES = ("val_acc", "train_loss")  # per-epoch metrics (step = epoch) the report draws


@dataclass
class ChainReport:
    run_id: str
    name: str
    params: dict[str, str]
    config: dict
    rows: list[dict]  # one per finished stage: stage, method, input_ms, teacher, run_id and METRICS
    confusion: dict[str, dict]  # stage → {"labels": [...], protocol: matrix}


def load_chain(client: mlflow.MlflowClient, run_id: str) -> ChainReport:
    parent, children = chain_runs(client, run_id)
    rows, confusion = [], {}
    for run in children:
        row = {"stage": run.info.run_name, "method": run.data.tags.get(METHOD, ""),
               "input_ms": int(run.data.tags.get(INPUT_MS, 0)), "teacher": run.data.params.get("teacher_stage") or None,
               "run_id": run.info.run_id}
        row.update({k: run.data.metrics.get(k) for k in METRICS})
        row["curves"] = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                                 key=lambda m: m.step)]
                         for key in CURVES}
        rows.append(row)
        try:
            confusion[row["stage"]] = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{CONFUSION_ARTIFACT}")
        except (MlflowException, OSError) as exc:
            if tracking_refused(exc):
                raise
            pass  # chains from before confusion matrices were logged: the report leaves them out
    try:
        config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/{CONFIG_ARTIFACT}")) or {}
    except (MlflowException, OSError, yaml.YAMLError) as exc:
        if tracking_refused(exc):
            raise
        config = {}
    return ChainReport(run_id, parent.info.run_name, dict(parent.data.params), config, rows, confusion)


def table_rows(report: ChainReport) -> list[dict]:
    """The chain's summary table, row for row what ``pld run`` printed."""
    return [summary_row(r["stage"], r["method"], r["input_ms"], r["teacher"], r, r["run_id"]) for r in report.rows]


def _final_pair(report: ChainReport) -> dict[str, str]:
    """The confusion matrices to show: the final (shortest) PLD student and the direct baseline."""
    students = [r for r in report.rows if r["method"] == "pld" and r["stage"] != "teacher"]
    picked = {}
    if students:
        picked[f"PLD {min(students, key=lambda r: r['input_ms'])['stage']}"] = min(students, key=lambda r: r["input_ms"])["stage"]
    direct = [r for r in report.rows if r["method"] == "direct"]
    if direct:
        picked[f"direct {direct[0]['stage']}"] = direct[0]["stage"]
    return {title: stage for title, stage in picked.items() if stage in report.confusion}


def report_figures(report: ChainReport, out_dir: Path, protocol: str = "stream") -> list[tuple[str, str, Path]]:
    """Each figure the chain's data allows, drawn into ``out_dir``: (heading, caption, PNG)."""
    figures = [("Accuracy against input length", "PLD's students, the teacher and the baselines under each evaluation "
                "protocol (docs/cli.md: evaluation protocols).", plots.accuracy_vs_length(report.rows, out_dir / "accuracy.png"))]
    if any(r["test_fa_per_hour_at_90_recall"] is not None for r in report.rows):
        figures.append(("False alarms", "The test split's silence and unknown clips joined into one stream: false "
                        "accepts per hour at the threshold that keeps 90 % recall on keyword clips, and recall at 1 "
                        "false accept per hour.", plots.false_alarms_vs_length(report.rows, out_dir / "false_alarms.png")))
    pair = _final_pair(report)
    if pair:
        labels = report.confusion[next(iter(pair.values()))]["labels"]
        matrices = {title: report.confusion[stage][protocol] for title, stage in pair.items()}
        figures.append((f"Confusion matrices ({protocol} protocol)", "Rows: true class; columns: predicted; colour: "
                        "share of the row.", plots.confusion_matrices(matrices, labels, out_dir / "confusion.png", protocol)))
    if any(r["label_agreement"] is not None for r in report.rows):
        figures.append(("What relabeling did to the data", "Per distilled dataset: crops whose teacher label is the "
                        "clip's own, and crops of other classes the teacher called silence or unknown.",
                        plots.label_agreement(report.rows, out_dir / "label_agreement.png")))
    if any(r["curves"].get("val_acc") for r in report.rows):
        figures.append(("Training curves", "Each stage's validation accuracy (stream protocol) and training loss per "
                        "epoch: a curve still rising at its last epoch means the stage stopped before it converged.",
                        plots.training_curves(report.rows, out_dir / "curves.png")))
    teacher_model = (report.config.get("teacher_model") or {}).get("name")
    same_network = teacher_model in (None, (report.config.get("model") or {}).get("name"))
    figures.append(("Input cost", "MACs (torch.utils.flop_counter, network only) and median CPU latency of one "
                    "decision at batch 1, one thread (front end included), with ratios to "
                    + ("the teacher's full-length input." if same_network else
                       f"the longest student's input (the teacher is another network, {teacher_model}, so it is "
                       "left out)."),
                    plots.input_cost(report.rows, out_dir / "input_cost.png", with_teacher=same_network)))
    return figures


def write_report(report: ChainReport, out_dir: Path, protocol: str = "stream") -> list[Path]:
    """The PNGs, ``report.html`` and ``report.md`` in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = report_figures(report, out_dir, protocol)
    rows = table_rows(report)
    run_ids = [{"stage": r["stage"], "run_id": r["run_id"]} for r in report.rows]
    config = yaml.safe_dump(report.config, sort_keys=False) if report.config else json.dumps(report.params, indent=1)
    title = f"PLD chain {report.name} ({report.run_id})"

    md = [f"# {title}", "", format_table(rows, SUMMARY_COLUMNS, markdown=True),
          "`agreement`: of a taught stage, its crops' teacher labels against the clips' own; `train_fit`: the "
          "teacher's predictions on its own training clips.", ""]
    for heading, caption, png in figures:
        md += [f"## {heading}", "", caption, "", f"![{heading}]({png.name})", ""]
    md += ["## Stage runs", "", format_table(run_ids, ["stage", "run_id"], markdown=True)]
    md += ["## Config", "", "```yaml", config.rstrip(), "```", ""]
    (out_dir / "report.md").write_text("\n".join(md))

    e = html.escape
    cells = lambda vals, tag: "".join(f"<{tag}>{e(str(v))}</{tag}>" for v in vals)  # noqa: E731
    body = [f"<h1>{e(title)}</h1>", "<table><tr>" + cells(SUMMARY_COLUMNS, "th") + "</tr>"]
    body += ["<tr>" + cells([fmt(r[c], COLUMN_FORMATS.get(c)) for c in SUMMARY_COLUMNS], "td") + "</tr>" for r in rows]
    body.append("</table>")
    for heading, caption, png in figures:
        body += [f"<h2>{e(heading)}</h2>", f"<p>{e(caption)}</p>", f'<img src="{e(png.name)}" alt="{e(heading)}">']
    body += ["<h2>Stage runs</h2>", "<table><tr>" + cells(["stage", "run_id"], "th") + "</tr>"]
    body += ["<tr>" + cells([r["stage"], r["run_id"]], "td") + "</tr>" for r in run_ids] + ["</table>"]
    body += ["<h2>Config</h2>", f"<pre>{e(config)}</pre>"]
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "img{max-width:100%;border:1px solid #eee}pre{background:#f6f6f6;padding:1em;font-size:12px}")
    (out_dir / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
                                         f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return [png for _, _, png in figures] + [out_dir / "report.md", out_dir / "report.html"]


def report_chain(run_id: str, out_dir: str | Path | None = None, tracking: str | None = None) -> Path:
    """Write the report of chain ``run_id`` (to ``out_dir``, else a temporary directory) and log it
    as artifacts ``report/`` of the chain's run; returns the HTML's path."""
    from distill.runtime.infra.session import quiet_logs, resolve_tracking_uri

    quiet_logs()
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking))
    client = mlflow.MlflowClient()
    report = load_chain(client, run_id)
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix=f"pld-report-{run_id[:8]}-"))
    files = write_report(report, out)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path="report")
    return out / "report.html"


def compare_chains(run_ids: list[str], tracking: str | None = None, out_dir: str | Path | None = None) -> str:
    """Several chains side by side: the config values they differ in, then per stage each
    chain's accuracy under every protocol (window/stream/center) and its false accepts per hour
    at 90 % recall. A run id given twice is compared once, with a note. ``out_dir``: also
    ``compare.png``, stream accuracy against input length, one colour per chain."""
    from distill.runtime.infra.session import quiet_logs, resolve_tracking_uri

    quiet_logs()
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking))
    client = mlflow.MlflowClient()
    unique = list(dict.fromkeys(run_ids))
    notes = [f"note: {r} was given {run_ids.count(r)} times; it is compared once" for r in unique if run_ids.count(r) > 1]
    if len(unique) < 2:
        notes.append("note: only one chain to compare: its own results follow")
    reports = [load_chain(client, r) for r in unique]
    heads = [f"{r.name}:{r.run_id[:8]}" for r in reports]
    keys = sorted(set().union(*(r.params for r in reports)))
    differ = [k for k in keys if len({r.params.get(k) for r in reports}) > 1 and not k.startswith(("tracking.", "ray."))]
    out = [*notes, f"chains: {', '.join(f'{h} = {r.run_id}' for h, r in zip(heads, reports))}", ""]
    out.append(format_table([{"param": k, **{h: r.params.get(k, "-") for h, r in zip(heads, reports)}} for k in differ],
                            ["param", *heads]) if differ else "the chains' configs are the same (seeds included)\n")
    stages: list[tuple[str, str, int]] = []
    for r in reports:
        for row in r.rows:
            if (row["stage"], row["method"], row["input_ms"]) not in stages:
                stages.append((row["stage"], row["method"], row["input_ms"]))
    stages.sort(key=lambda s: (s[1] != "pld", -s[2], s[0] != "teacher"))

    def table(cell) -> str:
        lines = []
        for stage, method, input_ms in stages:
            line = {"stage": stage, "input_ms": input_ms}
            for h, r in zip(heads, reports):
                row = next((x for x in r.rows if x["stage"] == stage), None)
                line[h] = cell(row) if row else "-"
            lines.append(line)
        return format_table(lines, ["stage", "input_ms", *heads])

    out += ["", "test accuracy window/stream/center:",
            table(lambda row: "/".join(fmt(row[f"test_acc_{p}"], ".3f") for p in PROTOCOLS)),
            "false accepts per hour at 90 % recall (test split's silence and unknown clips):",
            table(lambda row: fmt(row["test_fa_per_hour_at_90_recall"], ".0f"))]
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        png = plots.compare_chains({h: r.rows for h, r in zip(heads, reports)}, Path(out_dir) / "compare.png")
        out.append(f"figure: {png}")
    return "\n".join(out)
