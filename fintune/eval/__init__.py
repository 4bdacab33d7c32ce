"""Evaluation: answer extraction, scoring, runners and reports."""
from fintune.eval.stage import run

__all__ = ["run"]
