"""The report's figures, from plain numbers (no MLflow, no Ray): one function per PNG.

Each takes a list of stage rows — dicts with ``stage``, ``method`` (pld, direct, one_shot),
``input_ms`` and the metrics of ``distill.runtime.execution.evaluate`` — and writes one PNG. The
headless Agg backend: a report renders on a cluster node without a display.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from distill.methods import methods
from distill.names import PROTOCOLS


def _styles() -> dict[str, dict]:
    """Each registered method's colour, marker and legend text (distill/methods.py)."""
    return {m.name: dict(color=m.color, marker=m.marker, label=m.label) for m in methods()}


def _pld_line(rows: list[dict]) -> list[dict]:
    """The PLD curve: the teacher, then the students (a student at the teacher's length
    replaces nothing: both are drawn), ordered by input length."""
    return sorted((r for r in rows if r["method"] == "pld"), key=lambda r: (-r["input_ms"], r["stage"] != "teacher"))


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by_method(ax, rows: list[dict], key: str, scale: float = 1.0) -> None:
    for method, style in _styles().items():
        pts = _pld_line(rows) if method == "pld" else [r for r in rows if r["method"] == method]
        pts = [r for r in pts if r.get(key) is not None and np.isfinite(r[key])]
        if pts:
            ax.plot([r["input_ms"] for r in pts], [r[key] * scale for r in pts], linestyle="-" if method == "pld" else "",
                    markersize=8, **style)
    ax.invert_xaxis()  # the chain runs from long to short inputs
    ax.set_xlabel("input length (ms)")
    ax.grid(alpha=0.3)


def accuracy_vs_length(rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(13, 4), sharey=True)
    for ax, protocol in zip(axes, PROTOCOLS):
        _by_method(ax, rows, f"test_acc_{protocol}", 100)
        ax.set_title(f"test accuracy — {protocol} protocol")
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def false_alarms_vs_length(rows: list[dict], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    _by_method(axes[0], rows, "test_fa_per_hour_at_90_recall")
    axes[0].set_title("false accepts per hour at 90 % recall (lower is better)")
    axes[0].set_ylabel("false accepts / hour")
    _by_method(axes[1], rows, "test_recall_at_1_fa_per_hour", 100)
    axes[1].set_title("recall at 1 false accept per hour (%)")
    axes[1].legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def confusion_matrices(matrices: dict[str, list[list[int]]], labels: list[str], path: Path, protocol: str) -> Path:
    """One panel per named matrix (rows: true class, columns: predicted), row-normalised."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.5 * len(matrices), 5), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        m = np.asarray(m, dtype=float)
        share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name} ({protocol}, {np.trace(m) / max(m.sum(), 1):.1%} correct)", fontsize=9)
        for (i, j), v in np.ndenumerate(m):
            if v:
                ax.text(j, i, int(v), ha="center", va="center", fontsize=6, color="white" if share[i, j] > 0.5 else "black")
    return _save(fig, path)


def label_agreement(rows: list[dict], path: Path) -> Path:
    """Per relabelled stage: agreement with the clip labels and the shares turned into
    silence / unknown."""
    rows = [r for r in rows if r.get("label_agreement") is not None and r["stage"] != "teacher"
            and r.get("teacher")]  # a stage of clip labels (direct) relabelled nothing
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    x = np.arange(len(rows))
    for k, (key, name) in enumerate([("label_agreement", "agrees with clip label"),
                                     ("relabel_to_silence", "→ _silence_"), ("relabel_to_unknown", "→ _unknown_")]):
        ax.bar(x + (k - 1) * 0.27, [100 * (r.get(key) or 0) for r in rows], width=0.27, label=name)
    ax.set_xticks(x, [r["stage"] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("% of the stage's crops")
    ax.set_ylim(0, 118)  # headroom for the legend above the bars
    ax.set_title("what the teacher's labels did to each distilled dataset")
    ax.legend(fontsize=8, ncol=3, loc="upper center")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def input_cost(rows: list[dict], path: Path, with_teacher: bool = True) -> Path:
    """MACs and batch-1 CPU latency per decision against input length (the PLD line), with each
    point's ratio to the longest input drawn: the teacher's, when it has the students' network
    (``with_teacher``; a different teacher network would make the ratios about the network)."""
    pts = [r for r in _pld_line(rows) if with_teacher or r["stage"] != "teacher"] or _pld_line(rows)
    pts = [r for r in pts if r.get("macs") is not None and r.get("latency_us") is not None]
    if not pts:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no stage logged its MACs and latency", ha="center", va="center")
        ax.axis("off")
        return _save(fig, path)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, scale, title in ((axes[0], "macs", 1e-6, "MACs per decision (millions)"),
                                  (axes[1], "latency_us", 1e-3, "CPU latency per decision, batch 1 (ms)")):
        ax.plot([r["input_ms"] for r in pts], [r[key] * scale for r in pts], marker="o", color="tab:blue")
        ref = max(pts, key=lambda r: r["input_ms"])
        for r in pts:
            ax.annotate(f"{r[key] / ref[key]:.2f}×", (r["input_ms"], r[key] * scale), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7)
        ax.invert_xaxis()
        ax.set_xlabel("input length (ms)")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    return _save(fig, path)


def training_curves(rows: list[dict], path: Path) -> Path:
    """Each stage's validation accuracy and training loss per epoch (rows with ``curves``:
    {"val_acc": [(epoch, value), ...], "train_loss": [...]}); a stage reused from another chain
    has its curves there, and is left out."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    lengths = sorted({r["input_ms"] for r in rows}, reverse=True)
    styles = ["-", "--", "-.", ":"]
    colours = {name: style["color"] for name, style in _styles().items()}
    drawn = 0
    for r in rows:
        curves = r.get("curves") or {}
        style = dict(color=colours.get(r["method"], "grey"),
                     linestyle=styles[lengths.index(r["input_ms"]) % len(styles)] if r["method"] == "pld" else "-")
        for ax, key in zip(axes, ("val_acc", "train_loss")):
            pts = curves.get(key) or []
            if pts:
                ax.plot([e for e, _ in pts], [v * (100 if key == "val_acc" else 1) for _, v in pts],
                        label=r["stage"], linewidth=1.5, **style)
                drawn += 1
    axes[0].set_title("validation accuracy (%) per epoch")
    axes[1].set_title("training loss per epoch")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if drawn:
        axes[0].legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def compare_chains(chains: dict[str, list[dict]], path: Path, protocol: str = "stream") -> Path:
    """Test accuracy against input length for several chains: one colour per chain, PLD as a
    line, direct (square) and one-shot (triangle) as markers."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    key = f"test_acc_{protocol}"
    for i, (name, rows) in enumerate(chains.items()):
        colour = colours[i % len(colours)]
        line = [r for r in _pld_line(rows) if r.get(key) is not None]
        ax.plot([r["input_ms"] for r in line], [100 * r[key] for r in line], color=colour, marker="o", label=f"{name} PLD")
        for method, marker in ((m.name, m.marker) for m in methods() if m.is_baseline):
            pts = [r for r in rows if r["method"] == method and r.get(key) is not None]
            ax.plot([r["input_ms"] for r in pts], [100 * r[key] for r in pts], color=colour, marker=marker,
                    linestyle="", markersize=8, label=f"{name} {method.replace('_', '-')}" if pts else None)
    ax.invert_xaxis()
    ax.set_xlabel("input length (ms)")
    ax.set_ylabel(f"test accuracy, {protocol} protocol (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
