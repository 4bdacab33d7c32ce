"""Data preparation stage."""
from fintune.data.prepare import run

__all__ = ["run"]
