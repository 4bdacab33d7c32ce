"""Evaluation stage: base vs tuned models on the held-out and external sets
(stage.run), and `fintune eval` on any model (the CLI in fintune/cli/eval.py).
Scoring lives below the stages, in fintune/scoring, where GRPO's rewards use it too."""
from __future__ import annotations

from fintune.eval.stage import run

__all__ = ["run"]
