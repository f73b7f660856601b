"""The report's plots, as base64 PNGs (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
import io
from typing import Any

from trimpi.report.baselines import LABELS

LINE_STYLES = {"chance": ":", "majority": "--", "in_context": "-."}
LINE_COLORS = {"chance": "#555555", "majority": "#c44e52", "in_context": "#8172b2"}
Y_RANGE = (-6, 106)  # a little room below 0 and above 100, so that a line at 0 % or 100 % stays visible


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _reference_lines(ax, lines: dict[str, float]) -> None:
    """Horizontal reference lines (chance, majority, in-context) across the whole axis, drawn above the bars
    and the axes, each with its value in the legend."""
    for key, value in lines.items():
        ax.axhline(100 * value, color=LINE_COLORS.get(key, "black"), linestyle=LINE_STYLES.get(key, "--"),
                   linewidth=1.6, zorder=5, clip_on=False, label=f"{LABELS.get(key, key)}: {100 * value:.1f} %")


def _fig_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def accuracy_figure(rows: list[dict[str, Any]], lines: dict[str, float] | None = None):
    """The accuracy bar chart as a matplotlib figure (None when there is nothing to draw); bars carry their
    95 % interval when the row's accuracy has an n."""
    from trimpi.report.stats import interval

    lines = lines or {}
    scored = [r for r in rows if r["score"] is not None and not (r["method"] == "in_context" and "in_context" in lines)]
    if not scored and not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(scored)), 3.4))
    heights = [100 * r["score"] for r in scored]
    errs = [[0.0, 0.0] for _ in scored]
    for k, r in enumerate(scored):
        n = (r["protocols"].get(r["protocol"]) or {}).get("n")
        if n:
            lo, hi = interval(r["score"], n)
            errs[k] = [100 * (r["score"] - lo), 100 * (hi - r["score"])]
    ax.bar([r["label"] for r in scored], heights, color="#4c72b0", zorder=2,
           yerr=[[e[0] for e in errs], [e[1] for e in errs]] if scored else None, capsize=3)
    _reference_lines(ax, lines)
    ax.set_ylabel("accuracy (%), 95 % interval")
    ax.set_ylim(*Y_RANGE)
    ax.tick_params(axis="x", rotation=30, labelsize=8)
    if lines:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return fig


def plot_accuracy(rows: list[dict[str, Any]], lines: dict[str, float] | None = None) -> str | None:
    """Bar chart of headline accuracy per trained method, with chance, majority and in-context as
    reference lines (base64 PNG)."""
    fig = accuracy_figure(rows, lines)
    return None if fig is None else _fig_png(fig)


def plot_rewards(curves: dict[str, dict[str, list[tuple[int, float]]]], start: int | None = None) -> str | None:
    """Mean reward per RL step, ordinary vs policy-aware samples (two lines under PolicyRollout, one without),
    one panel per RL run; the first `start` steps of a PolicyRollout run shaded (base64 PNG)."""
    if not curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
    for ax, (name, series) in zip(axes[0], curves.items(), strict=True):
        for label, points in series.items():
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=label)
        aware = series.get("policy-aware") or []
        if start and aware:
            first = [s for s, _ in aware[:start]]
            ax.axvspan(first[0] - 0.5, first[-1] + 0.5, color="#dddddd", zorder=0, label=f"start of RL: {len(first)} steps")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("RL step")
        ax.set_ylabel("mean reward")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _fig_png(fig)


def plot_savings(eff: list[dict[str, Any]]) -> str | None:
    """Token and prefill savings (%) from dropping the policy (base64 PNG)."""
    if not eff:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(eff)), 3))
    xs = range(len(eff))
    ax.bar([x - 0.2 for x in xs], [e["token_savings_pct"] or 0 for e in eff], width=0.4, label="prompt tokens")
    ax.bar([x + 0.2 for x in xs], [e["prefill_savings_pct"] or 0 for e in eff], width=0.4,
           label="prefill time (noisy on a shared CPU)")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(list(xs), [e["label"] for e in eff], rotation=30, fontsize=8)
    ax.set_ylabel("saved without policy (%)")
    ax.legend(fontsize=8)
    return _fig_png(fig)


def plot_repro(table: dict[str, Any]) -> str | None:
    """Grouped bars: accuracy per setting and method, with the std over seeds as error bars, and each
    setting's chance and majority as short reference lines (base64 PNG)."""
    plt = _pyplot()
    settings = list(table["settings"])
    if not settings:
        return None
    methods = list(table["settings"][settings[0]]["methods"])
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(settings)), 3.6))
    for k, method in enumerate(methods):
        entries = [table["settings"][s]["methods"][method].get("accuracy") or {} for s in settings]
        means = [100 * (e.get("mean") or 0) for e in entries]
        stds = [100 * (e.get("std") or 0) for e in entries]
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(settings))]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=table["settings"][settings[0]]["methods"][method]["label"])
    for i, s in enumerate(settings):
        for key in ("chance", "majority"):
            m = (table["settings"][s].get(key) or {}).get("mean")
            if m is not None:
                ax.hlines(100 * m, i - 0.4, i + 0.4, colors="black", linestyles=LINE_STYLES[key], linewidth=1)
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=6, ncol=2, loc="upper right")
    ax.set_title("dashed: always the policy's most frequent answer; dotted: chance", fontsize=8)
    return _fig_png(fig)
