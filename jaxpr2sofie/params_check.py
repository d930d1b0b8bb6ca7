"""Why tracing failed with the user's params, said in the user's terms: which parameter (its key
path), the shape expected and the shape given, and what to change.

JAX's own messages name neither: a missing entry is a bare `KeyError: 'b'`, a kernel of the wrong
size `dot_general requires contracting dimensions to have the same shape`, and `(x, params)` passed
in the wrong order `JAX does not support string indexing`. The trace has failed by the time we
look, so everything here reads what the failure left behind (the exception, its traceback's
frames, the params pytree) and says nothing when it cannot point at a parameter for sure.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from .source import exception_line

# jax.Array operator methods whose operands are broadcast against each other
_BROADCASTING = {"add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "pow", "rpow", "floordiv",
                 "mod", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "xor"}


def key_paths(params) -> list:
    """`params['Dense_0']['kernel']` per leaf, in flattening order."""
    return ["params" + jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _shape(a) -> tuple:
    return tuple(np.shape(a)) if not hasattr(a, "shape") else tuple(a.shape)


def explain(exc, params, example_input, paths, tracers) -> str | None:
    """A message for a failed trace that names the parameter at fault, or None when the failure is
    not (recognisably) about params. `tracers` are the param leaves as the function received them."""
    where = exception_line(exc)
    swapped = _swapped(params, example_input)
    if swapped:
        return f"{swapped} (JAX: {type(exc).__name__}: {_first(exc)} at {where})"
    if isinstance(exc, KeyError) and exc.args:
        return _missing_key(exc.args[0], params, example_input, where)
    if isinstance(exc, (TypeError, ValueError)) and "shape" in str(exc).lower():
        return _wrong_shape(exc, paths, tracers, where)
    return None


def _first(exc) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _is_array(a) -> bool:
    return hasattr(a, "shape") and hasattr(a, "dtype")


def _swapped(params, example_input) -> str:
    """(x, params) given as (params, x): an array where the weights go, a dict of arrays as input."""
    if not _is_array(params) or not isinstance(example_input, Mapping):
        return ""
    keys = ", ".join(repr(k) for k in list(example_input)[:6])
    return (f"params and example_input look swapped: params is one array of shape {_shape(params)} and "
            f"example_input a dict (keys {keys}). The order is convert(fn, params, example_input), "
            "as fn(params, x) takes them")


def _dicts(tree, path=("params",)):
    """(key path, mapping) of every mapping in a pytree, outermost first."""
    if isinstance(tree, Mapping):
        yield path, tree
        for k, v in tree.items():
            yield from _dicts(v, path + (f"[{k!r}]",))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _dicts(v, path + (f"[{i}]",))


def _missing_key(key, params, example_input, where) -> str | None:
    dicts = list(_dicts(params))
    if not dicts or not isinstance(key, (str, int)):
        return None
    having = ["".join(p) for p, d in dicts if key in d]
    lacking = [(p, d) for p, d in dicts if key not in d]
    if having:
        # present in some dicts (layer1 has 'b'): the dicts at the same depth without it lack it
        depth = {len(p) for p, d in dicts if key in d}
        lacking = [(p, d) for p, d in lacking if len(p) in depth]
        if not lacking:
            return None   # every dict that could hold it does: the KeyError is not about params
    else:
        lacking = lacking[:1]   # nowhere: the outermost dict is where the function looked first
    lines = []
    for p, d in lacking[:4]:
        held = ", ".join(repr(k) for k in list(d)[:8]) + (" ..." if len(d) > 8 else "")
        lines.append(f"{''.join(p)} has no entry {key!r} (it holds {held or 'nothing'})")
    seen = f"; {having[0]}[{key!r}] exists" if having else ""
    in_x = (" (nor does example_input, a dict too)" if isinstance(example_input, Mapping)
            and key not in example_input else "")
    return (f"the function reads the parameter {key!r} at {where}, but " + "; ".join(lines) + in_x + seen +
            f". Add the array under {key!r} (the params pytree must hold every weight the function reads), "
            "or fix the key the function looks up.")


def _frames(exc):
    tb = exc.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def _jax_frames(exc) -> list:
    """The traceback's frames inside JAX, innermost first: the user's own frames hold params too
    (`w = p["w"]`) without being the operation that refused one."""
    return [f for f in reversed(list(_frames(exc))) if f.f_globals.get("__name__", "").startswith("jax.")]


def _culprit(exc, tracers):
    """(frame, local name, param index, sure) of the operand that is a param. Sure: the innermost
    frame holding a param leaf as the function received it (`x @ p['w']` stops in jax.Array's
    `_operator_matmul`, `other` the kernel). Not sure: inside a jitted jnp function (`jnp.dot`)
    the leaf is a new tracer, so an operand is matched by shape and dtype to the one param that has them."""
    frames = _jax_frames(exc)
    ids = {id(t): k for k, t in enumerate(tracers)}
    for frame in frames:
        hit = [(name, ids[id(v)]) for name, v in list(frame.f_locals.items()) if id(v) in ids]
        if hit:
            return frame, *hit[0], True
    kinds = {}
    for k, t in enumerate(tracers):
        kinds.setdefault((_shape(t), str(t.dtype)), []).append(k)
    for frame in reversed(frames):   # the outermost operation with operands: jnp.dot's (a, b)
        arrays = {n: v for n, v in list(frame.f_locals.items()) if _is_array(v)}
        if len(arrays) < 2:
            continue
        unique = [(n, kinds[(_shape(v), str(v.dtype))][0]) for n, v in arrays.items()
                  if len(kinds.get((_shape(v), str(v.dtype)), ())) == 1]
        # a rebinding inside the function (matmul's `b` and `x`) may name one operand twice
        return (frame, *unique[0], False) if len({k for _, k in unique}) == 1 else None
    return None


def _wrong_shape(exc, paths, tracers, where) -> str | None:
    found = _culprit(exc, tracers)
    if found is None:
        return None
    frame, name, k, sure = found
    local = dict(frame.f_locals)
    # the operation's operands are its arguments (matmul's `a`, `b`), not locals it computes on the way
    arguments = frame.f_code.co_varnames[:frame.f_code.co_argcount + frame.f_code.co_kwonlyargcount]
    others = [(n, _shape(local[n])) for n in arguments if n != name and n in local and _is_array(local[n])]
    if any(not isinstance(d, int) for _, s in others for d in s):
        return None   # a run-time batch in the other operand: the batch is the trouble, not the param
    op = frame.f_code.co_name.removeprefix("_operator_")
    given = _shape(tracers[k])
    expected = _expected(op, name, given, others)
    with_ = ", ".join(f"{s}" for _, s in others) or "?"
    want = f"expected {expected}, " if expected else ""
    fix = (f"give {paths[k]} the shape the function expects" + (f", {expected}" if expected else "") +
           ", e.g. the shape it had at training time.")
    if sure:
        return (f"parameter {paths[k]} has the wrong shape: {want}given {given}. At {where} the operation "
                f"{op!r} meets it with an operand of shape {with_} (JAX: {_first(exc)}). {fix[0].upper() + fix[1:]}")
    return (f"parameter {paths[k]} probably has the wrong shape ({want}given {given}): at {where} the operation "
            f"{op!r} meets an operand of its shape and dtype, {given}, with one of shape {with_} (JAX: "
            f"{_first(exc)}). If that operand is {paths[k]}: {fix}")


def _expected(op, name, given, others):
    """The shape the parameter would need, for a product or a broadcast against one other operand."""
    if len(others) != 1 or not given:
        return None
    other = others[0][1]
    if op in ("matmul", "rmatmul", "dot") and other:
        # x.__rmatmul__(w) computes w @ x: there `self` is the right-hand side
        param_is_rhs = name == "self" if op == "rmatmul" else name in ("other", "b", "rhs")
        g = list(given)
        if param_is_rhs:
            g[-2 if len(g) >= 2 else 0] = other[-1]
        else:
            g[-1] = other[-2 if len(other) >= 2 else 0]
        return tuple(g)
    if op in _BROADCASTING and len(given) <= len(other):
        return tuple(other[len(other) - len(given):])
    return None


def compare_shapes(expected, given, what: str = "variables") -> list:
    """Every difference between two pytrees of arrays (or ShapeDtypeStructs): entries missing,
    entries not expected, shapes that differ; each with its key path."""
    def flat(tree):
        return {what + jax.tree_util.keystr(p): _shape(v) for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
    want, got = flat(expected), flat(given)
    problems = [f"{k}: missing (expected shape {s})" for k, s in want.items() if k not in got]
    problems += [f"{k}: not used by the module (shape {s})" for k, s in got.items() if k not in want]
    problems += [f"{k}: expected shape {want[k]}, given {s}" for k, s in got.items() if k in want and want[k] != s]
    return problems
