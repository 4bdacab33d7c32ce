#!/usr/bin/env python3
"""Run the whole pipeline: data -> LoRA training -> FP16 merge -> GGUF export -> evaluation.
The same as `fintune run`.

    python train_financial_model.py [--config NAME|FILE] [--dry_run] [--skip_training ...]
"""
import sys

from fintune.cli import run_main

if __name__ == "__main__":
    sys.exit(run_main())
