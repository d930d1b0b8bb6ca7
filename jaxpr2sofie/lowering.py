"""Walk a jaxpr, fold what is known at conversion time, and hand every other equation to its rule.

The walker receives the rule table (`primitives.HANDLERS`) from its caller instead of importing
it, so the rules and the walker depend only on the leaf module `values`, never on each other.
"""
from __future__ import annotations

import re

import jax
import jax.extend.core as jex_core
import numpy as np

from .errors import Jaxpr2SofieError, UnsupportedDtypeError, UnsupportedPrimitiveError
from .ir.dims import DynamicDimError, canon_param, canon_shape, is_symbolic, show_shape
from .ir.graph import Graph
from .ir.tensor import CTYPES
from .source import UNKNOWN, user_line
from .values import Const, Poison, Scalar, Unsupported


def source_line(eqn) -> str:
    return user_line(eqn.source_info)


_TRANSFORMED = re.compile(r"^[A-Za-z_]\w*\((.*)\)$")   # jvp(Dense_0), transpose(jvp(M)), vmap(f)
_SCOPE_DEPTH = 3   # tensor names keep the innermost parts of a deep layer path


def scope_parts(eqn) -> tuple:
    """The user's names around an equation, outermost first: a Flax module path, a Keras layer, a
    `jax.named_scope`. The transformations JAX wraps a scope in (`jvp(...)`, `transpose(...)`) are
    peeled off: the gradient of Dense_0 is still computed in Dense_0."""
    parts = []
    for part in str(eqn.source_info.name_stack).split("/"):
        while (m := _TRANSFORMED.match(part)):
            part = m.group(1)
        if part:
            parts.append(part)
    return tuple(parts)


def _common_root(jaxpr) -> str | None:
    """The scope every equation of the function shares (a Flax model's own class name): it says
    nothing about where an operator comes from, so names leave it out."""
    roots = {(scope_parts(e) or ("",))[0] for e in jaxpr.eqns}
    return roots.pop() if len(roots) == 1 and "" not in roots else None


def _unrepresentable(eqn) -> str:
    """Why an equation's results cannot exist in the generated C++ (complex numbers, float64, ...),
    or "" when they can. Reported with the equation's line, like any unsupported primitive."""
    if any(isinstance(p, (jex_core.Jaxpr, jex_core.ClosedJaxpr)) for p in eqn.params.values()):
        return ""   # a call or a loop: the equations inside are checked one by one
    for v in eqn.outvars:
        dt = np.dtype(v.aval.dtype) if not jax.dtypes.issubdtype(v.aval.dtype, jax.dtypes.prng_key) else None
        if dt is None:
            return "produces PRNG keys from input values: random numbers drawn at run time are not supported"
        if dt == np.float64:
            return ("computes in float64 (jax_enable_x64 is on and the function casts to or creates float64): "
                    "the generated C++ computes in float32; use float32 here")
        if dt.name not in CTYPES:
            kind = "complex numbers" if dt.kind == "c" else f"{dt.name} values"
            return (f"produces {kind} ({dt.name}), which the generated C++ cannot represent; "
                    f"supported dtypes: {', '.join(CTYPES)}")
    return ""


_SAME_VALUES = {"convert_element_type", "copy", "broadcast_in_dim", "reshape", "squeeze", "stop_gradient"}


def _known(a):
    """A conversion-time value as NumPy; PRNG keys (which NumPy cannot hold) stay JAX arrays:
    they only ever feed other folded equations (e.g. Flax's RNN carry initialisation)."""
    if jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key):
        return a
    return np.asarray(a)


def _literal_value(v):
    aval = v.aval
    return Const(np.asarray(v.val, dtype=aval.dtype), "literal")


# Elementwise primitives folded on operands padded to a few fixed lengths: JAX compiles an XLA
# program per primitive and operand shape, and a BatchNorm-heavy model (MobileNetV2) otherwise paid
# for ~90 of them (5 s of its conversion) where a dozen give the same values.
_ELEMENTWISE = frozenset({
    "add", "sub", "mul", "div", "neg", "max", "min", "sqrt", "rsqrt", "exp", "log", "abs", "sign",
    "tanh", "logistic", "pow", "square", "integer_pow", "floor", "ceil", "round", "log1p", "expm1"})
_BUCKET = 1024


def _fold_padded(eqn, arrays):
    """An elementwise equation on same-shape operands (scalars aside) evaluated on flat copies padded
    with ones to a power-of-two length (at least _BUCKET): the same values, from far fewer compiles."""
    shapes = {a.shape for a in arrays if np.ndim(a)}
    if len(shapes) != 1 or not all(isinstance(a, np.ndarray) for a in arrays):
        return None
    (shape,) = shapes
    size = int(np.prod(shape))
    if size == 0:
        return None
    length = max(_BUCKET, 1 << (size - 1).bit_length())

    def flat(a):
        if not np.ndim(a):
            return a
        out = np.ones(length, a.dtype)
        out[:size] = a.reshape(-1)
        return out
    out = bind(eqn.primitive, list(map(flat, arrays)), eqn.params)
    return [np.asarray(out)[:size].reshape(shape)]


def bind(primitive, args, params):
    """`primitive` applied to `args` with an equation's `params`, as JAX's own evaluator does it."""
    params = primitive.get_bind_params(params)
    if isinstance(params, tuple):   # older JAX (0.9.0 and before): (sub-functions, params), those bound first
        subfuns, params = params
        return primitive.bind(*subfuns, *args, **params)
    return primitive.bind(*args, **params)


def _fold(eqn, arrays):
    """Evaluate an equation on known values with JAX itself."""
    name = eqn.primitive.name
    if name == "reshape" and eqn.params.get("dimensions") is None and isinstance(arrays[0], np.ndarray):
        return [np.reshape(arrays[0], eqn.params["new_sizes"])]   # a view: the same values
    if name in _ELEMENTWISE and not eqn.primitive.multiple_results:
        out = _fold_padded(eqn, arrays)
        if out is not None:
            return out
    if name == "broadcast_in_dim":
        # Keep broadcasts as zero-stride numpy views, so a broadcast constant is stored at its
        # original size (a bias stays N floats, not batch*N).
        (a,) = arrays[:1]
        shape, bdims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
        expanded = np.reshape(a, [a.shape[bdims.index(d)] if d in bdims else 1 for d in range(len(shape))])
        return [np.broadcast_to(expanded, shape)]
    # as JAX's own evaluator binds: call-like primitives (custom_jvp_call, ...) rebuild their
    # sub-functions from the equation's parameters
    out = bind(eqn.primitive, arrays, eqn.params)
    outs = out if eqn.primitive.multiple_results else [out]
    return [_known(o) for o in outs]


class _Aval:
    """An aval whose shape holds dims.Sym in place of JAX's symbolic dimensions."""

    def __init__(self, aval):
        self._aval = aval
        self.shape = canon_shape(aval.shape)

    def __getattr__(self, name):
        return getattr(self._aval, name)


class _Var:
    def __init__(self, var):
        self._var = var
        self.aval = _Aval(var.aval)

    def __getattr__(self, name):
        return getattr(self._var, name)


class _SymEqn:
    """An equation as rules see it when the batch is chosen at run time: its parameters and output
    shapes carry dims.Sym (JAX's _DimExpr converted once, here), everything else is the equation's."""

    def __init__(self, eqn):
        self._eqn = eqn
        self.params = {k: canon_param(v) for k, v in eqn.params.items()}
        self.outvars = [_Var(v) for v in eqn.outvars]

    def __getattr__(self, name):
        return getattr(self._eqn, name)


def _refusal(eqn, handler) -> str:
    """Why an equation cannot be converted whatever its inputs are ("" when nothing says so yet)."""
    if handler is None:
        return "no conversion rule for this primitive"
    unrepresentable = _unrepresentable(eqn)
    if unrepresentable:
        return unrepresentable
    bad = handler.unexpected(eqn.params)
    if bad:
        return (f"unexpected parameter(s) {sorted(bad)}: this JAX version lowers the primitive differently "
                "than the rule expects")
    return ""


def _poisons(eqn) -> list:
    return [Poison(v.aval) for v in eqn.outvars]


def _symbolic(eqn) -> bool:
    """Whether an equation's results depend on the run-time batch (a symbolic output shape, or a
    symbolic parameter such as dim_as_value's `dim`): it cannot be folded at conversion time."""
    if any(is_symbolic(d) for v in eqn.outvars for d in getattr(v.aval, "shape", ())):
        return True
    return any(is_symbolic(x) for v in eqn.params.values()
               for x in (v if type(v) in (tuple, list) else (v,)))


_DYNAMIC_HINT = "; convert with a fixed batch (drop batch=\"dynamic\") or keep the batch out of this operation"


class Lowering:
    """The conversion context rules receive as `ctx`.

    A child context (`subgraph`) writes into a child Graph but shares the tensor table, the
    weights, the rule table and the problem list with its parent.
    """

    def __init__(self, graph: Graph, handlers: dict, problems: list | None = None, sites: list | None = None,
                 dynamic: bool = False):
        self.g = graph
        self.dynamic = dynamic   # the batch is chosen at run time: shapes may hold dims.Sym
        self.handlers = handlers
        self.problems: list = [] if problems is None else problems
        self.eqn = None
        self.sites: list = [] if sites is None else sites   # source lines of enclosing calls, innermost last
        self.scope: tuple = ()   # scope parts of the enclosing calls (scope_parts), outermost first
        self.root: str | None = None   # see _common_root; set by the first (outermost) run
        self._rooted = False

    # -- walking --------------------------------------------------------------
    def run(self, jaxpr, consts, args, on_eqn=None) -> list:
        if not self._rooted:
            self.root, self._rooted = _common_root(jaxpr), True
        env = {}

        def read(v):
            if isinstance(v, jex_core.Literal):
                return _literal_value(v)
            return env[v]

        for v, c in zip(jaxpr.constvars, consts):
            env[v] = c if isinstance(c, (str, Const, Poison)) else Const(_known(c), "const")
        for v, a in zip(jaxpr.invars, args):
            env[v] = a
        for k, eqn in enumerate(jaxpr.eqns):
            outs = self.lower_eqn(eqn, [read(v) for v in eqn.invars])
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
            if on_eqn is not None:
                on_eqn(k + 1)
        return [read(v) for v in jaxpr.outvars]

    def lower_eqn(self, eqn, ins) -> list:
        name = eqn.primitive.name
        n_out = len(eqn.outvars)
        handler = self.handlers.get(name)
        if any(isinstance(v, Poison) for v in ins):
            return self._downstream(eqn, handler, ins)
        symbolic = _symbolic(eqn)
        if all(isinstance(v, Const) for v in ins) and not (symbolic and handler is not None):
            if symbolic:   # e.g. jnp.arange(x.shape[0]): a batch-sized value with no rule to build it
                self.report(eqn, "builds a value whose size is the run-time batch from constants, which has no "
                                 "conversion rule" + _DYNAMIC_HINT)
                return _poisons(eqn)
            try:
                vals = _fold(eqn, [c.array for c in ins])
            except Exception as e:  # e.g. a primitive JAX itself cannot run eagerly here
                self.report(eqn, f"could not be evaluated at conversion time ({type(e).__name__}: {e})")
                return _poisons(eqn)
            hint = next((c.hint for c in ins if c.hint not in ("literal", "const")), name)
            # a view of a weight keeps its name; anything that computes new values says how
            suffix = "" if name in _SAME_VALUES else "_" + name
            return [Const(v, hint + suffix if hint != name else name) for v in vals]
        refusal = _refusal(eqn, handler)
        if refusal:
            self.report(eqn, refusal)
            return _poisons(eqn)
        outer, self.eqn = self.eqn, eqn
        try:
            if self.dynamic:
                eqn = _SymEqn(eqn)
            out = handler.fn(self, eqn, *ins)
        except DynamicDimError as e:
            why = str(e).removesuffix(": convert with a fixed batch")   # the hint below says it in full
            self.report(eqn, f"cannot take a batch size chosen at run time: {why}{_DYNAMIC_HINT}")
            return _poisons(eqn)
        except Unsupported as e:
            self.report(eqn, e.reason)
            return _poisons(eqn)
        except UnsupportedDtypeError as e:   # e.g. a weight of a dtype the C++ cannot hold
            self.report(eqn, str(e))
            return _poisons(eqn)
        finally:
            self.eqn = outer
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if len(outs) != n_out:   # a rule's own bug, reported as such rather than as a crash
            self.report(eqn, f"internal error: the rule made {len(outs)} results for {n_out}; please open an issue")
            return _poisons(eqn)
        for o, v in zip(outs, eqn.outvars):
            if isinstance(o, Poison) and o.aval is None:
                o.aval = v.aval
        return outs

    def _downstream(self, eqn, handler, ins) -> list:
        """An equation reading the result of one that could not be converted. Its own problems are
        still reported: no rule, a dtype the C++ cannot hold, and every problem inside the jaxprs it
        calls (a jitted `jnp.fft.fft` fed by `jnp.linalg.inv`), which are walked with the unknown
        values standing in by their avals. A refusal by the rule itself is not reported: it may be
        about the unknown value, which the first problem already accounts for."""
        refusal = _refusal(eqn, handler)
        if refusal:
            self.report(eqn, refusal)
            return _poisons(eqn)
        if any(isinstance(p, (jex_core.Jaxpr, jex_core.ClosedJaxpr)) for p in eqn.params.values()):
            outer, self.eqn = self.eqn, eqn
            try:
                handler.fn(self, _SymEqn(eqn) if self.dynamic else eqn, *ins)
            except Exception:   # noqa: BLE001 - a rule meeting an unknown value: see the docstring
                pass
            finally:
                self.eqn = outer
        return _poisons(eqn)

    def where(self, eqn) -> str:
        """The user's source line of an equation; inside a jitted library function (jnp.sort...)
        JAX records none, so the line of the call being inlined stands in."""
        line = source_line(eqn)
        if line == UNKNOWN and self.sites:
            return self.sites[-1]
        return line

    def scope_of(self, eqn) -> tuple:
        """Where the user wrote an equation, as names (see scope_parts), the model's root left out."""
        parts = self.scope + scope_parts(eqn)
        if parts and parts[0] == self.root:
            parts = parts[1:]
        return parts

    def report(self, eqn, reason: str) -> None:
        self.problems.append((eqn.primitive.name, reason, self.where(eqn)))

    def raise_problems(self) -> None:
        if self.problems:
            raise UnsupportedPrimitiveError(self.problems)

    # -- helpers for rules ------------------------------------------------------
    def add(self, op, hint: str | None = None):
        """Add an operator for the current equation; returns its output name (or names).

        An operator whose shape inference rejects its inputs becomes a problem of the current
        equation (raised as `Unsupported`), like any other unsupported case."""
        scope = ()
        if self.eqn is not None:
            scope = self.scope_of(self.eqn)
            if not op.origin:   # without a line (inside a Keras layer) the scope alone says where
                line = self.where(self.eqn)
                op.origin = self.eqn.primitive.name + (f" @ {line}" if line != UNKNOWN else "")
            if not op.scope:
                op.scope = "/".join(scope)
            hint = hint or self.eqn.primitive.name
        if hint is not None and scope:   # Dense_0_dot_general: the tensor says which layer made it
            hint = "_".join(scope[-_SCOPE_DEPTH:] + (hint,))
        try:
            outs = self.g.add_op(op, hint)
        except DynamicDimError:
            raise
        except Jaxpr2SofieError as e:   # e.g. MatMul of int tensors: the message says what to do
            raise Unsupported(str(e)) from e
        except (ValueError, AssertionError, IndexError, KeyError) as e:
            shapes = [self.g.tensors[n].shape for n in op.inputs if n in self.g.tensors]
            if self.dynamic and any(is_symbolic(d) for s in shapes for d in s):
                # shapes that only work out for one batch size: the function fixes the batch
                raise DynamicDimError(f"this function fixes the batch: {op.op_type} cannot take its inputs "
                                      f"({', '.join(map(show_shape, shapes))}) for every batch N "
                                      f"({type(e).__name__}: {e})") from e
            raise Unsupported(f"{op.op_type}: {type(e).__name__}: {e}") from e
        return outs[0] if len(outs) == 1 else outs

    def tensor(self, v) -> str:
        """A graph tensor for `v`; a constant becomes a weight."""
        if isinstance(v, str):
            return v
        arr = v.array
        return self.g.add_weight(v.hint, np.require(arr, requirements='C'))

    def operand(self, v):
        """An elementwise operand: a literal for a one-element constant, a compact weight for a
        broadcast constant (its repeated dimensions stored once), the tensor name otherwise."""
        if isinstance(v, str):
            return v
        arr = v.array
        if arr.size == 1:
            return Scalar(arr.reshape(()).item(), arr.dtype.name)
        if any(s == 0 and n > 1 for s, n in zip(arr.strides, arr.shape)):
            if not hasattr(v, "compact"):
                idx = tuple(slice(0, 1) if s == 0 else slice(None) for s in arr.strides)
                v.compact = np.require(arr[idx], requirements='C')
            return self.g.add_weight(v.hint, v.compact)
        return self.g.add_weight(v.hint, arr)

    def shape(self, v) -> tuple:
        if isinstance(v, Poison):   # an unconverted value still has the jaxpr's shape
            return canon_shape(v.aval.shape)
        return tuple(v.array.shape) if isinstance(v, Const) else self.g.tensors[v].shape

    def dtype(self, v) -> str:
        if isinstance(v, Poison):
            return np.dtype(v.aval.dtype).name
        return v.array.dtype.name if isinstance(v, Const) else self.g.tensors[v].dtype

    def inline(self, closed_or_jaxpr, args) -> list:
        """Convert a nested jaxpr in place (jit, custom_jvp/vjp, remat, closed_call)."""
        self.sites.append(self.where(self.eqn) if self.eqn is not None else UNKNOWN)
        outer = self.scope
        if self.eqn is not None:   # the called function's equations name their scopes relative to the call
            self.scope = outer + scope_parts(self.eqn)
        try:
            if hasattr(closed_or_jaxpr, "consts"):
                return self.run(closed_or_jaxpr.jaxpr, closed_or_jaxpr.consts, args)
            return self.run(closed_or_jaxpr, [], args)
        finally:
            self.sites.pop()
            self.scope = outer

    def subgraph(self, closed_or_jaxpr, args, inputs=()) -> tuple:
        """Convert a nested jaxpr into a child graph (a loop body, a branch) instead of in place.

        `args` are the jaxpr's arguments: parent tensors and constants, which the child reads
        directly, and the loop-local tensors listed in `inputs` (made with `local`), which the
        owning operator fills before running the child. Returns (child graph, raw outputs); the
        child's `outputs` are the outputs as tensor names (constants become weights).
        """
        return self.subgraph_with(lambda child: child.inline(closed_or_jaxpr, args), inputs)

    def subgraph_with(self, build, inputs=()) -> tuple:
        """A child graph whose operators `build(child_context)` adds (several jaxprs inlined one
        after the other, operators of a rule's own); returns (child graph, raw outputs)."""
        child = Lowering(self.g.child(inputs), self.handlers, self.problems, self.sites, self.dynamic)
        child.eqn = self.eqn
        child.scope, child.root, child._rooted = self.scope, self.root, True
        outs = build(child)
        child.g.outputs = [None if isinstance(o, Poison) else child.tensor(o) for o in outs]
        return child.g, outs

    def local(self, hint: str, shape, dtype, kind: str = "intermediate") -> str:
        """A tensor owned by an operator with sub-graphs (a loop carry, a per-step slice)."""
        return self.g.add_tensor(hint, shape, dtype, kind)
