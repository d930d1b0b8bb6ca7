"""The fuzz families, what each must contain, and drawing distinct programs from a fixed seed.

A family is a generator (numpy Generator -> Program) and the primitives it exists to test. Every
program compared must apply one of those primitives to an operand of more than one element; a draw
that does not (or that JAX rejects outright) is redrawn and counted, and a family that needs more
than MAX_REDRAWN redraws per program kept fails the run: a typo in a generator cannot turn a family
into copies of one trivial program.
"""
from __future__ import annotations

from collections import Counter

import jax
import numpy as np

import fuzz_programs as fp
from fuzz_views import _loop, slice_programs, sort_programs

_UNARY = {"neg", "abs", "tanh", "logistic", "sin", "cos", "atan", "erf", "erfc", "cbrt", "asinh", "integer_pow",
          "log", "log1p", "sqrt", "rsqrt", "acosh", "asin", "acos", "atanh", "tan", "exp", "exp2", "expm1", "sinh",
          "cosh", "sign", "floor", "ceil", "round", "is_finite", "square", "not", "max", "min", "clamp"}
_BINARY = {"add", "sub", "mul", "div", "pow", "atan2", "rem", "eq", "ne", "lt", "le", "gt", "ge", "select_n",
           "and", "or", "xor"}
_MOVEMENT = {"transpose", "reshape", "broadcast_in_dim", "squeeze", "expand_dims", "slice", "rev", "pad",
             "concatenate", "dynamic_slice", "split"}
_REDUCE = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin", "cumsum", "cumprod",
           "cummax", "cummin", "cumlogsumexp"}

# family -> (generator, primitives one of which it must apply to more than one element)
FAMILIES = {
    "elementwise": (fp.chain("elementwise", [fp._unary_op, fp._unary_op, fp._binary_op, fp._binary_op,
                                             fp.apply_compare_select, fp._exact_binary]), _UNARY | _BINARY),
    "int": (fp._int_start_chain("int", [fp.apply_int_unary, fp.apply_int_binary, fp.apply_int_binary,
                                        fp.apply_compare_select, fp.apply_movement, fp.apply_reduction]),
            _UNARY | _BINARY | _REDUCE),   # on int32 operands: see _applies
    "movement": (fp.chain("movement", [fp.apply_movement, fp.apply_movement, fp.apply_movement, fp._unary_op,
                                       fp._binary_op]), _MOVEMENT),
    "reduce": (fp.chain("reduce", [fp.apply_reduction, fp.apply_reduction, fp._unary_op, fp.apply_movement,
                                   fp._binary_op]), _REDUCE),
    "mixed": (fp.chain("mixed", [fp._unary_op, fp._binary_op, fp.apply_compare_select, fp.apply_movement,
                                 fp.apply_reduction, fp.apply_dot, fp._exact_binary]),
              _UNARY | _BINARY | _MOVEMENT | _REDUCE | {"dot_general"}),
    "dot_general": (fp.dot_programs, {"dot_general"}),
    "conv": (fp.conv_programs, {"conv_general_dilated"}),
    "pool": (fp.pool_programs, {"reduce_window_max", "reduce_window_min", "reduce_window_sum", "reduce_window"}),
    "gather": (fp.gather_programs, {"gather", "dynamic_slice"}),
    "control": (fp.chain("control", [fp.apply_control, fp.apply_control, _loop, fp._unary_op, fp._binary_op,
                                     fp.apply_movement], max_steps=10), {"scan", "while", "cond"}),
    "slices": (slice_programs, {"dynamic_slice", "dynamic_update_slice", "scatter", "scatter-add", "scatter_mul",
                                "scatter-mul", "scatter_max", "scatter-max", "scatter_min", "scatter-min",
                                "scatter_add"}),
    "sort": (sort_programs, {"sort", "top_k", "argmax", "argmin"}),
}
MAX_REDRAWN = 1.0   # redrawn draws per program kept, at most (measured: well under 0.5 for every family)


def primitives(prog) -> list:
    """(primitive name, largest operand size, operand dtypes) of every equation, sub-jaxprs included."""
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in prog.args]
    w = {a.name: s for a, s in zip(prog.args, specs) if a.weight}
    xs = [s for a, s in zip(prog.args, specs) if not a.weight]
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            avals = [v.aval for v in eqn.invars if hasattr(v.aval, "shape")]
            found.append((eqn.primitive.name, max((fp.size(a.shape) for a in avals), default=0),
                          {np.dtype(a.dtype).name for a in avals}))
            for p in eqn.params.values():
                for sub in p if isinstance(p, (tuple, list)) else (p,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(prog.function())(w, *xs).jaxpr)
    return found


def _applies(family, prims) -> set:
    """The family's primitives applied to more than one element (int32 operands for `int`)."""
    wanted = FAMILIES[family][1]
    return {name for name, n, dtypes in prims
            if name in wanted and n > 1 and (family != "int" or "int32" in dtypes)}


class Drawer:
    """Distinct programs of one family from a fixed seed. `stats` counts draws kept and redrawn;
    `covered` the family primitives the kept programs apply."""

    def __init__(self, family, seed, stream=0):
        self.family, self.seed, self.stream = family, seed, stream
        self.k = 0
        self.seen = set()
        self.stats = Counter()
        self.covered = Counter()

    def key(self, k):
        # stream tells the run-time-batch test's programs from the static test's
        return (self.seed, list(FAMILIES).index(self.family), self.stream, k)

    def batch(self, n):
        progs = []
        while len(progs) < n:
            key = self.key(self.k)
            self.k += 1
            assert self.stats["redrawn"] <= MAX_REDRAWN * max(len(self.seen), 8), \
                f"fuzz family {self.family}: {self.stats['redrawn']} draws redrawn for {len(self.seen)} kept " \
                f"({dict(self.stats)}): the generator has stopped making {sorted(FAMILIES[self.family][1])}"
            try:
                prog = draw(self.family, key)
            except fp.NoProgram:
                self.stats["redrawn"] += 1
                self.stats["redrawn: JAX rejected every step"] += 1
                continue
            ident = (prog.source, tuple((a.shape, a.dtype, a.kind, a.weight) for a in prog.args))
            if ident in self.seen:
                self.stats["redrawn"] += 1
                self.stats["redrawn: a duplicate"] += 1
                continue
            applied = _applies(self.family, primitives(prog))
            if not applied:
                self.stats["redrawn"] += 1
                self.stats["redrawn: no family primitive on >1 element"] += 1
                continue
            self.seen.add(ident)
            self.covered.update(applied)
            prog.applied = applied
            progs.append(prog)
        return progs


def draw(family, key):
    """The program of `family` drawn from `key` (what a failure report prints to reproduce it)."""
    prog = FAMILIES[family][0](np.random.default_rng(key))
    prog.key = key
    return prog
