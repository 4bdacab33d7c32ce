#!/usr/bin/env python3
"""Train the LoRA adapter alone (preparing data first if it is missing). The same as `fintune train`.

    python train.py --model_name NAME --dataset_folder datasets/ --output_dir outputs/financial_lora \
        [--resume_from_checkpoint PATH|latest]
"""
import sys

from fintune.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
