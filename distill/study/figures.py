"""The study report's figures, from the numbers ``report.compute`` gathers: accuracy against
input length, the contrasts as a forest plot, the validation curves, and labels against the
share of the word a crop holds. Matplotlib without a display."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from distill.methods import methods
from distill.study.records import TEST
from distill.study.word_share import OUTCOMES

ACCURACY_FIGURE = "accuracy_by_length.png"
CONTRAST_FIGURE = "contrasts.png"
CURVES_FIGURE = "curves.png"
WORD_SHARE_FIGURE = "labels_by_word_share.png"
HEADLINE_FIGURE = "headline.png"  # the README's: PLD's own contrasts, the headline protocol only
FIGURE_PROTOCOL = "stream"  # the headline protocol, where a study has it


def headline_protocol(data: dict[str, Any]) -> str:
    return FIGURE_PROTOCOL if FIGURE_PROTOCOL in data["protocols"] else data["protocols"][0]


def _f(x: float | None) -> float:
    return math.nan if x is None else x


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # a report renders on a cluster node without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, bottom: float = 0.0) -> Path:
    fig.tight_layout(rect=(0, bottom, 1, 1))  # bottom: room kept for a caption or legend under the panels
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def accuracy_figure(data: dict[str, Any], path: Path) -> Path:
    """Accuracy against input length (stream, test split): per cell, PLD's chain as a line (the
    teacher at its length first), each baseline as its own marker beside the final length."""
    protocol = headline_protocol(data)
    fig, ax = _plt().subplots(figsize=(7.5, 4.5))
    markers = {m.name: m.marker for m in methods() if m.is_baseline}
    for k, cell in enumerate(c for c in data["cells"] if c["stages"]):
        color = f"C{k % 10}"
        pts = sorted(((st["input_ms"], st["accuracy"][TEST][protocol]) for st in cell["stages"]
                      if st["method"] in ("teacher", "pld") and st["accuracy"][TEST][protocol]["mean"] is not None),
                     reverse=True)
        if pts:
            ax.errorbar([x for x, _ in pts], [a["mean"] for _, a in pts], yerr=[_f(a["ci95"]) if a["ci95"] is not None
                        else 0 for _, a in pts], marker="o", capsize=3, color=color, label=cell["label"])
        for j, (method, marker) in enumerate(markers.items()):
            for st in cell["stages"]:
                a = st["accuracy"][TEST][protocol]
                if st["method"] == method and a["mean"] is not None:
                    ax.errorbar(st["input_ms"] - 12 * (j + 1), a["mean"], yerr=_f(a["ci95"]) if a["ci95"] is not None
                                else 0, marker=marker, capsize=3, color=color, linestyle="none")
    for method, marker in markers.items():  # the legend's key to the markers
        ax.plot([], [], marker=marker, color="grey", linestyle="none", label=method)
    ax.plot([], [], marker="o", color="grey", label="PLD (the chain; first point the teacher)")
    ax.set_title(f"accuracy against input length ({protocol}, {TEST}; mean ± 95 % CI over seeds)", fontsize=9)
    ax.set_xlabel("input length (ms)")
    ax.set_ylabel("accuracy")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower left")
    fig.text(0.01, 0.005, f"first cell: {data['cells'][0]['cell']}" if data["cells"] else "", fontsize=6.5)
    return _save(fig, path)


def contrast_figure(data: dict[str, Any], path: Path, names: list[str] | None = None,
                    protocols: list[str] | None = None) -> Path:
    """A forest plot: one panel per contrast (``names``: all), one row per cell (named by what
    differs from the first), the difference paired by seed with its 95 % CI on the test split,
    one marker per protocol (``protocols``: all, the headline protocol drawn solid). Readable at a
    page's width."""
    names = names or list(dict.fromkeys(c["contrast"] for c in data["contrasts"])) or ["(no contrasts)"]
    cells = [c for c in data["cells"] if c["seeds"]] or data["cells"]
    headline = headline_protocol(data)
    protocols = protocols or [headline] + [p for p in data["protocols"] if p != headline]
    height = 0.42 * len(cells) + 1.9
    fig, axes = _plt().subplots(1, len(names), squeeze=False, sharey=True, sharex=True,
                                figsize=(min(3.6 * len(names) + 2.2, 12), height))
    for ax, name in zip(axes[0], names):
        for j, p in enumerate(protocols):
            rows = {c["cell"]: c for c in data["contrasts"] if c["contrast"] == name and c["protocol"] == p
                    and c["eval"] == TEST}
            ys = [i + 0.22 * j for i in range(len(cells))]
            xs = [_f(rows[c["cell"]]["mean"]) if c["cell"] in rows else math.nan for c in cells]
            es = [_f(rows[c["cell"]]["ci95"]) if c["cell"] in rows and rows[c["cell"]]["ci95"] is not None else 0
                  for c in cells]
            ax.errorbar(xs, ys, xerr=es, fmt="o" if p == headline else ".", capsize=2.5, color=f"C{j}",
                        alpha=1.0 if p == headline else 0.45, label=p)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"difference on {TEST} (paired by seed, 95 % CI)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))  # tick labels that do not run into each other
        ax.grid(alpha=0.3)
    axes[0][0].set_yticks(range(len(cells)))
    axes[0][0].set_yticklabels([c.get("label", c["cell"]) for c in cells], fontsize=8)
    axes[0][0].invert_yaxis()  # the first cell on top, as in the tables
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", ncol=len(protocols), fontsize=7, frameon=False)
    fig.text(0.01, 0.01, f"first cell: {data['cells'][0]['cell']}" if data["cells"] else "", fontsize=6.5)
    return _save(fig, path, bottom=0.35 / height)


def curves_figure(data: dict[str, Any], path: Path) -> Path | None:
    """Validation curves: one panel per stage, one line per cell (mean over seeds); None without curves."""
    stage_names = list(dict.fromkeys(st["stage"] for c in data["cells"] for st in c["stages"] if st.get("val_curve")))
    if not stage_names:
        return None
    cols = min(4, len(stage_names))
    rows = math.ceil(len(stage_names) / cols)
    fig, axes = _plt().subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, stage_names):
        for cell in data["cells"]:
            for st in cell["stages"]:
                if st["stage"] == name and st.get("val_curve"):
                    ax.plot(range(1, len(st["val_curve"]) + 1), st["val_curve"], label=cell["label"])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(stage_names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("validation accuracy (stream)")
    axes[0][0].legend(fontsize=6)
    return _save(fig, path)


def word_share_figure(data: dict[str, Any], path: Path) -> Path | None:
    """Labels against the share of the word a crop holds: the first cell's stages, one panel
    each; None when no record has word shares."""
    first = next((c for c in data["cells"] if any(st.get("word_share") for st in c["stages"])), None)
    if first is None:
        return None
    stages = [st for st in first["stages"] if st.get("word_share")]
    fig, axes = _plt().subplots(1, len(stages), figsize=(3.2 * len(stages), 3.2), squeeze=False, sharey=True)
    for ax, st in zip(axes[0], stages):
        table = st["word_share"]["table"]
        edges = np.asarray(table["edges"])
        centres = (edges[:-1] + edges[1:]) / 2
        counts = np.asarray([table[k] for k in OUTCOMES], float)
        shares = counts / np.maximum(counts.sum(axis=0), 1)
        ax.stackplot(centres, shares, labels=[o.replace("word", "the word's label") for o in OUTCOMES], alpha=0.8)
        ax.set_title(st["stage"], fontsize=9)
        ax.set_xlabel("share of the word in the crop")
        ax.set_xlim(0, 1)
    axes[0][0].set_ylabel(f"labels ({first['cell']})")
    axes[0][-1].legend(fontsize=6, loc="lower right")
    return _save(fig, path)


def headline_figure(data: dict[str, Any], path: Path) -> Path | None:
    """The figure a front page shows: PLD's contrasts (at most two: the first term PLD's) in the
    headline protocol; None when the study has no such contrast."""
    names = [n for n in dict.fromkeys(c["contrast"] for c in data["contrasts"]) if n.startswith("pld@")][:2]
    return contrast_figure(data, path, names, [headline_protocol(data)]) if names else None


def figures(data: dict[str, Any], out: Path) -> list[Path]:
    paths = [accuracy_figure(data, out / ACCURACY_FIGURE), contrast_figure(data, out / CONTRAST_FIGURE),
             headline_figure(data, out / HEADLINE_FIGURE), curves_figure(data, out / CURVES_FIGURE),
             word_share_figure(data, out / WORD_SHARE_FIGURE)]
    return [p for p in paths if p is not None]


