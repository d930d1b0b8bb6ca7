"""The values a conversion passes around, in a leaf module: the walker (`lowering.py`) and the
rules (`primitives/`) both use them without importing each other.

A jaxpr variable converts to one of:
- a tensor name (`str`) in the operator graph, computed at run time;
- `Const`: known at conversion time (a weight, a literal, anything computed only from those);
- `Poison`: the result of an equation that could not be converted (the walk goes on so that
  every problem is reported at once).
`Scalar` is the operator layer's inline literal operand, re-exported for the rules.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ir.ops.base import Scalar

__all__ = ["Const", "Poison", "Unsupported", "Scalar"]


@dataclass(eq=False)
class Const:
    """A value known at conversion time."""
    array: np.ndarray
    hint: str = "const"


class Poison:
    """Stands in for the result of an equation that could not be converted. It keeps the jaxpr's
    aval (shape and dtype), so rules that walk on (calls, loops) can still ask for them."""

    def __init__(self, aval=None):
        self.aval = aval


class Unsupported(Exception):
    """Raised by a rule (or an operator's shape inference) for a case it does not cover;
    `reason` says which. The walker records it in the problem list and goes on."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
