"""Training stage (LoRA SFT, then DPO with --dpo; GRPO is a stage of its own,
fintune.train.grpo). Heavy imports happen inside run()."""
from __future__ import annotations

from pathlib import Path


def steps(cfg) -> list[str]:
    """The stage's steps, each a "module:function" taking the config; the
    orchestrator runs each in a process of its own."""
    return ["fintune.train.trainer:run"] + (["fintune.train.dpo:run_stage"] if cfg.train.dpo else [])


def grpo_dir(cfg) -> Path:
    """Where the GRPO stage writes its adapter (train.grpo), beside the training's."""
    out = Path(cfg.train.lora_output_dir)
    return out.with_name(out.name + "-grpo")


def final_adapter_dir(cfg) -> Path:
    """The adapter merge, export and eval use: GRPO's where train.grpo is on, else the
    training stage's (SFT, or DPO after it)."""
    return grpo_dir(cfg) if cfg.train.grpo else Path(cfg.train.lora_output_dir)


def run(cfg) -> Path:
    """Every step in this process (under torchrun, where each rank is already one)."""
    import importlib

    out = None
    for step in steps(cfg):
        module, func = step.split(":")
        out = getattr(importlib.import_module(module), func)(cfg)
    return out
