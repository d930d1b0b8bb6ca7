"""`convert` and the `SofieModel` it returns."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from .lowering import Lowering
from .primitives import HANDLERS
from .sofie.emit_cpp import emit_header, write_weights
from .sofie.graph import Graph
from .sofie.passes import run_passes
from .trace import Traced, trace
from .values import Const


@dataclass
class Validation:
    max_abs: float        # largest |C++ - JAX| over all outputs
    max_rel: float        # max_abs of each output divided by that output's largest |JAX| value
    per_output: list      # (max_abs, max_rel) per flat output

    def __str__(self):
        return f"max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}"


class SofieModel:
    """A converted model: an operator graph plus the traced function it must agree with."""

    def __init__(self, graph: Graph, traced: Traced):
        self.graph = graph
        self.traced = traced
        self.name = graph.name
        self._compiled = None

    # -- code -------------------------------------------------------------------
    def header(self) -> str:
        return emit_header(self.graph)

    def generate(self, directory=".") -> tuple:
        """Write `<Name>.hxx` and `<Name>.dat` into `directory`; returns both paths."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        hxx, dat = d / f"{self.name}.hxx", d / f"{self.name}.dat"
        hxx.write_text(self.header())
        write_weights(self.graph, dat)
        return hxx, dat

    def compile(self, cxx=None, blas=None, flags=None):
        """Build the generated C++ for real and load it: returns a callable `compiled(*inputs)`."""
        from .build import CompiledModel, compile_library
        self._compiled = CompiledModel(self.graph, compile_library(self.graph, cxx=cxx, blas=blas, flags=flags))
        return self._compiled

    # -- checking -----------------------------------------------------------------
    def reference(self, *inputs):
        """The original function under JAX, on flat inputs: one array or a tuple."""
        outs = self.traced.reference(*inputs)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def flat_inputs(self, x) -> list:
        """Flatten a pytree shaped like the example input."""
        return [np.asarray(v) for v in jax.tree_util.tree_leaves(x)]

    def validate(self, x=None) -> Validation:
        """Run the compiled C++ and JAX on the same input (a pytree like the example input;
        random normal values when None) and report the largest differences."""
        if x is None:
            rng = np.random.default_rng(0)
            flat = [rng.standard_normal(s).astype(d) if np.dtype(d).kind == "f" else np.zeros(s, d)
                    for s, d in self.traced.input_avals]
        else:
            flat = self.flat_inputs(x)
        compiled = self._compiled or self.compile()
        got = compiled(*flat)
        want = self.traced.reference(*flat)
        got = list(got) if isinstance(got, tuple) else [got]
        per = []
        for g, w in zip(got, want):
            err = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)), initial=0.0))
            scale = float(np.max(np.abs(w.astype(np.float64)), initial=0.0))
            per.append((err, err / scale if scale > 0 else err))
        return Validation(max(p[0] for p in per), max(p[1] for p in per), per)

    # -- reporting ------------------------------------------------------------------
    def summary(self) -> str:
        g = self.graph
        rows = [("#", "operator", "output", "shape", "dtype", "FLOPs", "details")]

        def add_rows(ops, depth):   # a loop body or a branch is listed under its operator, indented
            for op in ops:
                out = g.tensors[op.outputs[0]]
                rows.append((str(len(rows) - 1), "  " * depth + op.op_type, out.name, str(tuple(out.shape)), out.dtype,
                             str(op.flops(g)), op.describe()))
                for sub in op.subgraphs():
                    add_rows(sub.ops, depth + 1)
        add_rows(g.ops, 0)
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = [f"Model {self.name}"]
        for t in (g.tensors[n] for n in g.inputs):
            lines.append(f"  input  {t.name}: {tuple(t.shape)} {t.dtype}")
        for t in (g.tensors[n] for n in g.outputs):
            lines.append(f"  output {t.name}: {tuple(t.shape)} {t.dtype}")
        lines.append("")
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        weights = g.weights()
        lines.append("")
        lines.append(f"weights: {len(weights)} tensors, {self.parameter_count()} values; "
                     f"FLOPs per inference: {self.flops()}")
        return "\n".join(lines)

    def parameter_count(self) -> int:
        return sum(t.size for t in self.graph.weights())

    def flops(self) -> int:
        return sum(op.flops(self.graph) for op in self.graph.ops)

    def __repr__(self):
        return f"<SofieModel {self.name}: {len(self.graph.ops)} operators, {self.parameter_count()} weights>"


def convert(fn, params, example_input, name: str | None = None, disable_passes=()) -> SofieModel:
    """Convert a JAX function to a SOFIE-style operator graph.

    `fn(params, x)` (or `fn(x)` when `params` is None) may be jitted or not; `params` is any
    pytree of arrays (weights are named by their key path); `example_input` an array or a pytree
    of arrays that fixes the input shapes and dtypes.

    >>> import jax.numpy as jnp, numpy as np, jaxpr2sofie as j2s
    >>> params = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    >>> m = j2s.convert(lambda p, x: jnp.tanh(x @ p["w"] + p["b"]), params, np.ones((1, 3), np.float32), name="Tiny")
    >>> float(m.validate().max_abs) < 1e-5
    True
    """
    traced = trace(fn, params, example_input)
    label = name or getattr(fn, "__name__", None) or "Model"
    if label == "<lambda>":
        label = "Model"
    g = Graph(label)
    ctx = Lowering(g, HANDLERS)
    cj = traced.closed_jaxpr
    args = [Const(v, lab) for v, lab in zip(traced.param_values, traced.param_labels)]
    args += [g.add_input(lab, shape, dtype) for lab, (shape, dtype) in zip(traced.input_labels, traced.input_avals)]
    outs = ctx.run(cj.jaxpr, cj.consts, args)
    ctx.raise_problems()
    g.outputs = [ctx.tensor(o) for o in outs]
    run_passes(g, disable=disable_passes)
    return SofieModel(g, traced)
