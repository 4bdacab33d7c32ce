"""report.png and loss.png, read back through matplotlib's own objects: the panels
drawn, each axis scaled to its data, the legend's entries, labels inside the canvas,
the running mean over exactly one length-sorted run of batches."""
import random

import pytest

from fintune.eval.chart import TOOL_PANEL, axis_top, report_figure, write_chart
from fintune.scoring.extract import wilson
from fintune.train.chart import length_group_steps, loss_figure, running_mean

MODELS = ("base", "f16", "q8_0", "q4_k_m")
SETS = (("heldout", 58), ("finlora_formula_test[context]", 100), ("finlora_formula_test[no_context]", 100))


def _results(tool: bool = False) -> list[dict]:
    """Accuracy 0-5% everywhere, as a small model's first fine-tune scores; formula and
    substitution lines only on the held-out set, whose items have worked steps."""
    out = []
    for k, model in enumerate(MODELS):
        for s, n in SETS:
            right = k  # 0..3 of n
            out.append({"model": model, "eval_set": s, "n": n, "accuracy": right / n, "ci95": list(wilson(right, n)),
                        "format_rate": 0.1 + 0.2 * k, "formula_rate": 0.1 * k if s == "heldout" else None,
                        "substitution_rate": 0.05 * k if s == "heldout" else None})
            if tool and model in ("f16", "q4_k_m"):
                out.append({**out[-1], "tools": "on", "accuracy": (right + 4) / n, "ci95": list(wilson(right + 4, n))})
    return out


def _panels(fig) -> dict:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}


def test_report_has_a_panel_per_measure_each_axis_scaled_to_its_values():
    fig = report_figure(_results())
    panels = _panels(fig)
    assert len(panels) == 4 and TOOL_PANEL not in panels
    acc = panels["accuracy (bars: 95% interval)"]
    highest = max(100 * hi for r in _results() for hi in r["ci95"][1:])
    bottom, top = acc.get_ylim()
    assert bottom == 0 and highest <= top <= 1.2 * highest < 20  # not 0-100 for values of a few percent
    # every bar's 95% interval drawn: one error bar per bar
    bars = [c for c in acc.containers if hasattr(c, "errorbar") and c.errorbar is not None]
    assert sum(len(c.patches) for c in bars) == len(MODELS) * len(SETS)
    fmt = panels["answer given in the asked format"]
    assert fmt.get_ylim()[1] == pytest.approx(axis_top([100 * (0.1 + 0.2 * 3)]))
    # the formula panel shows the one set that has worked steps
    assert [t.get_text().split("\n")[0] for t in panels["formula line right"].get_xticklabels()] == ["heldout"]


def test_report_legend_names_each_model_once():
    (legend,) = report_figure(_results(tool=True)).legends
    assert [t.get_text() for t in legend.get_texts()] == list(MODELS)


def test_accuracy_with_the_tool_has_its_panel_beside_accuracy_on_the_same_scale():
    fig = report_figure(_results(tool=True))
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[:2] == ["accuracy (bars: 95% interval)", TOOL_PANEL] and len(titles) == 5
    panels = _panels(fig)
    assert panels[TOOL_PANEL].get_ylim() == panels["accuracy (bars: 95% interval)"].get_ylim()
    assert len(panels[TOOL_PANEL].patches) == 2 * len(SETS)  # f16 and q4_k_m


def test_no_label_is_cut_at_the_canvas_edge(tmp_path):
    fig = report_figure(_results(tool=True))
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    for ax in [ax for ax in fig.axes if ax.get_visible()]:
        for text in (ax.yaxis.label, ax.title, *ax.get_xticklabels(), *ax.get_yticklabels()):
            if text.get_visible() and text.get_text():
                box = text.get_window_extent()
                assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height, text.get_text()
    path = write_chart(tmp_path / "report.png", _results())
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*partial"))


def test_length_group_steps_is_the_run_transformers_sorts_longest_first():
    """transformers/trainer_pt_utils.py get_length_grouped_indices: the rows in runs of
    mega-batches, each sorted by length, longest first (the run with the longest row
    swapped to the front)."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    rows, rows_per_step = 2000, 8
    steps = length_group_steps(rows, rows_per_step)
    assert steps == 50
    lengths = list(range(rows))
    random.Random(0).shuffle(lengths)
    order = [lengths[i] for i in get_length_grouped_indices(lengths, rows_per_step,
                                                            generator=torch.Generator().manual_seed(0))]
    run = steps * rows_per_step
    for start in range(0, rows, run):
        chunk = order[start:start + run][1:]  # the first row may be the swapped-in longest
        assert chunk == sorted(chunk, reverse=True)
    assert length_group_steps(30, 8) == 1  # fewer rows than four steps' worth: one batch a run


def _sawtooth(steps=600, period=50, every=5):
    history = [{"step": s, "loss": 1.0 + 0.3 * (1 - (s % period) / period)} for s in range(every, steps + 1, every)]
    return history + [{"step": 300, "eval_loss": 1.1}, {"step": 600, "eval_loss": 1.05}]


def test_loss_plot_draws_the_raw_curve_faintly_under_a_mean_over_one_run():
    fig = loss_figure(_sawtooth(), group_steps=50)
    (ax,) = fig.axes
    raw, mean, evals = ax.get_lines()
    assert raw.get_alpha() < 0.5 and mean.get_alpha() is None
    inner = mean.get_ydata()[10:-10]  # a full run on either side
    assert max(inner) - min(inner) < 0.02 < 0.25 < max(raw.get_ydata()) - min(raw.get_ydata())
    assert evals.get_linestyle() == "None" and evals.get_marker() == "o" and len(evals.get_xdata()) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train loss, each logged step", "train loss, mean over 50 steps", "eval loss (held-out rows)"]
    assert any("grouped by length" in t.get_text() for t in fig.texts)


@pytest.mark.parametrize("history, group_steps", [(_sawtooth(), None), (_sawtooth(steps=90), 50)])
def test_loss_plot_without_length_groups_or_two_runs_of_them_draws_the_loss_alone(history, group_steps):
    fig = loss_figure(history, group_steps)
    (ax,) = fig.axes
    assert len(ax.get_lines()) == 2 and not fig.texts
    assert ax.get_lines()[0].get_alpha() == 1.0  # the loss itself, not faint
    assert running_mean([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
