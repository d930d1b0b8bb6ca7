"""`convert` and the `SofieModel` it returns."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from .lowering import Lowering
from .primitives import HANDLERS
from .sofie.emit_cpp import emit_header, write_weights
from .sofie.graph import Graph
from .sofie.tensor import c_identifier
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

    def __init__(self, graph: Graph, traced: Traced, progress: bool | None = None):
        self.graph = graph
        self.traced = traced
        self.name = graph.name
        self._compiled = None
        self._progress = progress

    # -- code -------------------------------------------------------------------
    def header(self) -> str:
        return emit_header(self.graph)

    def generate(self, directory=".", weights: str = "text", backend: str = "jaxpr2sofie") -> tuple:
        """Write `<Name>.hxx` and `<Name>.dat` into `directory`; returns both paths. `weights`:
        "text" (SOFIE's format) or "binary" (loads many times faster); the header reads either.
        `backend="sofie"` has ROOT's own SOFIE generate the header from the ONNX export (a ROOT
        with TMVA SOFIE needed); "auto" does so when SOFIE is there and parses every operator."""
        from . import sofie_backend
        from .sofie.weights import FORMATS
        if weights not in FORMATS:
            raise ValueError(f"weights={weights!r}: choose one of {', '.join(FORMATS)}")
        if backend not in sofie_backend.BACKENDS:
            raise ValueError(f"backend={backend!r}: choose one of {', '.join(sofie_backend.BACKENDS)}")
        if backend == "sofie" or (backend == "auto" and not sofie_backend.sofie_status()
                                  and sofie_backend.sofie_can_parse(self)):
            return sofie_backend.generate_with_sofie(self, Path(directory))
        d = Path(directory)
        if d.suffix.lower() in (".hxx", ".hpp", ".h", ".dat", ".cpp", ".cxx") or d.is_file():
            raise ValueError(f"generate() takes a directory, got {str(directory)!r}, which looks like a file: the files "
                             f"are named after the model ({self.name}.hxx, {self.name}.dat), so pass the folder "
                             f"(e.g. {str(d.parent) + '/' if str(d.parent) != '.' else '.'!r}) and choose the "
                             "file name with convert(..., name=...)")
        d.mkdir(parents=True, exist_ok=True)
        hxx, dat = d / f"{self.name}.hxx", d / f"{self.name}.dat"
        hxx.write_text(self.header())
        write_weights(self.graph, dat, weights)
        return hxx, dat

    def compile(self, cxx=None, blas=None, flags=None):
        """Build the generated C++ for real and load it: returns a callable `compiled(*inputs)`."""
        from . import sanitize
        from .build import CompiledModel, compile_library
        from .progress import Progress
        progress = Progress(self._progress)
        progress.stage(f"compiling {self.name}.hxx")
        if sanitize.enabled():   # JAXPR2SOFIE_SANITIZE=1: a test mode under ASan and UBSan
            self._compiled = sanitize.SanitizedModel(self.graph, sanitize.build_runner(self.graph, cxx=cxx, blas=blas))
        else:
            self._compiled = CompiledModel(self.graph, compile_library(self.graph, cxx=cxx, blas=blas, flags=flags))
        progress.done(f"compiled {self.name}")
        return self._compiled

    def to_onnx(self, path=None, opset: int | None = None):
        """The model as standard ONNX (for ROOT's SOFIE parser, onnxruntime, Netron): returns the
        onnx.ModelProto and writes it to `path` when given. Needs `pip install onnx`, no compiler.

        >>> import jax.numpy as jnp, numpy as np, jaxpr2sofie as j2s
        >>> m = j2s.convert(lambda p, x: jnp.tanh(x @ p), np.ones((3, 2), np.float32), np.ones((1, 3), np.float32))
        >>> sorted(n.op_type for n in m.to_onnx().graph.node)
        ['MatMul', 'Tanh']
        """
        from .sofie.emit_onnx import DEFAULT_OPSET, to_onnx
        model = to_onnx(self.graph, DEFAULT_OPSET if opset is None else opset, doc=f"{self.name}, converted by jaxpr2sofie")
        if path is not None:
            import onnx
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            onnx.save(model, str(path))
        return model

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


def convert(fn, params, example_input, name: str | None = None, disable_passes=(),
            progress: bool | None = None) -> SofieModel:
    """Convert a JAX function to a SOFIE-style operator graph.

    `fn(params, x)` may be jitted or not; with `params=None` a function of one argument is called
    as `fn(x)` and one of two as `fn(None, x)`. `params` is any pytree of arrays (weights are named
    by their key path); `example_input` an array or a pytree of arrays that fixes the input shapes
    and dtypes (float64 is taken as float32, with a warning). `name` names the C++ namespace
    `TMVA_SOFIE_<name>` and the files. `progress` shows the stages on a terminal (None: when stderr
    is a terminal and JAXPR2SOFIE_QUIET is not set).

    >>> import jax.numpy as jnp, numpy as np, jaxpr2sofie as j2s
    >>> params = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    >>> m = j2s.convert(lambda p, x: jnp.tanh(x @ p["w"] + p["b"]), params, np.ones((1, 3), np.float32), name="Tiny")
    >>> float(m.validate().max_abs) < 1e-5
    True
    """
    from .progress import Progress
    fallback = getattr(fn, "__name__", None)
    label = model_name(name, "Model" if fallback in (None, "<lambda>") else fallback)
    bar = Progress(progress)
    bar.stage("tracing")
    traced = trace(fn, params, example_input)
    g = Graph(label)
    ctx = Lowering(g, HANDLERS)
    cj = traced.closed_jaxpr
    args = [Const(v, lab) for v, lab in zip(traced.param_values, traced.param_labels)]
    args += [g.add_input(lab, shape, dtype) for lab, (shape, dtype) in zip(traced.input_labels, traced.input_avals)]
    n = len(cj.jaxpr.eqns)
    outs = ctx.run(cj.jaxpr, cj.consts, args, on_eqn=lambda i: bar.count(f"lowering {n} equations", i, n))
    ctx.raise_problems()
    g.outputs = [ctx.tensor(o) for o in outs]
    bar.stage("graph passes")
    run_passes(g, disable=disable_passes)
    bar.done(f"converted {g.name}: {len(g.ops)} operators")
    return SofieModel(g, traced, progress)


# C++ keywords (and alternative tokens) a model name may not be: it becomes part of identifiers
# and file names, and `TMVA_SOFIE_<name>` must stay readable.
CPP_KEYWORDS = frozenset("""alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t
char16_t char32_t class compl concept const consteval constexpr constinit const_cast continue co_await co_return
co_yield decltype default delete do double dynamic_cast else enum explicit export extern false float for friend
goto if inline int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected
public register reinterpret_cast requires return short signed sizeof static static_assert static_cast struct
switch template this thread_local throw true try typedef typeid typename union unsigned using virtual void
volatile wchar_t while xor xor_eq""".split())


def model_name(name, fallback: str) -> str:
    """The user's `name` (checked), or a valid name derived from `fallback` (a class, file or
    function name), made an identifier quietly since the user did not choose it."""
    if name is not None:
        check_model_name(name)
        return name
    label = c_identifier(str(fallback or "Model"))
    return label + "_model" if label in CPP_KEYWORDS else label


def check_model_name(name) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"name={name!r} is not a C++ identifier: the model name becomes the namespace "
                         "TMVA_SOFIE_<name> and the file names, so use letters, digits and underscores, "
                         "starting with a letter (e.g. name='JetTagger')")
    if name in CPP_KEYWORDS:
        raise ValueError(f"name={name!r} is a C++ keyword: choose another model name (e.g. {name.capitalize() + 'Net'!r})")
