"""`convert` and the `SofieModel` it returns."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from .lowering import Lowering
from .primitives import HANDLERS
from .cpp.emit import check_emittable, emit_header
from .cpp.prepare import PREPARATION, prepare
from .cpp.weights import write_weights
from .ir import dims
from .ir.graph import Graph
from .ir.tensor import c_identifier
from .outputs import Structured, keeps_structure, name_outputs
from .passes import run_passes
from .trace import Traced, trace
from .values import Const


@dataclass
class Validation:
    max_abs: float        # largest |C++ - JAX| over all outputs
    max_rel: float        # max_abs of each output divided by that output's largest |JAX| value
    per_output: list      # (max_abs, max_rel) per flat output
    batches: tuple = ()   # the batch sizes checked, for a model whose batch is chosen at run time
    reference: str = "jax.jit"   # what the C++ was compared with

    def __str__(self):
        at = f" over batches {', '.join(map(str, self.batches))}" if self.batches else ""
        against = "" if self.reference == "jax.jit" else f", against {self.reference}"
        return f"max abs error {self.max_abs:.3g}, max rel error {self.max_rel:.3g}{at}{against}"


def _errors(got, want) -> list:
    """(max abs error, max abs error / the output's largest |value|) per output."""
    per = []
    for g, w in zip(got, want):
        err = float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)), initial=0.0))
        scale = float(np.max(np.abs(w.astype(np.float64)), initial=0.0))
        per.append((err, err / scale if scale > 0 else err))
    return per


def _threads_line(g) -> str:
    from .ir.rows import split_refusal
    why = split_refusal(g)
    if not why:
        return "threads: rows are independent, Session(file, max_batch, n_threads) splits a batch over n_threads"
    return f"threads: the Session runs on one thread whatever n_threads is asked for: {why}"


class SofieModel:
    """A converted model: an operator graph plus the traced function it must agree with."""

    def __init__(self, graph: Graph, traced: Traced, progress: bool | None = None):
        self.graph = graph
        self.traced = traced
        self.name = graph.name
        self._compiled = None
        self._compiled_written = None
        self._progress = progress
        # WrittenWeights of the weight files generate() wrote (the last one per path) and of the last
        # compile(), for summary()
        self.written = []
        self.sofie_route = None   # (route, why) of the last to_rmodel(): sofie_backend.to_rmodel

    # -- code -------------------------------------------------------------------
    def header(self) -> str:
        return emit_header(self.graph)

    def generate(self, directory=".", weights: str = "text", backend: str = "jaxpr2sofie", session: bool = True,
                 route: str = "auto") -> tuple:
        """Write `<Name>.hxx` and `<Name>.dat` into `directory`; returns both paths. `weights`:
        "text" (SOFIE's format) or "binary" (loads many times faster); the header reads either.
        `backend="sofie"` has real SOFIE write its own header (`namespace SOFIE_<Name>`) through
        `to_rmodel()`: the `sofie` package, else ROOT's TMVA SOFIE; its `weights` are "text",
        "safetensors" or "none", and `session=False` (with weights="none") is SOFIE's kNoSession.
        "auto" uses SOFIE when it is installed and parses every operator, else our own emitter.
        `route` is `to_rmodel()`'s. Beside SOFIE's header goes `<Name>.io.json`, its inputs and outputs
        (what jaxpr2sofie.root reads: SOFIE's header has no signature line of ours)."""
        from . import sofie_backend
        from .cpp.weights import FORMATS
        if backend not in sofie_backend.BACKENDS:
            raise ValueError(f"backend={backend!r}: choose one of {', '.join(sofie_backend.BACKENDS)}")
        if backend == "sofie" or (backend == "auto" and weights in sofie_backend.SOFIE_WEIGHTS
                                  and not sofie_backend.sofie_status() and sofie_backend.sofie_can_parse(self)):
            import json
            from .cpp.emit import io_signature
            from .sofie_header import SIDE_FILE
            hxx, dat = sofie_backend.generate_with_sofie(self, Path(directory), weights, session, route)
            hxx.with_suffix(SIDE_FILE).write_text(json.dumps(io_signature(self.graph)) + "\n")
            return hxx, dat
        if weights not in FORMATS:
            raise ValueError(f"weights={weights!r}: choose one of {', '.join(FORMATS)}")
        if not session:
            raise ValueError("session=False is an option of SOFIE's own header: use backend='sofie'")
        d = Path(directory)
        if d.suffix.lower() in (".hxx", ".hpp", ".h", ".dat", ".cpp", ".cxx") or d.is_file():
            raise ValueError(f"generate() takes a directory, got {str(directory)!r}, which looks like a file: the files "
                             f"are named after the model ({self.name}.hxx, {self.name}.dat), so pass the folder "
                             f"(e.g. {str(d.parent) + '/' if str(d.parent) != '.' else '.'!r}) and choose the "
                             "file name with convert(..., name=...)")
        d.mkdir(parents=True, exist_ok=True)
        hxx, dat = d / f"{self.name}.hxx", d / f"{self.name}.dat"
        hxx.write_text(self.header())
        self._write_weights(dat, weights)
        return hxx, dat

    def _write_weights(self, path, fmt: str):
        """Write a weight file, showing its progress (a large model's text takes seconds) and
        keeping its size and time for summary()."""
        from .progress import Progress
        bar = Progress(self._progress)
        bar.stage(f"writing {Path(path).name} ({fmt})")
        written = write_weights(self.graph, path, fmt, progress=lambda i, n: bar.count(f"writing {fmt} weights", i, n))
        bar.done(f"wrote {written.path.name} ({written.fmt}, {written.size()})")
        self.written = [w for w in self.written if w.path != written.path] + [written]
        return written

    def compile(self, cxx=None, blas=None, flags=None, n_threads: int = 1):
        """Build the generated C++ for real and load it: returns a callable `compiled(*inputs)`.

        `n_threads` > 1 has the Session split a large batch over that many threads, when the model
        was converted with batch="dynamic" and its rows are independent (`summary()` says whether);
        otherwise it runs on the calling thread. Example::

            m = j2s.convert(fn, params, x, batch="dynamic")
            c = m.compile(n_threads=2)
            y = c(x_big)            # rows split over 2 threads
        """
        from .cpp import sanitize
        from .cpp.build import CompiledModel, compile_library
        from .progress import Progress
        progress = Progress(self._progress)
        progress.stage(f"compiling {self.name}.hxx")
        if sanitize.enabled():   # JAXPR2SOFIE_SANITIZE=1: a test mode under ASan and UBSan
            self._compiled = sanitize.SanitizedModel(self.graph, sanitize.build_runner(self.graph, cxx=cxx, blas=blas))
        else:
            self._compiled = CompiledModel(self.graph, compile_library(self.graph, cxx=cxx, blas=blas, flags=flags),
                                           n_threads=n_threads)
        if self._compiled.written:   # the private binary weight file the compiled Session loaded
            self.written = [w for w in self.written if w is not self._compiled_written] + [self._compiled.written]
            self._compiled_written = self._compiled.written
        progress.done(f"compiled {self.name}")
        if keeps_structure(self.traced.output_tree):
            return Structured(self._compiled, self.traced.output_tree)
        return self._compiled

    def to_rmodel(self, route: str = "auto"):
        """Real SOFIE's own model of this one, a `sofie.RModel` (pip install 'jaxpr2sofie[sofie]'):
        `rm.generate()`, `rm.output_generated("Net.hxx")`. `route="operators"` builds it operator by
        operator through SOFIE's bound `ROperator_*` classes (every operator it cannot take is listed
        at once); `route="onnx"` has SOFIE's ONNX parser read the project's ONNX export; "auto" takes
        operators when every operator has a rule there, else onnx. `summary()` then names the route."""
        from . import sofie_backend
        return sofie_backend.to_rmodel(self, route)

    def compile_sofie(self, cxx=None, blas=None, flags=None, sanitize: bool = False, route: str = "auto"):
        """SOFIE's own header for this model, compiled and loaded: called like `compile()`'s result
        (the test oracle and benchmark peer). `sanitize=True` builds it under ASan and UBSan;
        `route` is `to_rmodel()`'s."""
        from .sofie_oracle import compile_sofie
        return compile_sofie(self, cxx=cxx, blas=blas, flags=flags, sanitize=sanitize, route=route)

    def to_onnx(self, path=None, opset: int | None = None, target: str = "onnx"):
        """The model as standard ONNX (for ROOT's SOFIE parser, onnxruntime, Netron): returns the
        onnx.ModelProto and writes it to `path` when given. Needs `pip install onnx`, no compiler.
        `target="sofie"` is still standard ONNX, in the forms SOFIE's parser reads correctly
        (`jaxpr2sofie.onnx.SOFIE_TRAPS`): what `to_rmodel()` and `generate(backend="sofie")` read.

        >>> import jax.numpy as jnp, numpy as np, jaxpr2sofie as j2s
        >>> m = j2s.convert(lambda p, x: jnp.tanh(x @ p), np.ones((3, 2), np.float32), np.ones((1, 3), np.float32))
        >>> sorted(n.op_type for n in m.to_onnx().graph.node)
        ['MatMul', 'Tanh']
        """
        from .onnx import DEFAULT_OPSET, to_onnx
        model = to_onnx(self.graph, DEFAULT_OPSET if opset is None else opset, doc=f"{self.name}, converted by jaxpr2sofie",
                        target=target)
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
        random normal values when None) and report the largest differences. With a batch chosen at
        run time and no `x`, batches 1, 7 and max_batch are each checked."""
        if x is None:
            rng = np.random.default_rng(0)
            batches = sorted({1, 7, self.graph.max_batch}) if self.graph.dynamic else [None]
            results = []
            for n in batches:
                flat = [rng.standard_normal(dims.evaluate_shape(s, n or 1)).astype(d) if np.dtype(d).kind == "f"
                        else np.zeros(dims.evaluate_shape(s, n or 1), d) for s, d in self.traced.input_avals]
                results.append(self._compare(flat))
            worst = max(results, key=lambda r: r.max_rel)
            return Validation(worst.max_abs, worst.max_rel, worst.per_output,
                              tuple(batches) if self.graph.dynamic else (), worst.reference)
        return self._compare(self.flat_inputs(x))

    def _compare(self, flat) -> Validation:
        compiled = self._compiled or self.compile()
        got = jax.tree_util.tree_leaves(compiled(*flat))
        per = _errors(got, self.traced.reference(*flat))
        reference = "jax.jit"
        if max(p[1] for p in per) > 1e-4:
            # XLA's whole-program rewrites are wrong on a few programs (see Traced.reference_op_by_op):
            # where jit and op-by-op JAX disagree, op-by-op is what the program means
            by_op = _errors(got, self.traced.reference_op_by_op(*flat))
            if max(p[1] for p in by_op) < max(p[1] for p in per):
                per, reference = by_op, "JAX op by op (jax.jit differs: an XLA rewrite, see the README)"
        return Validation(max(p[0] for p in per), max(p[1] for p in per), per, reference=reference)

    # -- reporting ------------------------------------------------------------------
    def summary(self) -> str:
        g = self.graph
        rows = [("#", "operator", "output", "shape", "dtype", "FLOPs", "details")]

        def add_rows(ops, depth):   # a loop body or a branch is listed under its operator, indented
            for op in ops:
                out = g.tensors[op.outputs[0]]
                rows.append((str(len(rows) - 1), "  " * depth + op.op_type, out.name, dims.show_shape(out.shape),
                             out.dtype, dims.show(op.flops(g)), dims.show_text(op.describe())))
                for sub in op.subgraphs():
                    add_rows(sub.ops, depth + 1)
        add_rows(g.ops, 0)
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = [f"Model {self.name}"]
        if g.dynamic:
            lines.append(f"  batch N chosen at run time: 1 <= N <= max_batch (Session default {g.max_batch})")
        for t in (g.tensors[n] for n in g.inputs):
            lines.append(f"  input  {t.name}: {dims.show_shape(t.shape)} {t.dtype}")
        for t in (g.tensors[n] for n in g.outputs):
            lines.append(f"  output {t.name}: {dims.show_shape(t.shape)} {t.dtype}")
        if g.dynamic:
            lines.append("  " + _threads_line(g))
        lines.append("")
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        weights = g.weights()
        lines.append("")
        flops = self.flops()
        lines.append(f"weights: {len(weights)} tensors, {self.parameter_count()} values; "
                     f"FLOPs per inference: {dims.show(flops)}" + _per_event(flops, "FLOPs"))
        lines.append(self.memory_line())
        for w in self.written:
            lines.append(f"weight file {w}")
        if self.sofie_route:
            lines.append(f"SOFIE's RModel: route {self.sofie_route[0]!r} ({self.sofie_route[1]})")
        return "\n".join(lines)

    def scratch_bytes(self, batch: int | None = None) -> int:
        """Bytes of the one arena holding every intermediate (for `batch`, default max_batch)."""
        g = self.graph
        from .cpp.memory import arena
        return arena(g, batch or g.max_batch or 1)[1]

    def memory_line(self) -> str:
        g = self.graph
        if not g.dynamic:
            return f"intermediates: one arena of {self.scratch_bytes()} bytes"
        top = self.scratch_bytes(g.max_batch)
        a, b = self.scratch_bytes(1), self.scratch_bytes(2)
        fixed = f" + {2 * a - b}" if 2 * a - b else ""
        formula = f" = {b - a}*N{fixed} bytes" if self.scratch_bytes(3) == 3 * (b - a) + 2 * a - b else ""
        return (f"intermediates: one arena of {top} bytes at max_batch={g.max_batch}{formula} "
                "(64-byte aligned buffers)")

    def parameter_count(self) -> int:
        return sum(t.size for t in self.graph.weights())

    def flops(self) -> int:
        return sum(op.flops(self.graph) for op in self.graph.ops)

    def __repr__(self):
        return f"<SofieModel {self.name}: {len(self.graph.ops)} operators, {self.parameter_count()} weights>"


def convert(fn, params, example_input, name: str | None = None, disable_passes=(),
            progress: bool | None = None, batch: str | None = None, max_batch: int | None = None,
            blas: str = "auto", output_names=None) -> SofieModel:
    """Convert a JAX function to a SOFIE-style operator graph.

    `fn(params, x)` may be jitted or not; with `params=None` a function of one argument is called
    as `fn(x)` and one of two as `fn(None, x)`. `params` is any pytree of arrays (weights are named
    by their key path); `example_input` an array or a pytree of arrays that fixes the input shapes
    and dtypes (float64 is taken as float32, with a warning); it may hold `jax.ShapeDtypeStruct`s,
    whose shapes may use `jax.export.symbolic_shape` for a batch chosen at run time.
    `batch="dynamic"` makes the leading dimension of every input that run-time batch: the C++ then
    takes `Session(weight_file, max_batch)` and `infer(batch, ...)`, with `max_batch` defaulting to
    `max_batch=` or the example's batch. `name` names the C++ namespace
    `TMVA_SOFIE_<name>` and the files. `progress` shows the stages on a terminal (None: when stderr
    is a terminal and JAXPR2SOFIE_QUIET is not set). Weight matrices are multiplied by the header's
    own kernels; `blas="auto"` (default) calls BLAS for large products of two activations, where
    it wins, and `blas="none"` never does, so the header needs no BLAS to link at all.
    `disable_passes` names graph passes to skip (`jaxpr2sofie.passes.PASSES`: fusions, layout; and
    the C++ backend's `jaxpr2sofie.cpp.prepare.PREPARATION`: weight packing, buffer reuse), to
    debug a conversion or measure what a pass buys. Outputs keep the names the function gives
    them: a dict's keys (`{"logits": ..}` -> C++ `tensor_logits`), pytree paths below them
    (`heads.0`), or `output_names=[...]` (one per flat output); `compile()(x)` then returns the
    function's own structure (a dict with the same keys). A bare array or a tuple/list of arrays
    comes back as an array or a tuple, its outputs named after the operations computing them.

    >>> import jax.numpy as jnp, numpy as np, jaxpr2sofie as j2s
    >>> params = {"w": np.ones((3, 2), np.float32), "b": np.zeros(2, np.float32)}
    >>> m = j2s.convert(lambda p, x: jnp.tanh(x @ p["w"] + p["b"]), params, np.ones((1, 3), np.float32), name="Tiny")
    >>> float(m.validate().max_abs) < 1e-5
    True
    """
    from .progress import Progress
    fallback = getattr(fn, "__name__", None)
    label = model_name(name, "Model" if fallback in (None, "<lambda>") else fallback)
    if blas not in ("auto", "none"):
        raise ValueError(f"blas={blas!r}: give \"auto\" (BLAS for large products of two activations) or "
                         "\"none\" (the generated code's own kernels for every product: no BLAS to link)")
    bar = Progress(progress)
    bar.stage("tracing")
    traced = trace(fn, params, example_input, batch=batch, output_names=output_names)
    g = Graph(label)
    g.blas = blas
    if traced.dynamic:
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise ValueError(f"max_batch={max_batch!r}: give a positive int, the largest batch a Session takes by default")
        g.max_batch = max_batch or traced.example_batch or 1
        g.plan_batch = g.max_batch
    elif max_batch is not None:
        raise ValueError("max_batch is for a batch chosen at run time: pass batch=\"dynamic\" too")
    ctx = Lowering(g, HANDLERS, dynamic=traced.dynamic)
    cj = traced.closed_jaxpr
    args = [Const(v, lab) for v, lab in zip(traced.param_values, traced.param_labels)]
    args += [g.add_input(lab, shape, dtype) for lab, (shape, dtype) in zip(traced.input_labels, traced.input_avals)]
    n = len(cj.jaxpr.eqns)
    outs = ctx.run(cj.jaxpr, cj.consts, args, on_eqn=lambda i: bar.count(f"lowering {n} equations", i, n))
    ctx.raise_problems()
    g.outputs = [ctx.tensor(o) for o in outs]
    if traced.output_labels:
        name_outputs(g, traced.output_labels)
    bar.stage("graph passes")
    run_passes(g, disable=disable_passes, backend_steps=PREPARATION)
    prepare(g, disable=disable_passes)
    if traced.dynamic:
        check_emittable(g)
    bar.done(f"converted {g.name}: {len(g.ops)} operators")
    return SofieModel(g, traced, progress)


def _per_event(x, what: str) -> str:
    lin = dims.per_event(x)
    if not isinstance(x, dims.Sym) or lin is None:
        return ""
    return f" ({lin[0]} {what} per event" + (f" + {lin[1]} fixed)" if lin[1] else ")")


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
