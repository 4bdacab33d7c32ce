"""Training stage (LoRA SFT). Heavy imports happen inside run()."""
from fintune.train.trainer import run

__all__ = ["run"]
