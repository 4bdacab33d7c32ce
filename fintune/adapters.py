"""Where each training step leaves its LoRA adapter, and the record it writes beside it.

Training (SFT, then DPO with --dpo) writes `train.lora_output_dir`; GRPO (--grpo)
writes its own folder beside it; merge, export and eval read whichever came last
(`final_adapter_dir`). Every adapter folder holds `fintune_adapter.json`: the base
it was trained on, the template family, the settings and what the run measured.
"""
from __future__ import annotations

import json
from pathlib import Path

from fintune.errors import MissingError

ADAPTER_RECORD = "fintune_adapter.json"


def sft_dir(cfg) -> Path:
    """Where the SFT adapter goes when DPO follows it (DPO writes lora_output_dir)."""
    out = Path(cfg.train.lora_output_dir)
    return out.with_name(out.name + "-sft")


def grpo_dir(cfg) -> Path:
    """Where the GRPO stage writes its adapter (train.grpo), beside the training's."""
    out = Path(cfg.train.lora_output_dir)
    return out.with_name(out.name + "-grpo")


def final_adapter_dir(cfg) -> Path:
    """The adapter merge, export and eval use: GRPO's where train.grpo is on, else the
    training stage's (SFT, or DPO after it)."""
    return grpo_dir(cfg) if cfg.train.grpo else Path(cfg.train.lora_output_dir)


def read_adapter_record(adapter_dir: str | Path) -> dict:
    p = Path(adapter_dir) / ADAPTER_RECORD
    if not p.is_file():
        raise MissingError(f"{p} not found: {adapter_dir} was not written by the training stage")
    return json.loads(p.read_text())
