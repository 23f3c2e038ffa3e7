"""The benchmarks' figures, from their aggregates (plain dicts; no MLflow, no Ray).

    fidelity_figure(methods, final_ms, modes, path)    test accuracy (window/stream/center),
                                                       unseen-voice stream accuracy and FA/h
                                                       against input length, 95 % CI bars
    sensitivity_figure(settings, path)                 PLD − direct and PLD − one-shot against
                                                       the corpus's median word duration

matplotlib's headless Agg backend: the benchmarks run on machines without a display.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROTOCOLS = ("window", "stream", "center")
UNSEEN = "unseen_voices"  # benchmarks/fidelity.py: a method's summaries on the unseen-voice test split
NONE = {"n": 0, "mean": None, "ci95": None}
COLOR = {"pld": "tab:blue", "direct": "tab:red", "one_shot": "tab:green"}
MARKER = {"pld": "o", "direct": "s", "one_shot": "^"}
LABEL = {"pld": "PLD (teacher → students)", "direct": "direct (clip labels)", "one_shot": "one-shot (teacher labels)"}
LINESTYLE = {"hard": "-", "soft": "--"}


def _yerr(cells: list[dict], scale: float) -> list[float]:
    return [(c["ci95"] or 0.0) * scale for c in cells]  # one seed: no interval to draw


def fidelity_figure(methods: list[dict], final_ms: int, modes: list[str], path: Path) -> Path:
    """One panel per protocol (and one for FA/h): the PLD line through the teacher and the
    students, direct and one-shot beside it at the final length; a line style per label mode.
    Methods with unseen-voice numbers (``m["unseen_voices"]``) add a panel beside the stream
    one, on the same y axis: the same lines on the unseen-voice test split. (Not drawn into the
    stream panel: dashed already means soft labels there, and eight series would not read.)"""
    panels = [(f"test accuracy — {p} protocol", lambda m, p=p: m[p], 100.0) for p in PROTOCOLS]
    unseen = any((m.get(UNSEEN, {}).get("stream") or NONE)["mean"] is not None for m in methods)
    if unseen:
        panels.insert(2, ("unseen-voice test split — stream protocol",
                          lambda m: m.get(UNSEEN, {}).get("stream") or NONE, 100.0))
    panels.append(("false accepts / h at 90 % recall (lower is better)", lambda m: m["fa/h@90%"], 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.3))
    if unseen:  # the full and the unseen-voice stream accuracy on one scale: the gap reads off directly
        axes[2].sharey(axes[1])
    for ax, (title, cell, scale) in zip(axes, panels):
        for k, mode in enumerate(modes):
            mine = [m for m in methods if m["labels"] == mode and cell(m)["mean"] is not None]
            line = sorted((m for m in mine if m["method"] in ("teacher", "pld")), key=lambda m: -m["input_ms"])
            if line:  # each label mode a few ms apart: equal lengths would stack their bars
                ax.errorbar([m["input_ms"] - 4 * k for m in line], [cell(m)["mean"] * scale for m in line],
                            yerr=_yerr([cell(m) for m in line], scale), color=COLOR["pld"], marker=MARKER["pld"],
                            linestyle=LINESTYLE.get(mode, ":"), capsize=3, label=f"{LABEL['pld']}, {mode}")
            for j, method in enumerate(("direct", "one_shot")):
                pts = [m for m in mine if m["method"] == method]
                # nudge the baselines sideways so their bars do not hide PLD's at the same length
                dx = (15 + 10 * k) * (1 if j == 0 else -1)
                if pts:
                    ax.errorbar([m["input_ms"] + dx for m in pts], [cell(m)["mean"] * scale for m in pts],
                                yerr=_yerr([cell(m) for m in pts], scale), color=COLOR[method], marker=MARKER[method],
                                linestyle="", capsize=3, markersize=8, fillstyle="full" if k == 0 else "none",
                                label=f"{LABEL[method]}, {mode}")
    for ax, (title, _, scale) in zip(axes, panels):
        lo, hi = ax.get_ylim()  # few seeds give wide bars: keep the axis to values that can occur
        ax.set_ylim(max(lo, 0.0), min(hi, 100.0) if scale == 100.0 else hi)
        ax.invert_xaxis()  # the chain runs from long to short inputs
        ax.axvline(final_ms, color="grey", alpha=0.2, linewidth=6)
        ax.set_xlabel("input length (ms)")
        ax.set_ylabel("accuracy (%)" if scale == 100.0 else "false accepts / hour")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle("mean over seeds, bars: 95 % confidence interval (Student t)", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))  # room below the panels for one shared legend
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8, frameon=False)
    return _save(fig, path, tight=False)


def sensitivity_figure(settings: list[dict], path: Path) -> Path:
    """One panel per protocol: per corpus setting (x: its median word duration), PLD's lead over
    each baseline — every seed as a small dot, the mean as a big marker with its 95 % CI."""
    fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(5.2 * len(PROTOCOLS), 4.3), sharey=True)
    for ax, protocol in zip(axes, PROTOCOLS):
        for j, (key, name) in enumerate((("pld_minus_direct", "direct"), ("pld_minus_one_shot", "one_shot"))):
            dx = 6 if j == 0 else -6  # side by side: two settings may have almost the same word duration
            for i, s in enumerate(settings):
                x = (s["median_word_ms"] if s.get("median_word_ms") is not None else 100 * i) + dx
                cell = s["mean"][protocol][key]
                seeds = list(cell["per_seed"].values())
                ax.plot([x] * len(seeds), [100 * d for d in seeds], linestyle="", marker=".", color=COLOR[name],
                        alpha=0.5)
                if cell["mean"] is not None:
                    ax.errorbar([x], [100 * cell["mean"]], yerr=[100 * (cell["ci95"] or 0.0)], color=COLOR[name],
                                marker=MARKER[name], markersize=8, capsize=3, linestyle="",
                                label=f"PLD − {name.replace('_', '-')}" if i == 0 else None)
                if j == 0:
                    ax.annotate(s["setting"], (x - dx, 0), textcoords="offset points", xytext=(0, -14),
                                ha="center", fontsize=9, color="dimgrey")
        ax.axhline(0, color="black", linewidth=0.8)
        lo, hi = ax.get_ylim()  # at least ±1 point: equal accuracies would otherwise zoom into rounding noise
        ax.set_ylim(min(lo, -1.0), max(hi, 1.0))
        ax.set_xlabel("median word duration in the clip (ms)")
        ax.set_title(f"final student vs baselines — {protocol}", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy difference (percentage points)")
    axes[0].legend(fontsize=8)
    fig.suptitle("above 0: PLD ahead; dots: seeds, markers: mean ± 95 % CI; letters: corpus settings", fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
