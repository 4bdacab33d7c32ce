"""report.png: the eval's figures as small multiples, one panel per measure.

Accuracy (with its 95% Wilson interval), the share of replies in the answer
format, and the share whose formula line and substitution line match the worked
solution's: the figures a fine-tune moves. Accuracy with the calculator offered
gets a panel of its own where the report has it, on the same scale as accuracy.
In each panel a group of bars per eval set, a bar per model, one colour per model
in every panel, and a single legend. Each panel's axis ends a little above its
largest value, so rates of a few percent are not flat lines at the bottom of 0-100.
"""
from __future__ import annotations

from pathlib import Path

# (result key, panel title); a panel whose key no result has a value for is left out
PANELS = (("accuracy", "accuracy (bars: 95% interval)"),
          ("format_rate", "answer given in the asked format"),
          ("formula_rate", "formula line right"),
          ("substitution_rate", "substitution right"))
TOOL_PANEL = "accuracy with the calculator"


def _with_tool(r: dict) -> bool:
    return r.get("tools") == "on"


def _panels(results: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(key, title, the results it shows) for each panel with something to show."""
    scored = [r for r in results if "not_run" not in r and "accuracy" in r]
    plain = [r for r in scored if not _with_tool(r)]
    out = [(key, title, plain) for key, title in PANELS if any(r.get(key) is not None for r in plain)]
    tool = [r for r in scored if _with_tool(r)]
    if tool:  # beside accuracy without it
        out.insert(1 if out and out[0][0] == "accuracy" else 0, ("accuracy", TOOL_PANEL, tool))
    return out


def axis_top(values: list[float]) -> float:
    """Top of a percent axis: 15% above the largest value, at least 5 points (whole-percent
    ticks where every value is 0), at most 100."""
    return min(100.0, max(5.0, 1.15 * max(values, default=0.0)))


def _set_label(name: str, n: int) -> str:
    return name.replace("[", "\n[") + f"\n(n={n})"


def _bars(ax, key: str, rows: list[dict], sets: list[str], models: list[str], colours: dict) -> list[float]:
    """One panel's bars; returns every value drawn (interval ends included), in percent."""
    width = 0.8 / max(1, len(models))
    drawn = []
    for j, model in enumerate(models):
        xs, ys, lo, hi = [], [], [], []
        for i, s in enumerate(sets):
            r = next((r for r in rows if r["model"] == model and r["eval_set"] == s), None)
            if r is None or r.get(key) is None:
                continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * r[key])
            ci = r.get("ci95") if key == "accuracy" else None
            lo.append(100 * (r[key] - ci[0]) if ci else 0.0)
            hi.append(100 * (ci[1] - r[key]) if ci else 0.0)
        if not xs:
            continue
        ax.bar(xs, ys, width * 0.9, color=colours[model], label=model,
               yerr=[lo, hi] if key == "accuracy" else None, capsize=2,
               error_kw={"elinewidth": 1.0, "ecolor": colours[model]})  # a bar at 0 still shows its model
        for x, y, h in zip(xs, ys, hi):  # the value above its interval, clear of the error bar
            ax.annotate(f"{y:.1f}", (x, y + h), xytext=(0, 1.5), textcoords="offset points", ha="center",
                        va="bottom", fontsize=6)
        drawn += [y + h for y, h in zip(ys, hi)]
    return drawn


def report_figure(results: list[dict]):
    """The figure, not yet saved (tests read its axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    panels = _panels(results)
    models = list(dict.fromkeys(r["model"] for _, _, rows in panels for r in rows))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    cols = 2 if len(panels) > 2 else max(1, len(panels))
    rows_n = -(-max(1, len(panels)) // cols)
    most_sets = max((len(_sets(key, rows)) for key, _, rows in panels), default=1)
    width = max(3.2, 0.9 + 0.35 * most_sets * max(1, len(models)))
    fig, axes = plt.subplots(rows_n, cols, figsize=(cols * width, rows_n * 2.7), squeeze=False, layout="constrained")
    tops: dict[str, float] = {}
    for ax, (key, title, rows) in zip(axes.flat, panels):
        sets = _sets(key, rows)
        tops[title] = axis_top(_bars(ax, key, rows, sets, models, colours))
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(sets)), [_set_label(s, _n(rows, s)) for s in sets], fontsize=7)
        pad = (most_sets - len(sets)) / 2  # bars as wide in a panel of fewer sets
        ax.set_xlim(-0.5 - pad, len(sets) - 0.5 + pad)
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=None))
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylabel("% of items", fontsize=8)
        ax.grid(axis="y", linewidth=0.4, alpha=0.5)
        ax.set_axisbelow(True)
    accuracy_top = max((t for title, t in tops.items() if "accuracy" in title), default=None)
    for ax, (key, title, _) in zip(axes.flat, panels):
        # accuracy with and without the tool on one scale, so their bars compare
        ax.set_ylim(0, accuracy_top if "accuracy" in title else tops[title])
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if models:
        fig.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colours[m]) for m in models], labels=models,
                   loc="outside upper center", ncol=min(len(models), 6), fontsize=8, frameon=False)
    return fig


def _sets(key: str, rows: list[dict]) -> list[str]:
    """The eval sets with a value for `key` (formula lines exist only where items have worked steps)."""
    return list(dict.fromkeys(r["eval_set"] for r in rows if r.get(key) is not None))


def _n(rows: list[dict], eval_set: str) -> int:
    return max((r["n"] for r in rows if r["eval_set"] == eval_set), default=0)


def write_chart(path: Path, results: list[dict]) -> Path:
    import matplotlib.pyplot as plt

    fig = report_figure(results)
    tmp = path.with_name(f".{path.name}.partial")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path
