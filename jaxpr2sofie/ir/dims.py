"""Dimensions: an int, or a `Sym`, a polynomial in the one size known only at run time (the batch).

JAX traces a batch-polymorphic function with its own symbolic dimensions (`jax.export`); `canon`
turns each into a `Sym` once, where it enters the operator graph. Operators then compute with
dimensions as with ints (`+`, `*`, exact `//`, comparisons that hold for every batch >= 1), and
the C++ text of a dimension is its `str`: `(64 * batch)` reads the `batch` argument of the
generated `run`. Whatever needs a number at conversion time (`int()`, a comparison that depends on
the batch, an inexact division) raises `DynamicDimError`, which the converter reports with the
primitive and source line that asked for it.
"""
from __future__ import annotations

import numpy as np

from ..errors import Jaxpr2SofieError

CPP_NAME = "batch"   # the C++ variable holding the run-time size
SHOWN_AS = "N"       # how summaries and the ONNX dim_param name it


class DynamicDimError(Jaxpr2SofieError):
    """An operation needs a size fixed at conversion time, but it depends on the run-time batch."""


class Sym:
    """sum(coef * N**power) with integer coefficients, at least one power >= 1 (else it is an int)."""
    __slots__ = ("terms",)

    def __init__(self, terms: dict):
        self.terms = tuple(sorted((p, c) for p, c in terms.items() if c))

    # -- construction ---------------------------------------------------------
    @staticmethod
    def make(terms: dict):
        terms = {p: c for p, c in terms.items() if c}
        if not any(p > 0 for p in terms):
            return terms.get(0, 0)
        return Sym(terms)

    @staticmethod
    def batch():
        return Sym({1: 1})

    def _dict(self) -> dict:
        return dict(self.terms)

    # -- arithmetic -------------------------------------------------------------
    def __add__(self, other):
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        t = self._dict()
        for p, c in _terms(other).items():
            t[p] = t.get(p, 0) + c
        return Sym.make(t)

    __radd__ = __add__

    def __neg__(self):
        return Sym.make({p: -c for p, c in self.terms})

    def __sub__(self, other):
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        if not isinstance(other, (int, Sym)):
            return NotImplemented
        t = {}
        for p, c in self.terms:
            for q, d in _terms(other).items():
                t[p + q] = t.get(p + q, 0) + c * d
        return Sym.make(t)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        q = _exact_div(self, other)
        if q is None:
            raise DynamicDimError(f"{self!r} // {other!r} is not exact for every batch size")
        return q

    def __rfloordiv__(self, other):
        q = _exact_div(other, self)
        if q is None:
            raise DynamicDimError(f"{other!r} // {self!r} depends on the batch size")
        return q

    def __mod__(self, other):
        if _exact_div(self, other) is None:
            raise DynamicDimError(f"{self!r} % {other!r} depends on the batch size")
        return 0

    def __rmod__(self, other):
        if _exact_div(other, self) is None:
            raise DynamicDimError(f"{other!r} % {self!r} depends on the batch size")
        return 0

    # -- comparisons (true for every batch >= 1, or an error) -------------------
    def __eq__(self, other):
        if isinstance(other, (int, Sym)):
            return _terms(self) == _terms(other)
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self.terms)

    def __lt__(self, other):
        return _positive(other - self, strict=True, what=f"{self!r} < {other!r}")

    def __le__(self, other):
        return _positive(other - self, strict=False, what=f"{self!r} <= {other!r}")

    def __gt__(self, other):
        return _positive(self - other, strict=True, what=f"{self!r} > {other!r}")

    def __ge__(self, other):
        return _positive(self - other, strict=False, what=f"{self!r} >= {other!r}")

    def __bool__(self):
        lo, hi = _range(self)
        if lo > 0 or hi < 0:
            return True
        raise DynamicDimError(f"whether {self!r} is 0 depends on the batch size")

    # -- what needs a number ------------------------------------------------------
    def __int__(self):
        raise DynamicDimError(f"a size fixed at conversion time is needed, but {self!r} depends on the batch")

    __index__ = __int__

    def __float__(self):
        return float(self.__int__())

    def evaluate(self, n: int) -> int:
        return sum(c * n ** p for p, c in self.terms)

    # -- text -----------------------------------------------------------------------
    def __str__(self):
        return _text(self.terms, CPP_NAME, " * ", "(", ")")

    def __format__(self, spec):
        return format(str(self), spec)

    def __repr__(self):
        return _text(self.terms, SHOWN_AS, "*", "", "")


def _terms(x) -> dict:
    return x._dict() if isinstance(x, Sym) else ({0: int(x)} if x else {})


def _exact_div(a, b):
    """a // b when b divides a for every batch (a monomial divisor), else None."""
    tb = _terms(b)
    if len(tb) != 1:
        return None
    (q, d), = tb.items()
    out = {}
    for p, c in _terms(a).items():
        if p < q or c % d:
            return None
        out[p - q] = c // d
    return Sym.make(out)


def _range(x) -> tuple:
    """(smallest, largest) value of x over every batch >= 1 (infinite where unbounded)."""
    if isinstance(x, int):
        return x, x
    t = x._dict()
    at_one = sum(t.values())
    rising = [c for p, c in t.items() if p > 0]
    if all(c >= 0 for c in rising):
        return at_one, float("inf")     # smallest at batch 1
    if all(c <= 0 for c in rising):
        return float("-inf"), at_one
    return float("-inf"), float("inf")


def _positive(x, strict: bool, what: str) -> bool:
    """Whether x > 0 (strict) or x >= 0 for every batch >= 1; DynamicDimError if that varies."""
    lo, hi = _range(x)
    if (lo > 0) if strict else (lo >= 0):
        return True
    if (hi <= 0) if strict else (hi < 0):
        return False
    raise DynamicDimError(f"the comparison {what} depends on the batch size")


def _text(terms, var, times, lp, rp) -> str:
    parts = []
    for p, c in sorted(terms, reverse=True):
        mono = times.join([var] * p)
        if p == 0:
            body = str(abs(c))
        elif abs(c) == 1:
            body = mono
        else:
            body = f"{abs(c)}{times}{mono}"
        parts.append(("- " if c < 0 else "+ ") + body if parts else ("-" if c < 0 else "") + body)
    s = " ".join(parts)
    return f"{lp}{s}{rp}" if (len(parts) > 1 or times in s or s.startswith("-")) else s


# -- the boundary: JAX's symbolic dimensions become Syms -----------------------------------
def is_symbolic(d) -> bool:
    return isinstance(d, Sym) or type(d).__name__ == "_DimExpr"


def canon(d):
    """One dimension as an int or a Sym (JAX's _DimExpr converted, NumPy integers made int)."""
    if isinstance(d, Sym):
        return d
    if type(d).__name__ == "_DimExpr":
        return _from_jax(d)
    return int(d)


def canon_shape(shape) -> tuple:
    return tuple(canon(d) for d in shape)


def canon_param(v):
    """Eqn parameters with every JAX dimension converted (tuples and lists of them, nested)."""
    if type(v).__name__ == "_DimExpr":
        return _from_jax(v)
    if type(v) in (tuple, list):
        return type(v)(canon_param(x) for x in v)
    return v


def _from_jax(d):
    names = d.get_vars()
    if len(names) != 1:
        raise DynamicDimError(f"dimension {d} uses {len(names)} symbols ({', '.join(sorted(names)) or 'none'}); "
                              "one run-time size (the batch) is supported")
    (name,) = names
    values = [int(d._evaluate({name: k})) for k in range(0, 8)]
    # the polynomial of degree <= 3 through the first four points, checked on the other four
    coef = {}
    for power, c in enumerate(reversed(np.polyfit(range(4), values[:4], 3))):
        r = int(round(c))
        if abs(c - r) > 1e-6:
            raise DynamicDimError(f"dimension {d} is not a polynomial in the batch size with integer coefficients")
        coef[power] = r
    sym = Sym.make(coef)
    if any((sym.evaluate(k) if isinstance(sym, Sym) else sym) != v for k, v in enumerate(values)):
        raise DynamicDimError(f"dimension {d} is not a polynomial in the batch size (e.g. it divides it): "
                              "convert with a fixed batch")
    return sym


def evaluate(d, n: int) -> int:
    return d.evaluate(n) if isinstance(d, Sym) else int(d)


def evaluate_shape(shape, n: int) -> tuple:
    return tuple(evaluate(d, n) for d in shape)


def per_event(d):
    """(per-event, fixed) parts of a linear size or count; None when it is not linear in the batch."""
    if not isinstance(d, Sym):
        return 0, int(d)
    t = d._dict()
    if set(t) - {0, 1}:
        return None
    return t.get(1, 0), t.get(0, 0)


def solve(d, value: int):
    """The batch n >= 0 for which dimension d equals `value` (d linear in the batch), else None."""
    lin = per_event(d)
    if lin is None or lin[0] == 0:
        return None
    a, b = lin
    n, r = divmod(value - b, a)
    return n if r == 0 and n >= 0 else None


def match_shape(shape, actual):
    """Whether an array shape fits a tensor shape: None (it fits, no batch in it), the batch n it
    implies, or False (it does not fit)."""
    actual = tuple(actual)
    if len(actual) != len(shape):
        return False
    n = None
    for d, a in zip(shape, actual):
        if isinstance(d, Sym):
            k = solve(d, a)
            if k is None or (n is not None and k != n):
                return False
            n = k
    if evaluate_shape(shape, 1 if n is None else n) != actual:
        return False
    return n


def show(d) -> str:
    """A dimension or count as people read it: `64*N`."""
    return repr(d) if isinstance(d, Sym) else str(d)


def show_shape(shape) -> str:
    return "(" + ", ".join(show(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def show_text(text: str) -> str:
    """Operator details written with C++ dimensions (`M=(64 * batch)`), as people read them."""
    import re
    if "batch" not in text:
        return text
    return re.sub(r"\bbatch\b(?!=)", SHOWN_AS, re.sub(r"\((-?\d+) \* batch\)", r"\1*" + SHOWN_AS, text))
