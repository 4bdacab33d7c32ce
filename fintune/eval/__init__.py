"""Evaluation: answer extraction, scoring, runners and reports. The stage is
imported when it runs, so the config's check of eval.eval_sampling (which reads
eval/sampling.py) does not load the stage and its runners."""
from __future__ import annotations

from pathlib import Path


def run(cfg) -> Path:
    from fintune.eval.stage import run as run_stage

    return run_stage(cfg)


__all__ = ["run"]
