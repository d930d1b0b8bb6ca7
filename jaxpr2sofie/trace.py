"""Trace a function with `jax.make_jaxpr`: flatten params and inputs, name every leaf by its key path."""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import jax
import numpy as np

from .errors import TraceError, UnsupportedDtypeError
from .ir.dims import DynamicDimError, canon_shape, is_symbolic
from .ir.tensor import CTYPES, c_identifier, ctype

# Errors JAX raises when a Python-level decision or a shape depends on a traced value.
_DATA_DEPENDENT = tuple(
    getattr(jax.errors, n) for n in (
        "ConcretizationTypeError", "TracerBoolConversionError", "TracerIntegerConversionError",
        "NonConcreteBooleanIndexError", "TracerArrayConversionError")
    if hasattr(jax.errors, n))


def path_label(path) -> str:
    """`(DictKey('params'), DictKey('Dense_0'), DictKey('kernel'))` -> `params.Dense_0.kernel`."""
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(c_identifier(str(k)))
    return ".".join(parts)


@dataclass
class Traced:
    closed_jaxpr: Any                 # jax.extend.core.ClosedJaxpr over (param leaves..., input leaves...)
    param_labels: list
    param_values: list                # numpy arrays
    input_labels: list
    input_avals: list                 # (shape, dtype) per input leaf; a run-time batch is a dims.Sym
    flat_fn: Callable                 # flat_fn(*param_leaves, *input_leaves) -> list of outputs
    example_batch: int | None = None  # the leading size of the example input, when the batch is dynamic
    output_labels: list | None = None  # a name per flat output from its pytree path (dict keys); None: unnamed
    output_tree: Any = None           # the treedef of the function's output

    @property
    def dynamic(self) -> bool:
        return any(is_symbolic(d) for s, _ in self.input_avals for d in s)

    def reference(self, *inputs) -> list:
        """Run the original function under JAX on flat inputs; flat list of numpy outputs."""
        outs = jax.jit(self.flat_fn)(*self.param_values, *inputs)
        return [np.asarray(o) for o in outs]

    def reference_op_by_op(self, *inputs) -> list:
        """The same outputs computed one primitive at a time, as JAX runs under `jax.disable_jit()`
        (loops and branches step by step in Python, each primitive compiled on its own).

        Whole-program rewrites cannot change this result, and they are not always right: XLA's CPU
        compiler folds a dynamic slice of a dynamic slice, and a scatter into a dynamic slice,
        without clamping the outer start as the operations' semantics say (openxla/xla#49121,
        jax-ml/jax#40849), inside loop bodies too, so `jax.jit` reads a different window than the
        program asks for. Where `reference` and this disagree, this is the program's meaning and
        the one the C++ must match. Slower than `reference`: used to settle a disagreement."""
        with jax.disable_jit():
            outs = self.flat_fn(*self.param_values, *inputs)
        return [np.asarray(o) for o in outs]


def _leaves_with_labels(tree, default: str):
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    labels, leaves = [], []
    for path, leaf in leaves_with_path:
        label = path_label(path) or default
        if label[0].isdigit():
            label = f"{default}_{label}"
        labels.append(label)
        leaves.append(leaf)
    return labels, leaves, treedef


def _is_key(a) -> bool:
    return jax.dtypes.issubdtype(getattr(a, "dtype", None), jax.dtypes.prng_key)


def _param_value(label: str, leaf):
    """A params leaf as an array JAX would see: NumPy for numbers (Python scalars take JAX's default
    types), a JAX array for a PRNG key (NumPy cannot hold one; keys fold like any constant)."""
    if _is_key(leaf):
        return leaf
    if isinstance(leaf, (bool, int, float)):
        return np.asarray(leaf, dtype=jax.dtypes.canonicalize_dtype(type(leaf)))
    if not hasattr(leaf, "dtype") or not hasattr(leaf, "shape"):
        raise TypeError(f"params: the leaf at {label!r} is a {type(leaf).__name__}, not an array: params must "
                        "hold only arrays (and numbers). Keep settings such as strings or callables out of params, "
                        "e.g. close over them in the function or use functools.partial.")
    return np.asarray(leaf)


def _input_spec(label: str, leaf):
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    if isinstance(leaf, (bool, int, float, complex)) or not (hasattr(leaf, "dtype") and hasattr(leaf, "shape")):
        raise TypeError(f"example_input: the leaf at {label!r} is a {type(leaf).__name__}, not an array: pass "
                        "NumPy or JAX arrays (e.g. np.zeros((1, 16), np.float32)); a list or tuple is read as "
                        "several inputs, so wrap a list of numbers in np.asarray(..., np.float32).")
    return jax.ShapeDtypeStruct(np.shape(leaf), np.asarray(leaf).dtype)


def _warn_float64(labels, dtypes, what: str) -> None:
    """float64 is computed as float32 everywhere (the generated code is single precision, as SOFIE's):
    such leaves are converted once, up front, and we say so."""
    wide = [lab for lab, d in zip(labels, dtypes) if d == np.float64]
    if wide:
        warnings.warn(f"{what} {', '.join(wide[:8])}{' ...' if len(wide) > 8 else ''} "
                      f"{'is' if len(wide) == 1 else 'are'} float64: converted to float32 (the generated C++ "
                      "computes in float32). Pass float32 arrays to silence this warning.", stacklevel=4)


def _calls_with_params(fn, params) -> bool:
    """Whether `fn` is called as fn(params, x) (else fn(x)), from `params` and fn's signature.

    params=None with a two-argument fn calls fn(None, x); params given to a one-argument fn is an
    error that says what to change, instead of Python's "takes 1 positional argument"."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):   # a builtin or a C-level callable: trust `params`
        return params is not None
    positional = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values())
    required = [p for p in positional if p.default is p.empty]
    if params is None:
        return len(required) >= 2
    if len(positional) < 2 and not variadic:
        raise TypeError(f"params were given but the function takes {len(positional)} positional argument(s) "
                        f"{tuple(p.name for p in positional)}: write it as fn(params, x), or pass params=None "
                        "for a function of the input alone")
    return True


BATCH_MODES = (None, "static", "dynamic")


def _dynamic_specs(x_labels, x_specs, batch):
    """With batch="dynamic", every input's leading dimension becomes JAX's symbol N; returns the
    specs and the example batch (the leading size of the example arrays, None if symbolic)."""
    from jax import export
    symbols = {v for s in x_specs for d in s.shape if is_symbolic(d) for v in d.get_vars()}
    if batch != "dynamic":
        if len(symbols) > 1:
            raise TraceError(f"example_input uses {len(symbols)} symbolic dimensions ({', '.join(sorted(symbols))}): "
                             "one run-time size (the batch) is supported; make the others concrete")
        return x_specs, None
    if symbols:
        raise TraceError("batch=\"dynamic\" makes the leading dimension symbolic itself: pass concrete example "
                         "arrays, or pass symbolic ShapeDtypeStructs without batch=\"dynamic\"")
    for lab, s in zip(x_labels, x_specs):
        if not s.shape:
            raise TraceError(f"batch=\"dynamic\": input {lab!r} is a scalar and has no batch dimension; give "
                             "every input a leading batch dimension (e.g. x[None]) or convert with a fixed batch")
    leads = {s.shape[0] for s in x_specs}
    if len(leads) > 1:
        raise TraceError(f"batch=\"dynamic\": the inputs' leading dimensions differ ({sorted(leads)}): each input's "
                         "first dimension must be the batch")
    (n,) = export.symbolic_shape("N")
    return [jax.ShapeDtypeStruct((n,) + tuple(s.shape[1:]), s.dtype) for s in x_specs], int(leads.pop())


def output_labels(paths, names=None) -> list | None:
    """A name per flat output: the user's `names`, else the pytree path when it holds a name (a dict
    key, an attribute: `{"logits": ..}` -> logits, `{"heads": (a, b)}` -> heads.0, heads.1); None
    for a bare array or a tuple/list of arrays, whose outputs keep the names of what computes them."""
    if names is not None:
        names = [names] if isinstance(names, str) else list(names)
        if len(names) != len(paths) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"output_names={names!r}: give one non-empty string per output; the function "
                             f"returns {len(paths)} array(s)")
        if len({c_identifier(n) for n in names}) != len(names):
            raise ValueError(f"output_names={names!r}: the names must stay distinct as C++ identifiers")
        return names
    named = any(not hasattr(k, "idx") for path in paths for k in path)
    return [path_label(p) or "output" for p in paths] if named else None


def trace(fn: Callable, params, example_input, batch=None, output_names=None) -> Traced:
    if batch not in BATCH_MODES:
        raise ValueError(f"batch={batch!r}: choose \"dynamic\" (the batch size is chosen at run time) or None "
                         "(fixed to the example input's)")
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(params, x) or fn(x), got a {type(fn).__name__}")
    with_params = _calls_with_params(fn, params)
    p_labels, p_leaves, p_tree = _leaves_with_labels(params, "param")
    x_labels, x_leaves, x_tree = _leaves_with_labels(example_input, "x")
    if not x_leaves:
        raise TraceError("example_input holds no arrays: pass an example array (or a pytree of arrays) "
                         "with the shape and dtype the model will be called with")
    p_values = [_param_value(lab, v) for lab, v in zip(p_labels, p_leaves)]
    _warn_float64(p_labels, [v.dtype for v in p_values], "params")
    p_values = [v.astype(np.float32) if v.dtype == np.float64 else v for v in p_values]
    x_specs = [_input_spec(lab, v) for lab, v in zip(x_labels, x_leaves)]
    _warn_float64(x_labels, [s.dtype for s in x_specs], "example_input")
    x_specs = [jax.ShapeDtypeStruct(s.shape, np.float32) if s.dtype == np.float64 else s for s in x_specs]
    for lab, s in zip(x_labels, x_specs):
        check_input_dtype(lab, s.dtype)
    x_specs, example_batch = _dynamic_specs(x_labels, x_specs, batch)
    n_p = len(p_leaves)
    seen = {}   # what the last call saw: the param leaves it got, the output's paths and structure

    def flat_fn(*args):
        seen["params"] = args[:n_p]
        p = jax.tree_util.tree_unflatten(p_tree, args[:n_p])
        x = jax.tree_util.tree_unflatten(x_tree, args[n_p:])
        y = fn(p, x) if with_params else fn(x)
        leaves, seen["tree"] = jax.tree_util.tree_flatten(y)
        seen["paths"] = [p for p, _ in jax.tree_util.tree_flatten_with_path(y)[0]]
        return leaves

    specs = [jax.ShapeDtypeStruct(np.shape(v), v.dtype) for v in p_values] + x_specs
    try:
        closed = jax.make_jaxpr(flat_fn)(*specs)
    except _DATA_DEPENDENT as e:
        first = str(e).strip().splitlines()[0]
        raise TraceError(
            "the function cannot be traced to a static graph: a shape or a Python `if`/`for`/`int()` depends on "
            f"the value of an input ({type(e).__name__}: {first}). Use lax.cond/jnp.where for branches, "
            "give data-dependent operations a static size (e.g. jnp.nonzero(x, size=N)), and keep shapes static."
        ) from e
    except Exception as e:
        from .params_check import explain, key_paths
        why = explain(e, params, example_input, key_paths(params), seen.get("params", ()))
        if why:
            raise TraceError(why) from e
        if not any(is_symbolic(d) for s in x_specs for d in s.shape):
            raise
        from .source import exception_line
        first = (str(e).strip().splitlines() or [""])[0]
        raise TraceError(
            f"the function cannot take a batch size chosen at run time: at {exception_line(e)} JAX could not "
            f"trace it with a symbolic batch N ({type(e).__name__}: {first}). This happens when the batch is "
            "mixed into other dimensions (e.g. a reshape that folds it into the features) or a size is computed "
            "from it; convert with a fixed batch (drop batch=\"dynamic\"), or keep the batch separate."
        ) from e
    # the dtypes JAX traced with (int64 is int32 unless jax_enable_x64): the C++ takes exactly these
    in_avals = closed.in_avals[n_p:]
    try:
        shapes = [canon_shape(a.shape) for a in in_avals]
    except DynamicDimError as e:
        raise TraceError(f"example_input: {e}") from e
    return Traced(closed, p_labels, p_values, x_labels,
                  [(s, np.dtype(a.dtype)) for s, a in zip(shapes, in_avals)], flat_fn, example_batch,
                  output_labels(seen["paths"], output_names), seen["tree"])


def check_input_dtype(label: str, dtype) -> None:
    try:
        ctype(dtype)
    except UnsupportedDtypeError:
        raise UnsupportedDtypeError(
            f"input {label!r} has dtype {np.dtype(dtype).name}, which the generated C++ cannot take; "
            f"supported: {', '.join(CTYPES)}. Pass it as float32, or as one of the integer types "
            f"{', '.join(t for t in CTYPES if t[0] in 'iu')} (e.g. x.astype(np.int32)), or bool.") from None


def primitive_inventory(jaxpr, found=None) -> dict:
    """{primitive name: number of uses} over a jaxpr and every jaxpr nested in it."""
    import jax.extend.core as jex_core

    found = {} if found is None else found
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        found[eqn.primitive.name] = found.get(eqn.primitive.name, 0) + 1
    subjaxprs = getattr(jex_core, "subjaxprs", None)
    if subjaxprs is None:   # jax.extend.core has it in 0.10.2, not in 0.9.0 and before: there, jax.core's
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            subjaxprs = jax.core.subjaxprs
    for sub in subjaxprs(jaxpr):
        primitive_inventory(sub, found)
    return found
