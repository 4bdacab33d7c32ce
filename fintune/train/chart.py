"""loss.png next to an adapter: the training loss and the eval loss against the step.

SFT batches are grouped by length (train_sampling_strategy "group_by_length",
train/trainer.py): transformers' get_length_grouped_indices (trainer_pt_utils.py)
shuffles the rows, cuts them into runs of up to 50 optimizer steps' worth and
sorts each run longest first, so the loss of the logged steps saws with the
row length once per run. The raw curve is drawn faintly, a running mean over
one run's steps on top of it, and the caption says where the sawtooth comes from.
"""
from __future__ import annotations

from pathlib import Path


def length_group_steps(rows: int, rows_per_step: int) -> int:
    """Optimizer steps in one length-sorted run: get_length_grouped_indices' mega-batch
    of min(rows // (batch * 4), 50) batches (at least 1), with the sampler's batch being
    train_batch_size x gradient_accumulation_steps (Trainer._get_train_sampler)."""
    return max(1, min(rows // max(1, rows_per_step * 4), 50))


def running_mean(values: list[float], window: int) -> list[float]:
    """The mean of the `window` values centred on each (fewer at the ends): centred, it
    does not lag behind a falling loss as a trailing mean would."""
    half = window // 2
    out = []
    for i in range(len(values)):
        part = values[max(0, i - half): i + window - half]
        out.append(sum(part) / len(part))
    return out


def loss_figure(history: list[dict], group_steps: int | None = None):
    """The figure, not yet saved. `group_steps`: steps per length-sorted run (None: batches
    were not grouped by length, as in DPO and GRPO; no running mean is drawn then)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6.4, 3.8), layout="constrained")
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    window = 1
    if train:
        steps, losses = zip(*train)
        window = _window(steps, group_steps)
        ax.plot(steps, losses, "-", color="tab:blue", alpha=0.3 if window > 1 else 1.0, linewidth=0.8,
                label="train loss, each logged step" if window > 1 else "train loss")
        if window > 1:
            ax.plot(steps, running_mean(list(losses), window), "-", color="tab:blue", linewidth=1.8,
                    label=f"train loss, mean over {group_steps} steps")
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if evals:  # a few points: markers, not a line that suggests values in between
        ax.plot(*zip(*evals), "o", color="tab:orange", markersize=6, label="eval loss (held-out rows)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(linewidth=0.4, alpha=0.5)
    if train or evals:
        ax.legend(fontsize=8)
    ax.set_title("Training loss", fontsize=10)
    if train and window > 1:
        fig.text(0.01, -0.02, f"Batches are grouped by length, sorted longest first within runs of {group_steps} "
                 "steps,\nso the raw loss saws up and down once per run; the dark line averages it out.",
                 fontsize=7, va="top")
    return fig


def _window(steps: tuple, group_steps: int | None) -> int:
    """Logged points per length-sorted run (logging_steps apart); 1 (no mean drawn) for a
    run of fewer than two such runs, where a mean over one would be a flat line."""
    if not group_steps or group_steps <= 1 or len(steps) < 2 or steps[-1] - steps[0] < 2 * group_steps:
        return 1
    every = max(1, (steps[-1] - steps[0]) // (len(steps) - 1))
    return max(1, round(group_steps / every))


def plot_loss(history: list[dict], path: Path, group_steps: int | None = None) -> Path:
    import matplotlib.pyplot as plt

    fig = loss_figure(history, group_steps)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
