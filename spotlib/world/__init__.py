"""The tiny world: task families, solution styles, scorers, tokenizer and base model.

Everything the study needs from the world goes through this module's names.
"""
from __future__ import annotations

from .error_positions import first_error_positions
from .families import FAMILIES, SPLITS, make_items
from .scoring import extract_answer, score
from .styles import oracle_solution, student_solution


def ensure_base_model(profile):
    """Pre-train (or reuse) the profile's tiny base model; returns its directory."""
    from .pretrain import ensure_base_model as _ensure
    return _ensure(profile)


__all__ = ["FAMILIES", "SPLITS", "make_items", "score", "extract_answer", "student_solution",
           "oracle_solution", "ensure_base_model", "first_error_positions"]
