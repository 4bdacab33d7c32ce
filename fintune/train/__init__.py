"""Training stage: LoRA SFT (`trainer.run`), then DPO with --dpo (`dpo.run`). GRPO is a
stage of its own (`grpo.run`). Each step takes the config and returns its adapter
folder; the orchestrator runs each in a process of its own. The step modules import
torch, transformers, TRL and Unsloth inside their functions, so importing them is light."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from fintune.train import dpo, trainer


def steps(cfg) -> list[Callable]:
    """The stage's steps, in order."""
    return [trainer.run] + ([dpo.run] if cfg.train.dpo else [])


def run(cfg) -> Path:
    """Every step in this process (under torchrun, where each rank is already one)."""
    out = None
    for step in steps(cfg):
        out = step(cfg)
    return out
