"""Training stage (LoRA SFT, then DPO with --dpo). Heavy imports happen inside run()."""
from __future__ import annotations

from pathlib import Path


def steps(cfg) -> list[str]:
    """The stage's steps, each a "module:function" taking the config; the
    orchestrator runs each in a process of its own."""
    return ["fintune.train.trainer:run"] + (["fintune.train.dpo:run_stage"] if cfg.train.dpo else [])


def run(cfg) -> Path:
    """Every step in this process (under torchrun, where each rank is already one)."""
    import importlib

    out = None
    for step in steps(cfg):
        module, func = step.split(":")
        out = getattr(importlib.import_module(module), func)(cfg)
    return out
