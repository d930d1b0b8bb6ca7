"""Random well-typed JAX programs for differential fuzzing: generators from a numpy Generator to a
Program (families.py lists them and what each must contain).

A program is Python source (`def p(w, a0, a1, ...)`) built one equation at a time by a `Builder`:
each step is a JAX expression over earlier values, checked with `jax.eval_shape` (a step JAX
rejects as ill-typed is not taken; any other error, a typo in a template, propagates), so shapes
and dtypes are JAX's own. The source is the reproducer:
a failing program prints it with its input specs and seed.

Keeping comparisons meaningful (no false alarms):
- transcendentals get inputs in their domain (`log(|x| + 0.5)`, `asin(0.9 tanh x)`, `exp(clamp(x))`);
- discontinuous operations (floor, round, sign, comparisons, argmax, rem, atan2, casts to int) only
  see *exact* values: inputs and results of operations that every correct implementation computes
  bit-identically (data movement, neg/abs/max/min, select, add/sub of exact values, scaling by a
  power of two) -- a 1-ulp difference in `exp` must not flip a comparison;
- float magnitudes are tracked roughly and scaled back by a power of two when they grow past 8, so
  a sum of cancelling terms is compared against an error scale near 1;
- integers stay far from overflow (C++ signed overflow is undefined), divisors are never zero.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ENV = {"jax": jax, "jnp": jnp, "lax": lax, "np": np}
DIMS = (1, 1, 2, 3, 4, 5)
MAX_SIZE = 150
INT_LIMIT = 1 << 20          # bound on |int| values: products stay far below 2**31
# What JAX raises for an ill-typed step (shapes that do not match, an axis out of range). Anything
# else -- a NameError or AttributeError from a typo in a template -- propagates and fails the run.
REJECTED = (TypeError, ValueError, IndexError)
SIGNATURE_ERRORS = ("unexpected keyword argument", "positional argument", "required keyword-only argument")


class NoProgram(Exception):
    """This draw gave no program (every step was ill-typed); counted, and the run fails when it
    happens for more than a few draws of a family."""


@dataclass
class Val:
    name: str
    shape: tuple
    dtype: str
    bound: float = 2.0        # rough upper bound of |value| (floats and ints)
    exact: bool = True        # computed bit-identically by any correct implementation


@dataclass
class Arg:
    name: str
    shape: tuple
    dtype: str
    kind: tuple               # ("f",) | ("grid",) | ("i", lo, hi) | ("b",)
    weight: bool = False      # a params leaf (a constant in the jaxpr) instead of a run-time input


@dataclass
class Program:
    family: str
    source: str
    args: list
    outputs: list = field(default_factory=list)
    atol: float = 1e-5
    key: tuple = ()           # families.draw(family, key) gives this program again
    applied: set = field(default_factory=set)   # the family's primitives it applies (families.py)

    def function(self):
        env = dict(ENV)
        exec(self.source, env)   # noqa: S102 - our own generated source
        return env["p"]

    def make_inputs(self, rng):
        return [make_array(a, rng) for a in self.args]

    def __repr__(self):
        return "\n" + self.describe()

    def _repr_pretty_(self, printer, cycle):   # hypothesis' failure report
        printer.text(repr(self))

    def describe(self) -> str:
        specs = ", ".join(f"{a.name}{'(weight)' if a.weight else ''}: {a.dtype}{list(a.shape)} {a.kind}"
                          for a in self.args)
        return f"[{self.family}] families.draw({self.family!r}, {self.key}); inputs {specs}\n{self.source}"


def make_array(a: Arg, rng) -> np.ndarray:
    kind = a.kind[0]
    if kind == "f":
        return rng.uniform(-2.0, 2.0, a.shape).astype(np.float32)
    if kind == "grid":   # multiples of 1/4: ties for max/argmax, exact halves for round
        return (rng.integers(-8, 9, a.shape) / 4.0).astype(np.float32)
    if kind == "i":
        return rng.integers(a.kind[1], a.kind[2], a.shape).astype(a.dtype)
    if kind == "b":
        return rng.random(a.shape) < 0.5
    raise ValueError(kind)


def size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


class Builder:
    """Accumulates one program, drawing every choice from `rng` (a numpy Generator): the same
    seed gives the same program, and the first program of a run is as random as the thousandth
    (no "simplest example first" phase, unlike hypothesis)."""

    def __init__(self, rng, family):
        self.rng = rng
        self.family = family
        self.args: list[Arg] = []
        self.pool: list[Val] = []
        self.lines: list[str] = []
        self.structs: dict = {}
        self.atol = 1e-5
        self.allow_empty = False   # zero-size intermediates (empty slices, pads that crop everything)
        self.rejected_steps = Counter()

    # -- drawing helpers ---------------------------------------------------------------
    def choice(self, seq):
        seq = list(seq)
        return seq[int(self.rng.integers(len(seq)))]

    def integer(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def coin(self, p=0.5):
        return bool(self.rng.random() < p)

    def permutation(self, seq):
        seq = list(seq)
        return [seq[int(i)] for i in self.rng.permutation(len(seq))]

    def subset(self, r):
        """A sorted non-empty set of axes out of range(r)."""
        return tuple(sorted({self.integer(0, r - 1) for _ in range(self.integer(1, r))}))

    def shape(self, min_rank=0, max_rank=4, max_size=MAX_SIZE):
        rank = self.integer(min_rank, max_rank)
        dims = [self.choice(DIMS) for _ in range(rank)]
        while size(dims) > max_size:
            dims[dims.index(max(dims))] -= 1
        return tuple(dims)

    # -- values ------------------------------------------------------------------------
    def fresh(self, shape, dtype="float32", kind=None, weight=None, view=True) -> Val:
        """A new input (or weight), possibly read through a transposed or strided view."""
        shape = tuple(shape)
        if kind is None:
            kind = {"float32": ("f",) if self.coin(0.6) else ("grid",), "int32": ("i", -20, 21),
                    "bool": ("b",)}[dtype]
        if weight is None:
            weight = self.coin(0.25)
        # a view of an empty array has nothing to show (and a strided slice of it no valid bounds)
        viewable = view and shape and all(shape)
        layout = self.choice(["plain", "plain", "transposed", "strided"]) if viewable else "plain"
        stored, expr = shape, None
        if layout == "transposed" and len(shape) >= 2:
            perm = list(self.permutation(range(len(shape))))
            stored = tuple(shape[p] for p in perm)
            inv = tuple(int(i) for i in np.argsort(perm))
            expr = f"jnp.transpose({{a}}, {inv})"
        elif layout == "strided":
            steps = [self.choice([1, 1, 2]) for _ in shape]
            offs = [self.choice([0, 0, 1]) for _ in shape]
            stored = tuple(o + (n - 1) * s + 1 + self.choice([0, 1]) for n, s, o in zip(shape, steps, offs))
            expr = f"lax.slice({{a}}, {tuple(offs)}, {tuple(o + (n - 1) * s + 1 for n, s, o in zip(shape, steps, offs))}, {tuple(steps)})"
        name = f"{'k' if weight else 'a'}{len(self.args)}"
        self.args.append(Arg(name, stored, dtype, kind, weight))
        self.structs[name] = jax.ShapeDtypeStruct(stored, dtype)
        bound = {"f": 2.0, "grid": 2.0, "i": max(abs(kind[1]), abs(kind[2])) if kind[0] == "i" else 1, "b": 1}[kind[0]]
        v = Val(name, stored, dtype, float(bound), True)
        if expr is not None:
            v = self.emit(expr.format(a=name), bound=bound, exact=True, max_size=1 << 20)
            assert v is not None and v.shape == shape, (expr, shape)
        return v

    def emit(self, expr, bound=None, exact=False, keep=True, max_size=4 * MAX_SIZE):
        """Add `vN = expr` if JAX accepts it and the result is non-empty; returns the Val or None."""
        names = list(self.structs)
        try:
            out = jax.eval_shape(lambda *vs: eval(expr, {**ENV, **dict(zip(names, vs))}),  # noqa: S307
                                 *self.structs.values())
        except REJECTED as e:   # an ill-typed step is not taken (JAX's own shape and type checks)
            if isinstance(e, TypeError) and any(m in str(e) for m in SIGNATURE_ERRORS):
                raise   # a call that does not match the function's signature: a typo in the template
            self.rejected_steps[type(e).__name__] += 1
            return None
        if not hasattr(out, "shape") or (size(out.shape) == 0 and not self.allow_empty) or size(out.shape) > max_size:
            return None
        name = f"v{len(self.lines)}"
        self.lines.append(f"{name} = {expr}")
        self.structs[name] = jax.ShapeDtypeStruct(out.shape, out.dtype)
        dtype = np.dtype(out.dtype).name
        v = Val(name, tuple(out.shape), dtype, float(bound if bound is not None else 1.0), exact)
        if keep:
            self.pool.append(v)
        return v

    def pick(self, dtype=None, exact=None, min_rank=0):
        cands = [v for v in self.pool if (dtype is None or v.dtype == dtype)
                 and (exact is None or v.exact == exact or (exact is False)) and len(v.shape) >= min_rank]
        if not cands:
            return None
        if self.coin(0.6):
            return cands[-1]
        return self.choice(cands)

    def rescale(self, v: Val, limit=8.0) -> Val:
        """Scale a float value back under `limit` by a power of two (exact, keeps `exact`)."""
        if v.dtype != "float32" or v.bound <= limit:
            return v
        k = math.ceil(math.log2(v.bound / 2.0))
        return self.emit(f"{v.name} * {2.0 ** -k!r}", bound=v.bound * 2.0 ** -k, exact=v.exact, max_size=1 << 20) or v

    def program(self, outputs, atol=None) -> Program:
        args = {a.name for a in self.args}
        outs = []
        for o in outputs:
            if o is not None and o.name not in outs and o.name not in args:
                outs.append(o.name)
        if not outs or not self.lines:   # JAX rejected every step drawn: nothing to compare
            raise NoProgram(f"[{self.family}] no equation was accepted ({dict(self.rejected_steps)} rejected)")
        params = ", ".join(["w"] + [a.name for a in self.args if not a.weight])
        body = [f'{a.name} = w["{a.name}"]' for a in self.args if a.weight] + self.lines
        body.append(f"return ({', '.join(outs)},)")
        src = f"def p({params}):\n" + "".join(f"    {ln}\n" for ln in body)
        return Program(self.family, src, list(self.args), outs, atol or self.atol)


# --- operation tables -------------------------------------------------------------------------
# name -> (expression template, bound of the result given the operand's bound, needs an exact operand)
UNARY = {
    "neg": ("lax.neg({x})", lambda b: b, False),
    "abs": ("lax.abs({x})", lambda b: b, False),
    "tanh": ("lax.tanh({x})", lambda b: 1.0, False),
    "logistic": ("lax.logistic({x})", lambda b: 1.0, False),
    "sin": ("lax.sin({x})", lambda b: 1.0, False),
    "cos": ("lax.cos({x})", lambda b: 1.0, False),
    "atan": ("lax.atan({x})", lambda b: 1.6, False),
    "erf": ("lax.erf({x})", lambda b: 1.0, False),
    "erfc": ("lax.erfc({x})", lambda b: 2.0, False),
    "cbrt": ("lax.cbrt({x})", lambda b: b ** (1 / 3) + 1, False),
    "asinh": ("lax.asinh({x})", lambda b: math.log(2 * b + 1) + 1, False),
    "square": ("lax.square({x})", lambda b: b * b, False),
    "log": ("lax.log(lax.abs({x}) + 0.5)", lambda b: max(0.7, math.log(b + 0.5)), False),
    "log1p": ("lax.log1p(lax.abs({x}))", lambda b: math.log1p(b), False),
    "sqrt": ("lax.sqrt(lax.abs({x}))", lambda b: math.sqrt(b), False),
    "rsqrt": ("lax.rsqrt(lax.abs({x}) + 0.5)", lambda b: 1.5, False),
    "acosh": ("lax.acosh(lax.abs({x}) + 1.1)", lambda b: math.acosh(b + 1.1), False),
    "asin": ("lax.asin(lax.tanh({x}) * 0.9)", lambda b: 1.2, False),
    "acos": ("lax.acos(lax.tanh({x}) * 0.9)", lambda b: 2.7, False),
    "atanh": ("lax.atanh(lax.tanh({x}) * 0.9)", lambda b: 1.5, False),
    "tan": ("lax.tan(lax.tanh({x}) * 1.2)", lambda b: 2.6, False),
    "exp": ("lax.exp(lax.clamp(-3.0, {x}, 3.0))", lambda b: 20.1, False),
    "exp2": ("lax.exp2(lax.clamp(-3.0, {x}, 3.0))", lambda b: 8.0, False),
    "expm1": ("lax.expm1(lax.clamp(-3.0, {x}, 3.0))", lambda b: 19.1, False),
    "sinh": ("lax.sinh(lax.clamp(-3.0, {x}, 3.0))", lambda b: 10.1, False),
    "cosh": ("lax.cosh(lax.clamp(-3.0, {x}, 3.0))", lambda b: 10.1, False),
    "pow2": ("{x} ** 2", lambda b: b * b, False),
    "pow3": ("lax.integer_pow({x}, 3)", lambda b: b ** 3, False),
    "pow_neg": ("lax.integer_pow(lax.abs({x}) + 0.5, -2)", lambda b: 4.0, False),
    "gelu": ("jax.nn.gelu({x})", lambda b: b, False),
    "gelu_erf": ("jax.nn.gelu({x}, approximate=False)", lambda b: b, False),
    "silu": ("jax.nn.silu({x})", lambda b: b, False),
    "elu": ("jax.nn.elu({x})", lambda b: b, False),
    "softplus": ("jax.nn.softplus({x})", lambda b: b + 1, False),
    "relu": ("jax.nn.relu({x})", lambda b: b, False),
    "relu6": ("jax.nn.relu6({x})", lambda b: 6.0, False),
    "leaky_relu": ("jax.nn.leaky_relu({x})", lambda b: b, False),
    "hard_sigmoid": ("jax.nn.hard_sigmoid({x})", lambda b: 1.0, False),
    # discontinuous: exact operands only
    "sign": ("lax.sign({x})", lambda b: 1.0, True),
    "floor": ("lax.floor({x})", lambda b: b + 1, True),
    "ceil": ("lax.ceil({x})", lambda b: b + 1, True),
    "round_even": ("lax.round({x}, lax.RoundingMethod.TO_NEAREST_EVEN)", lambda b: b + 1, True),
    "round_away": ("lax.round({x}, lax.RoundingMethod.AWAY_FROM_ZERO)", lambda b: b + 1, True),
    "is_finite": ("lax.is_finite({x})", lambda b: 1.0, False),
}
EXACT_UNARY = {"neg", "abs", "sign", "floor", "ceil", "round_even", "round_away", "relu", "is_finite"}

# name -> (expression, bound from the operand bounds, needs exact operands, result exact if operands are)
BINARY = {
    "add": ("lax.add({x}, {y})", lambda a, b: a + b, False, True),
    "sub": ("lax.sub({x}, {y})", lambda a, b: a + b, False, True),
    "mul": ("lax.mul({x}, {y})", lambda a, b: a * b, False, False),
    "div": ("lax.div({x}, lax.abs({y}) + 0.5)", lambda a, b: 2 * a, False, False),
    "max": ("lax.max({x}, {y})", max, False, True),
    "min": ("lax.min({x}, {y})", max, False, True),
    "pow": ("lax.pow(lax.abs({x}) + 0.5, lax.clamp(-2.0, {y}, 2.0))", lambda a, b: max(4.0, (a + 0.5) ** 2), False, False),
    "atan2": ("lax.atan2({x}, {y})", lambda a, b: 3.2, True, False),
    "rem": ("lax.rem({x}, lax.abs({y}) + 0.5)", lambda a, b: max(a, b + 0.5), True, False),
}
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")


def binary_partner(b: Builder, x: Val, exact=False) -> tuple:
    """(y, how): a second operand the same shape as x after broadcasting."""
    how = b.choice(["pool", "same", "broadcast", "scalar"])
    if how == "pool":
        cands = [v for v in b.pool if v.shape == x.shape and v.dtype == x.dtype and v is not x
                 and (v.exact or not exact)]
        if cands:
            return b.choice(cands), "same"
        how = "same"
    if how == "scalar":
        lit = b.choice([0.5, 1.5, -0.75, 2.0, 0.0]) if x.dtype == "float32" else b.choice([1, 3, -2])
        return lit, "scalar"
    if how == "broadcast" and x.shape:
        # size-1 dimensions and/or a shorter rank, numpy broadcasting rules
        rank = b.integer(0, len(x.shape))
        shape = tuple(1 if b.coin(0.5) else n for n in x.shape[len(x.shape) - rank:])
        return b.fresh(shape, x.dtype), "broadcast"
    return b.fresh(x.shape, x.dtype), "same"


def apply_binary(b: Builder, x: Val, op: str, exact_only: bool) -> Val | None:
    tmpl, bfn, need_exact, keeps_exact = BINARY[op]
    y, how = binary_partner(b, x, exact=need_exact or exact_only)
    if how == "scalar":
        ys, yb, yexact = repr(y), abs(y), True
    else:
        ys, yb, yexact = y.name, y.bound, y.exact
    if need_exact and not (x.exact and yexact):
        return None
    xs = x.name
    if how == "broadcast":
        xs, ys = f"jnp.broadcast_arrays({x.name}, {y.name})[0]", f"jnp.broadcast_arrays({x.name}, {y.name})[1]"
    v = b.emit(tmpl.format(x=xs, y=ys), bound=bfn(x.bound, yb), exact=keeps_exact and x.exact and yexact)
    return b.rescale(v) if v else None


def apply_unary(b: Builder, x: Val, exact_only=False) -> Val | None:
    names = [n for n, (_, _, ex) in UNARY.items() if (x.exact or not ex) and (not exact_only or n in EXACT_UNARY)]
    op = b.choice(names)
    tmpl, bfn, _ = UNARY[op]
    v = b.emit(tmpl.format(x=x.name), bound=bfn(x.bound), exact=op in EXACT_UNARY and x.exact)
    if v is not None and v.dtype == "bool":
        v = b.emit(f"{v.name}.astype(jnp.float32)", bound=1.0, exact=True)
    return b.rescale(v) if v else None


def apply_compare_select(b: Builder, x: Val) -> Val | None:
    """A comparison of exact values, then select between two values with a boolean or int predicate."""
    if not x.exact:
        return None
    y, how = binary_partner(b, x, exact=True)
    if how != "scalar" and not y.exact:
        return None
    ys = repr(y) if how == "scalar" else y.name
    xs = x.name
    if how == "broadcast":
        xs, ys = f"jnp.broadcast_arrays({x.name}, {y.name})[0]", f"jnp.broadcast_arrays({x.name}, {y.name})[1]"
    c = b.emit(f"lax.{b.choice(COMPARE)}({xs}, {ys})", exact=True)
    if c is None:
        return None
    form = b.choice(["where", "select_n", "logic", "select3", "cast"])
    if form == "logic":
        c2 = b.emit(f"lax.{b.choice(COMPARE)}({x.name}, {b.choice([0.0, 0.5, -1.0]) if x.dtype == 'float32' else 1})",
                    exact=True)
        if c2 is not None and c2.shape == c.shape:
            op = b.choice(["bitwise_and", "bitwise_or", "bitwise_xor"])
            c = b.emit(f"lax.bitwise_not(lax.{op}({c.name}, {c2.name}))" if b.coin(0.3)
                       else f"lax.{op}({c.name}, {c2.name})", exact=True) or c
    if form == "cast" or x.dtype == "bool":
        return b.emit(f"{c.name}.astype({b.choice(['jnp.float32', 'jnp.int32'])})", bound=1.0, exact=True)
    other = b.pick(dtype=x.dtype) or x
    if other.shape != c.shape:
        other = x if x.shape == c.shape else None
    if other is None:
        return None
    if form == "select3" and x.dtype in ("float32", "int32"):
        third = b.emit(f"lax.neg({x.name})", bound=x.bound, exact=x.exact) if x.shape == c.shape else None
        if third is not None:
            which = b.emit(f"lax.clamp(0, {c.name}.astype(jnp.int32) + lax.sign({x.name}).astype(jnp.int32), 2)",
                           exact=True, keep=False)
            if which is not None:
                return b.emit(f"lax.select_n({which.name}, {x.name}, {other.name}, {third.name})",
                              bound=max(x.bound, other.bound), exact=x.exact and other.exact)
    if form == "select_n" and c.shape == x.shape:
        return b.emit(f"lax.select_n({c.name}, {x.name}, {other.name})", bound=max(x.bound, other.bound),
                      exact=x.exact and other.exact)
    return b.emit(f"jnp.where({c.name}, {other.name}, {x.name})", bound=max(x.bound, other.bound),
                  exact=x.exact and other.exact)


# --- data movement ------------------------------------------------------------------------------
def apply_movement(b: Builder, x: Val) -> Val | None:
    shape, r = x.shape, len(x.shape)
    kind = b.choice(["transpose", "reshape", "broadcast", "squeeze_expand", "slice", "rev", "pad", "concat",
                     "dynamic_slice", "split_stack"])
    keep = dict(bound=x.bound, exact=x.exact)
    if kind == "transpose" and r >= 2:
        perm = tuple(b.permutation(range(r)))
        return b.emit(f"jnp.transpose({x.name}, {perm})", **keep)
    if kind == "reshape":
        n, dims = size(shape), []
        while n > 1 and len(dims) < 4:
            divs = [d for d in range(1, n + 1) if n % d == 0]
            d = b.choice(divs)
            dims.append(d)
            n //= d
        if n > 1:
            dims.append(n)
        if b.coin(0.3):
            dims.insert(b.integer(0, len(dims)), 1)
        return b.emit(f"{x.name}.reshape({tuple(dims)})", **keep)
    if kind == "broadcast":
        if 1 in shape and b.coin(0.5):
            new = tuple(b.choice([2, 3, 4]) if n == 1 and b.coin(0.7) else n for n in shape)
            return b.emit(f"jnp.broadcast_to({x.name}, {new})", **keep)
        ax = b.integer(0, r)
        new = shape[:ax] + (b.choice([1, 2, 3]),) + shape[ax:]
        return b.emit(f"lax.broadcast_in_dim({x.name}, {new}, {tuple(d for d in range(r + 1) if d != ax)})", **keep)
    if kind == "squeeze_expand":
        ones = [i for i, n in enumerate(shape) if n == 1]
        if ones and b.coin(0.6):
            return b.emit(f"jnp.squeeze({x.name}, {b.choice(ones)})", **keep)
        return b.emit(f"jnp.expand_dims({x.name}, {b.integer(-r - 1, r)})", **keep)
    if kind == "slice" and r:
        starts, limits, steps = [], [], []
        for n in shape:
            s = b.integer(0, n - 1)
            e = b.integer(s if b.allow_empty else s + 1, n)
            starts.append(s), limits.append(e), steps.append(b.choice([1, 1, 2, 3]))
        return b.emit(f"lax.slice({x.name}, {tuple(starts)}, {tuple(limits)}, {tuple(steps)})", **keep)
    if kind == "rev" and r:
        dims = tuple(sorted(set(b.subset(r))))
        return b.emit(f"lax.rev({x.name}, {dims})", **keep)
    if kind == "pad" and r:
        cfg = []
        for n in shape:
            lo, hi = b.integer(-1, 2), b.integer(-1, 2)
            cfg.append((lo, hi, b.choice([0, 0, 1])))
        pad_value = {"float32": b.choice(["0.0", "-1.5"]), "int32": "3", "bool": "True"}[x.dtype]
        if x.dtype == "float32" and b.coin(0.2):   # a run-time padding value
            pv = b.pick(dtype="float32")
            pad_value = f"{pv.name}.reshape(-1)[0]" if pv is not None else pad_value
        return b.emit(f"lax.pad({x.name}, jnp.array({pad_value}, {x.name}.dtype), {tuple(cfg)})",
                      bound=max(x.bound, 1.5), exact=x.exact)
    if kind == "concat" and r:
        ax = b.integer(0, r - 1)
        other_shape = shape[:ax] + (b.choice([1, 2, 3]),) + shape[ax + 1:]
        y = b.fresh(other_shape, x.dtype)
        parts = [x.name, y.name] if b.coin() else [y.name, x.name, x.name]
        return b.emit(f"jnp.concatenate([{', '.join(parts)}], axis={ax})", bound=max(x.bound, y.bound),
                      exact=x.exact and y.exact)
    if kind == "dynamic_slice" and r:
        sizes = tuple(b.integer(1, n) for n in shape)
        starts = tuple(b.integer(-1, n) for n in shape)   # XLA clamps out-of-range starts
        return b.emit(f"lax.dynamic_slice({x.name}, {starts}, {sizes})", **keep)
    if kind == "split_stack" and r:
        ax = b.integer(0, r - 1)
        if shape[ax] >= 2:
            cut = b.integer(1, shape[ax] - 1)
            parts = b.emit(f"jnp.split({x.name}, [{cut}], axis={ax})[{b.integer(0, 1)}]", **keep)
            return parts
        return b.emit(f"jnp.stack([{x.name}, {x.name}], axis={b.integer(0, r)})", **keep)
    return None


# --- reductions ---------------------------------------------------------------------------------
def apply_reduction(b: Builder, x: Val) -> Val | None:
    r = len(x.shape)
    if r == 0:
        return None
    axes = tuple(sorted(set(b.subset(r))))
    n = size([x.shape[a] for a in axes])
    ax = b.integer(0, r - 1)
    kind = b.choice(["sum", "max", "min", "prod", "mean", "var", "argmax", "argmin", "cumsum", "cumprod",
                     "cummax", "cummin", "softmax", "log_softmax", "logsumexp"])
    is_float = x.dtype == "float32"
    if kind == "sum":
        return b.rescale(b.emit(f"jnp.sum({x.name}, axis={axes})", bound=x.bound * n,
                                exact=x.exact and not is_float) or x) if x.dtype != "bool" else None
    if kind in ("max", "min"):
        return b.emit(f"lax.reduce_{kind}({x.name}, {axes})", bound=x.bound, exact=x.exact)
    if kind == "prod":
        if x.dtype == "bool" or (not is_float and x.bound ** n > INT_LIMIT):
            return None
        if is_float and x.bound > 1.5:
            x = b.emit(f"lax.tanh({x.name}) * 0.5 + 1.0", bound=1.5, exact=False)
        return b.emit(f"jnp.prod({x.name}, axis={axes})", bound=x.bound ** n, exact=x.exact and not is_float) \
            if x is not None else None
    if kind in ("mean", "var") and is_float:
        return b.emit(f"jnp.{kind}({x.name}, axis={axes})", bound=x.bound * x.bound if kind == "var" else x.bound)
    if kind in ("argmax", "argmin"):
        if not x.exact or x.dtype == "bool":
            return None
        expr = f"jnp.{kind}({x.name}, axis={ax})" if b.coin(0.8) else f"jnp.{kind}({x.name})"
        return b.emit(expr, bound=size(x.shape), exact=True)
    if kind.startswith("cum") and x.dtype != "bool":
        rev = b.coin(0.3)
        if kind == "cumsum":
            v = b.emit(f"lax.cumsum({x.name}, {ax}, reverse={rev})", bound=x.bound * x.shape[ax],
                       exact=x.exact and not is_float)
            return b.rescale(v) if v else None
        if kind == "cumprod":
            if not is_float:
                return None
            if x.bound > 1.5:
                x = b.emit(f"lax.tanh({x.name}) * 0.5 + 1.0", bound=1.5, exact=False)
            return b.emit(f"lax.cumprod({x.name}, {ax}, reverse={rev})", bound=1.5 ** x.shape[ax]) if x else None
        return b.emit(f"lax.{kind}({x.name}, {ax}, reverse={rev})", bound=x.bound, exact=x.exact)
    if kind in ("softmax", "log_softmax") and is_float:
        return b.emit(f"jax.nn.{kind}({x.name}, axis={ax if b.coin(0.7) else axes})",
                      bound=1.0 if kind == "softmax" else 2 * x.bound + math.log(n + 1))
    if kind == "logsumexp" and is_float:
        return b.emit(f"jax.nn.logsumexp({x.name}, axis={axes})", bound=x.bound + math.log(n + 1))
    return None


# --- dot_general --------------------------------------------------------------------------------
def dot_dimension_numbers(b: Builder, lhs_shape):
    """Random batch / contracting dims for a lhs of this shape; the rhs shape in a random order."""
    r = len(lhs_shape)
    dims = list(b.permutation(range(r)))
    nb = b.integer(0, min(2, r - 1))
    nc = b.integer(1 if r - nb >= 1 else 0, min(2, r - nb))
    lb, lc = dims[:nb], dims[nb:nb + nc]
    rfree = [b.choice([1, 2, 3, 4]) for _ in range(b.integer(0, 2))]
    # rhs axes: ("b", i) batch i, ("c", i) contracting i, ("f", n) free of size n, in random order
    items = [("b", i) for i in range(nb)] + [("c", i) for i in range(nc)] + [("f", n) for n in rfree]
    order = list(b.permutation(items))
    rshape, rb, rc = [], [None] * nb, [None] * nc
    for pos, (k, i) in enumerate(order):
        if k == "b":
            rshape.append(lhs_shape[lb[i]]), rb.__setitem__(i, pos)
        elif k == "c":
            rshape.append(lhs_shape[lc[i]]), rc.__setitem__(i, pos)
        else:
            rshape.append(i)
    return (tuple(lc), tuple(rc)), (tuple(lb), tuple(rb)), tuple(rshape)


def apply_dot(b: Builder, x: Val) -> Val | None:
    if x.dtype != "float32" or not x.shape or size(x.shape) > 60:
        return None
    (lc, rc), (lb, rb), rshape = dot_dimension_numbers(b, x.shape)
    if size(rshape) > MAX_SIZE:
        return None
    y = b.fresh(rshape, "float32")
    k = size([x.shape[d] for d in lc])
    v = b.emit(f"lax.dot_general({x.name}, {y.name}, (({lc}, {rc}), ({lb}, {rb})))", bound=k * x.bound * y.bound)
    return b.rescale(v) if v else None


# --- program strategies ---------------------------------------------------------------------------
def _start(b: Builder, dtype="float32", min_rank=1):
    """The first run-time input: at least two elements, so the program's operations see more than one."""
    shape = b.shape(min_rank=min_rank)
    while size(shape) < 2:
        shape = b.shape(min_rank=min_rank)
    return b.fresh(shape, dtype, weight=False, view=True)


def _outputs(b: Builder, last):
    outs = [last]
    args = {a.name for a in b.args}
    extra = [v for v in b.pool if v is not last and v.name not in args]
    if extra and b.coin(0.4):
        outs.append(b.choice(extra))
    return outs


def chain(family, ops, dtype="float32", min_steps=2, max_steps=15, atol=1e-5):
    """A composition of `ops` (each f(builder, value) -> value or None) applied to earlier values."""
    def strategy(rng):
        b = Builder(rng, family)
        b.atol = atol
        b.allow_empty = b.coin(0.1)
        x = _start(b, dtype)
        b.pool.append(x)
        target = b.integer(min_steps, max_steps)
        last, tries = x, 0
        while len(b.lines) < target and tries < 4 * max_steps:
            tries += 1
            op = b.choice(ops)
            src = b.pick() if b.coin(0.3) else last
            v = op(b, src) if size(src.shape) else consume_empty(b, src)
            if v is not None:
                last = v
        return b.program(_outputs(b, last))
    return strategy


def consume_empty(b: Builder, x: Val) -> Val | None:
    """Operations on a zero-size value that give a non-empty result (or an elementwise op on it)."""
    ax = [i for i, n in enumerate(x.shape) if n == 0][0]
    kind = b.choice(["concat", "sum", "max", "unary"])
    if kind == "concat":
        y = b.fresh(x.shape[:ax] + (b.choice([1, 2, 3]),) + x.shape[ax + 1:], x.dtype)
        return b.emit(f"jnp.concatenate([{x.name}, {y.name}], axis={ax})", bound=y.bound, exact=y.exact)
    if kind == "sum" and x.dtype != "bool":
        return b.emit(f"jnp.sum({x.name}, axis={ax})", bound=1.0, exact=True)
    if kind == "max" and x.dtype != "bool":
        return b.emit(f"jnp.max({x.name}, axis={ax}, initial=-1)", bound=1.0, exact=True)
    return _unary_op(b, x) if x.dtype != "bool" else None


def _unary_op(b, x):
    return apply_unary(b, x) if x.dtype == "float32" else apply_int_unary(b, x)


def _binary_op(b, x):
    if x.dtype == "bool":
        return None
    if x.dtype == "int32":
        return apply_int_binary(b, x)
    return apply_binary(b, x, b.choice(list(BINARY)), exact_only=False)


def _exact_binary(b, x):
    if x.dtype != "float32":
        return None
    return apply_binary(b, x, b.choice(["add", "sub", "max", "min", "atan2", "rem"]), exact_only=True)


# integer arithmetic (int32 compared exactly)
def apply_int_unary(b: Builder, x: Val) -> Val | None:
    if x.dtype != "int32":
        return None
    op = b.choice(["neg", "abs", "sign", "not", "square", "to_float", "clamp"])
    if op == "square":
        if x.bound ** 2 > INT_LIMIT:
            return None
        return b.emit(f"lax.integer_pow({x.name}, 2)", bound=x.bound ** 2)
    if op == "not":
        return b.emit(f"lax.bitwise_not({x.name})", bound=x.bound + 1)
    if op == "to_float":
        return b.emit(f"{x.name}.astype(jnp.float32)", bound=x.bound, exact=True)
    if op == "clamp":
        return b.emit(f"lax.clamp(-5, {x.name}, 7)", bound=7)
    return b.emit(f"lax.{op}({x.name})", bound=x.bound)


def apply_int_binary(b: Builder, x: Val) -> Val | None:
    if x.dtype != "int32":
        return None
    op = b.choice(["add", "sub", "mul", "div", "rem", "max", "min", "and", "or", "xor"])
    y, how = binary_partner(b, x)
    ys = repr(y) if how == "scalar" else y.name
    yb = abs(y) if how == "scalar" else y.bound
    xs = x.name
    if how == "broadcast":
        xs, ys = f"jnp.broadcast_arrays({x.name}, {y.name})[0]", f"jnp.broadcast_arrays({x.name}, {y.name})[1]"
    if op in ("add", "sub"):
        return b.emit(f"lax.{op}({xs}, {ys})", bound=x.bound + yb) if x.bound + yb < INT_LIMIT else None
    if op == "mul":
        return b.emit(f"lax.mul({xs}, {ys})", bound=x.bound * yb) if x.bound * yb < INT_LIMIT else None
    if op in ("div", "rem"):   # C++ and XLA both truncate towards zero; never divide by zero
        return b.emit(f"lax.{op}({xs}, lax.abs({ys}) + 1)", bound=x.bound)
    if op in ("and", "or", "xor"):
        return b.emit(f"lax.bitwise_{op}({xs}, {ys})", bound=2 * max(x.bound, yb) + 1)
    return b.emit(f"lax.{op}({xs}, {ys})", bound=max(x.bound, yb))


def _int_start_chain(family, ops, max_steps=12):
    def strategy(rng):
        b = Builder(rng, family)
        x = _start(b, b.choice(["int32", "int32", "float32"]))
        if x.dtype == "float32":   # grid floats cast to int: exact values
            x = b.emit(f"lax.floor({x.name} * 4.0).astype(jnp.int32)", bound=8, exact=True)
        b.pool.append(x)
        target = b.integer(2, max_steps)
        last, tries = x, 0
        while len(b.lines) < target and tries < 4 * max_steps:
            tries += 1
            v = b.choice(ops)(b, b.pick() if b.coin(0.3) else last)
            if v is not None:
                last = v
        return b.program(_outputs(b, last))
    return strategy


def elementwise_programs():
    return chain("elementwise", [_unary_op, _unary_op, _binary_op, _binary_op, apply_compare_select,
                                 _exact_binary], atol=1e-5)


def int_programs():
    return _int_start_chain("int", [apply_int_unary, apply_int_binary, apply_int_binary, apply_compare_select,
                                    apply_movement, apply_reduction])


def movement_programs():
    return chain("movement", [apply_movement, apply_movement, apply_movement, _unary_op, _binary_op])


def reduce_programs():
    return chain("reduce", [apply_reduction, apply_reduction, _unary_op, apply_movement, _binary_op])


def mixed_programs():
    return chain("mixed", [_unary_op, _binary_op, apply_compare_select, apply_movement, apply_reduction,
                           apply_dot, _exact_binary], atol=1e-5)


# --- control flow ----------------------------------------------------------------------------------
# Bodies keep magnitudes bounded; data-dependent decisions (loop conditions, branch indices) read
# only exact values (an int input, a counter, a power-of-two scaling), so both sides take them alike.
_BODY = ("jnp.tanh({v})", "jnp.sin({v}) * 0.5", "{v} * 0.75 + 0.25", "jnp.maximum({v}, 0.0) - 0.5", "-{v}")
_STEP = ("jnp.tanh({c} + {r})", "{c} * 0.5 + {r} * 0.5", "jnp.maximum({c}, {r})", "jnp.sin({c}) * {r}")
_YS = ("{c} * {r}", "{c} - {r}", "jnp.tanh({c})")


def apply_control(b: Builder, x: Val) -> Val | None:
    """scan (forward/reverse, carry or stacked outputs), fori_loop, a while loop on an exact
    condition, cond/switch on an int input."""
    if x.dtype != "float32" or not x.shape:
        return None
    x = b.rescale(x, limit=2.0)
    kind = b.choice(["scan", "scan", "fori", "while", "cond", "switch"])
    if kind == "scan":
        step, ys = b.choice(_STEP).format(c="c", r="r"), b.choice(_YS).format(c="c", r="r")
        init = b.choice([f"jnp.zeros({x.name}.shape[1:], jnp.float32)", f"{x.name}[0] * 0.5"])
        which = b.choice([0, 1])
        return b.emit(f"lax.scan(lambda c, r: ({step}, {ys}), {init}, {x.name}, reverse={b.coin()})[{which}]",
                      bound=2.0 + x.bound * x.bound)
    if kind == "fori":
        body = b.choice(_BODY).format(v="c")
        return b.emit(f"lax.fori_loop(0, {b.integer(0, 5)}, lambda i, c: {body} + i.astype(jnp.float32) * 0.125, "
                      f"{x.name})", bound=max(x.bound, 1.0) + 1.0)
    if kind == "while":   # doubles an exact value until its largest entry passes a limit (or 6 rounds)
        if not x.exact:
            return None
        return b.emit(f"lax.while_loop(lambda s: (s[0] < 6) & (jnp.max(jnp.abs(s[1])) < {b.choice([1.0, 4.0, 16.0])}), "
                      f"lambda s: (s[0] + 1, s[1] * 2.0), (0, {x.name}))[1]", bound=64.0 * x.bound, exact=True)
    n = 2 if kind == "cond" else b.integer(2, 4)
    k = b.fresh((), "int32", kind=("i", -1, n + 1), weight=False, view=False)   # out of range: clamped
    branches = ", ".join(f"lambda v: {b.choice(_BODY).format(v='v')}" for _ in range(n))
    if kind == "cond":
        return b.emit(f"lax.cond({k.name} > 0, {branches}, {x.name})", bound=max(x.bound, 1.0))
    return b.emit(f"lax.switch({k.name}, [{branches}], {x.name})", bound=max(x.bound, 1.0))


# --- dot_general -----------------------------------------------------------------------------------
def dense_program(rng):
    """x @ W + b (the Gemm-with-bias fusion) and jnp.matmul with broadcast batch dimensions, at sizes
    up to a few hundred thousand multiply-adds: products beyond 8 rows and 4096 multiply-adds go to BLAS."""
    b = Builder(rng, "dot_general")
    m, k, n = b.choice([1, 2, 9, 17, 40]), b.choice([1, 3, 8, 33, 64]), b.choice([1, 4, 16, 31])
    form = b.choice(["dense", "dense", "matmul_bcast", "matmul_rank3_by_2"])
    if form == "dense":
        lead = tuple(b.choice([1, 2, 3]) for _ in range(b.integer(0, 1)))
        x = b.fresh(lead + (m, k), "float32", weight=False)
        wt = b.fresh((k, n) if b.coin(0.7) else (n, k), "float32", weight=True)
        wexpr = wt.name if wt.shape == (k, n) else f"{wt.name}.T"
        bias = b.fresh((n,) if b.coin(0.8) else (m, n), "float32", weight=b.coin(0.8), view=False)
        v = b.emit(f"{x.name} @ {wexpr} + {bias.name}", bound=k * 4.0 + 2, max_size=1 << 14)
    elif form == "matmul_bcast":
        nb = b.choice([2, 3])
        one_left = b.coin()
        x = b.fresh((1 if one_left else nb, m, k), "float32", weight=False)
        y = b.fresh((nb if one_left else 1, k, n), "float32")
        v = b.emit(f"jnp.matmul({x.name}, {y.name})", bound=k * 4.0, max_size=1 << 14)
    else:
        x = b.fresh((b.choice([1, 2, 3]), m, k), "float32", weight=False)
        y = b.fresh((k, n), "float32")
        v = b.emit(f"jnp.matmul({x.name}, {y.name})", bound=k * 4.0, max_size=1 << 14)
    v = b.rescale(v)
    if b.coin(0.4):
        v = apply_unary(b, v) or v
    # Sums of k >= 33 products: float32 accumulation order differs (blocked BLAS vs XLA's Eigen
    # contraction) and cancellation leaves errors ~ sqrt(k) ulp of the largest term.
    return b.program([v], atol=1e-4 if k >= 33 else None)


def dot_programs(rng):
    return dense_program(rng) if rng.random() < 0.5 else _dot_general_program(rng)


def _dot_general_program(rng):
    b = Builder(rng, "dot_general")
    x = b.fresh(b.shape(min_rank=1, max_rank=4, max_size=60), "float32", weight=False)
    v = apply_dot(b, x)
    if v is None:
        v = b.emit(f"lax.dot_general({x.name}, {x.name}, (({tuple(range(len(x.shape)))}, "
                   f"{tuple(range(len(x.shape)))}), ((), ())))", bound=size(x.shape) * 4.0)
    if b.coin(0.5):
        v = (apply_unary(b, v) if b.coin() else apply_binary(b, v, "add", False)) or v
    return b.program([v])


# --- convolution ----------------------------------------------------------------------------------
def conv_programs(rng):
    b = Builder(rng, "conv")
    nsp = b.choice([1, 2, 2, 2, 3])
    groups = b.choice([1, 1, 2, 3])
    cg = b.choice([1, 1, 2, 3])
    og = b.choice([1, 2])
    depthwise = b.coin(0.2)
    if depthwise:
        cg = 1
    big = nsp == 2 and b.coin(0.2)   # several im2col passes over the batch, products on BLAS
    if big:
        groups, cg, og, depthwise = b.choice([1, 1, 2]), b.choice([4, 8]), b.choice([4, 8]), False
    cin, cout = groups * cg, groups * og
    batch = b.choice([3, 4, 6]) if big else b.choice([1, 1, 2])
    spatial = [b.integer(10, 20) if big else b.integer(1, 7 if nsp < 3 else 4) for _ in range(nsp)]
    ksize = [b.integer(1, 3) for _ in range(nsp)]
    strides = tuple(b.choice([1, 1, 2, 3]) for _ in range(nsp))
    rhs_dil = tuple(b.choice([1, 1, 2]) for _ in range(nsp))
    lhs_dil = tuple(b.choice([1, 1, 1, 2]) for _ in range(nsp))
    pad_kind = b.choice(["SAME", "VALID", "explicit", "explicit"])
    if pad_kind == "explicit":
        pads = []
        for _ in range(nsp):
            if b.coin(0.15):   # crop; never mixed with a positive pad in one dimension (XLA CPU bug)
                pads.append((-b.integer(0, 1), -b.integer(0, 1)))
            else:
                pads.append((b.integer(0, 2), b.integer(0, 2)))
        padding = repr(tuple(pads))
    else:
        padding = repr(pad_kind)
    lhs_spec = tuple(b.permutation(range(nsp + 2)))
    rhs_spec = tuple(b.permutation(range(nsp + 2)))
    out_spec = tuple(b.permutation(range(nsp + 2)))
    # spec = (batch/out-feature axis, feature/in-feature axis, spatial axes...) positions
    lshape = [0] * (nsp + 2)
    lshape[lhs_spec[0]], lshape[lhs_spec[1]] = batch, cin
    kshape = [0] * (nsp + 2)
    kshape[rhs_spec[0]], kshape[rhs_spec[1]] = cout, cg
    for i in range(nsp):
        lshape[lhs_spec[2 + i]] = spatial[i]
        kshape[rhs_spec[2 + i]] = ksize[i]
    x = b.fresh(lshape, "float32", weight=False)
    k = b.fresh(kshape, "float32", weight=b.coin(0.7))
    dn = f"lax.ConvDimensionNumbers({lhs_spec}, {rhs_spec}, {out_spec})"
    v = b.emit(f"lax.conv_general_dilated({x.name}, {k.name}, {strides}, {padding}, lhs_dilation={lhs_dil}, "
               f"rhs_dilation={rhs_dil}, dimension_numbers={dn}, feature_group_count={groups})",
               bound=cg * size(ksize) * 4.0, max_size=1 << 16)
    if v is None:   # an invalid window (output would be empty): fall back to a plain 1x1 layout
        v = b.emit(f"lax.conv_general_dilated({x.name}, {k.name}, {(1,) * nsp}, 'SAME', "
                   f"dimension_numbers={dn}, feature_group_count={groups})", bound=cg * size(ksize) * 4.0,
                   max_size=1 << 16)
    if b.coin(0.4):   # what the converter fuses into a convolution's epilogue
        ch = out_spec[1]
        bias = b.fresh((cout,) + (1,) * (nsp + 1 - ch), weight=b.coin(0.7), view=False)
        v = b.emit(f"{v.name} + {bias.name}", bound=v.bound + 2.0) or v
        if b.coin(0.5):
            v = b.emit(f"jax.nn.relu6({v.name})", bound=min(v.bound, 6.0)) or v
        if b.coin(0.3):
            v = b.emit(f"{v.name} + {b.fresh(v.shape, weight=False).name}", bound=v.bound + 2.0) or v
    v = b.rescale(v)
    if b.coin(0.3):
        v = apply_unary(b, v) or v
    # Large convolutions sum up to 8 x 9 products per group: the im2col GEMM and XLA accumulate in
    # different orders (seen: 1.5e-5 on a value near 1 from terms up to 4), so 1e-4 for those.
    return b.program([v], atol=1e-4 if big else None)


# --- pooling ------------------------------------------------------------------------------------
def pool_programs(rng):
    b = Builder(rng, "pool")
    dtype = "float32" if b.coin(0.85) else "int32"
    x = b.fresh(b.shape(min_rank=1, max_rank=4, max_size=120), dtype, weight=False)
    r = len(x.shape)
    # windows mostly over the "spatial" middle axes, sometimes over any axis
    window = tuple(b.integer(1, min(3, n + 1)) if (0 < i < r - 1 or r <= 2 or b.coin(0.2)) else 1
                   for i, n in enumerate(x.shape))
    strides = tuple(b.choice([1, 1, 2, 3]) for _ in range(r))
    wdil = tuple(b.choice([1, 1, 1, 2]) for _ in range(r))
    bdil = tuple(b.choice([1, 1, 1, 1, 2]) for _ in range(r))
    pad_kind = b.choice(["SAME", "VALID", "explicit"])
    padding = repr(pad_kind) if pad_kind != "explicit" else repr(tuple((b.integer(0, 2), b.integer(0, 2))
                                                                      for _ in range(r)))
    # NumPy scalars of the operand's dtype: with the reducer's identity, JAX specialises to
    # reduce_window_{max,min,sum}; other inits stay a generic reduce_window
    big = "np.float32(-np.inf)" if dtype == "float32" else "np.int32(np.iinfo(np.int32).min)"
    small = "np.float32(np.inf)" if dtype == "float32" else "np.int32(np.iinfo(np.int32).max)"
    op = b.choice(["max", "min", "sum", "avg", "generic_add", "generic_mul", "generic_max"])
    init, fn = {"max": (big, "lax.max"), "min": (small, "lax.min"), "sum": ("0", "lax.add"),
                "avg": ("0", "lax.add"), "generic_add": ("1", "lax.add"), "generic_mul": ("1", "lax.mul"),
                "generic_max": ("0", "lax.max")}[op]
    src = x.name
    if op == "generic_mul" and dtype == "float32":
        src = f"(lax.tanh({x.name}) * 0.25 + 1.0)"
    elif op == "generic_mul":
        src = f"lax.clamp(-2, {x.name}, 2)"
    init_expr = init if init.startswith("np.") else f"np.{dtype}({init})"
    expr = (f"lax.reduce_window({src}, {init_expr}, {fn}, {window}, {strides}, {padding}, "
            f"base_dilation={bdil}, window_dilation={wdil})")
    nwin = size(window)
    v = b.emit(expr, bound=x.bound * nwin if op != "generic_mul" else 2.0 ** nwin,
               exact=dtype == "int32" or op in ("max", "min", "generic_max"))
    if v is None:
        v = b.emit(f"lax.reduce_window({src}, {init_expr}, {fn}, {window}, {(1,) * r}, 'SAME')",
                   bound=x.bound * nwin, exact=dtype == "int32")
    if v is not None and op == "avg" and dtype == "float32":
        v = b.emit(f"{v.name} / {float(nwin)!r}", bound=v.bound / nwin)
    return b.program([b.rescale(v) if v is not None else None])


# --- gather-style indexing ------------------------------------------------------------------------
def gather_programs(rng):
    b = Builder(rng, "gather")
    dtype = b.choice(["float32", "float32", "int32"])
    x = b.fresh(b.shape(min_rank=1, max_rank=3), dtype, weight=b.coin(0.2))
    if b.args[-1].weight:   # a weight table read at run-time indices (an embedding lookup)
        b.fresh = _runtime_fresh(b.fresh)
    r = len(x.shape)
    ax = b.integer(0, r - 1)
    n = x.shape[ax]
    ishape = b.shape(min_rank=1, max_rank=2, max_size=12)   # a scalar index is a dynamic_slice
    form = b.choice(["index", "index_axis", "two_axes", "take_clip", "take_fill", "along_axis", "vmap",
                     "const_index"])
    in_range = ("i", -n, n)
    if form == "index":
        i = b.fresh(ishape, "int32", kind=("i", -x.shape[0], x.shape[0]), view=False)
        v = b.emit(f"{x.name}[{i.name}]", bound=x.bound, exact=x.exact)
    elif form == "index_axis":
        i = b.fresh(ishape, "int32", kind=in_range, view=False)
        v = b.emit(f"{x.name}[{'(slice(None),) * ' + str(ax)} + ({i.name},)]", bound=x.bound, exact=x.exact)
    elif form == "two_axes" and r >= 2:
        i = b.fresh(ishape, "int32", kind=("i", -x.shape[0], x.shape[0]), view=False)
        j = b.fresh(ishape, "int32", kind=("i", -x.shape[1], x.shape[1]), view=False)
        v = b.emit(f"{x.name}[{i.name}, {j.name}]", bound=x.bound, exact=x.exact)
    elif form in ("take_clip", "take_fill"):
        i = b.fresh(ishape, "int32", kind=("i", -n - 3, n + 3), view=False)
        mode = form.split("_")[1]
        v = b.emit(f"jnp.take({x.name}, {i.name}, axis={ax}, mode={mode!r})", bound=x.bound, exact=x.exact)
    elif form == "along_axis":
        ishp = tuple(m if d != ax else b.integer(1, 4) for d, m in enumerate(x.shape))
        i = b.fresh(ishp, "int32", kind=in_range, view=False)
        v = b.emit(f"jnp.take_along_axis({x.name}, {i.name}, axis={ax})", bound=x.bound, exact=x.exact)
    elif form == "vmap" and r >= 2:
        i = b.fresh((x.shape[0],) + tuple(ishape[:1]), "int32", kind=("i", -x.shape[1], x.shape[1]), view=False)
        v = b.emit(f"jax.vmap(lambda row, k: row[k])({x.name}, {i.name})", bound=x.bound, exact=x.exact)
    elif not b.args[0].weight:
        idx = tuple(b.integer(-n, n - 1) for _ in range(b.integer(1, 4)))
        v = b.emit(f"jnp.take({x.name}, jnp.array({idx}), axis={ax})", bound=x.bound, exact=x.exact)
    else:
        v = None
    if v is None:
        i = b.fresh((b.integer(1, 3),), "int32", kind=("i", 0, x.shape[0]), weight=False, view=False)
        v = b.emit(f"{x.name}[{i.name}]", bound=x.bound, exact=x.exact)
    if b.coin(0.4):
        v = (_unary_op(b, v) if b.coin() else _binary_op(b, v)) or v
    return b.program([v])


def _runtime_fresh(fresh):
    def f(*a, **k):
        k["weight"] = False
        return fresh(*a, **k)
    return f
