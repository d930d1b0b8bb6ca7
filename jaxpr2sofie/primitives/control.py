"""Nested jaxprs: call-like primitives are inlined; control flow is resolved where it is static."""
from __future__ import annotations

import jax.extend.core.primitives as P
import numpy as np
from jax import lax

from ..lowering import Const, Unsupported
from ..sofie.ops.movement import Concat
from . import handles
from .shape import reshape_to, slice_of


@handles(P.jit_p, params=("jaxpr", "name", "donated_invars", "inline", "keep_unused", "in_shardings",
                          "out_shardings", "in_layouts", "out_layouts", "resource_env", "ctx_mesh",
                          "compiler_options_kvs"))
def _jit(ctx, eqn, *args):
    return ctx.inline(eqn.params["jaxpr"], args)


@handles(P.closed_call_p, params=("call_jaxpr",))
def _closed_call(ctx, eqn, *args):
    return ctx.inline(eqn.params["call_jaxpr"], args)


@handles(P.custom_jvp_call_p, params=("call_jaxpr", "jvp_jaxpr_fun", "jvp_jaxpr_thunk", "num_consts",
                                      "symbolic_zeros", "name", "jvp"))
def _custom_jvp_call(ctx, eqn, *args):
    # Inference needs only the primal computation; the custom derivative rule is irrelevant.
    return ctx.inline(eqn.params["call_jaxpr"], args)


@handles(P.custom_vjp_call_p, params=("call_jaxpr", "fwd_jaxpr_thunk", "bwd", "num_consts", "out_trees",
                                      "symbolic_zeros", "name", "fwd"))
def _custom_vjp_call(ctx, eqn, *args):
    return ctx.inline(eqn.params["call_jaxpr"], args)


@handles(P.remat_p, params=("jaxpr", "prevent_cse", "differentiated", "policy"))
def _remat(ctx, eqn, *args):
    return ctx.inline(eqn.params["jaxpr"], args)


@handles(lax.cond_p, params=("branches",))
def _cond(ctx, eqn, index, *args):
    if isinstance(index, Const):   # the branch is decided at conversion time
        branches = eqn.params["branches"]
        i = min(max(int(index.array), 0), len(branches) - 1)
        return ctx.inline(branches[i], args)
    raise Unsupported("lax.cond whose predicate depends on the input: run-time branches are not supported yet; "
                      "compute both sides and pick with jnp.where")


@handles(lax.while_p, params=("cond_jaxpr", "body_jaxpr", "cond_nconsts", "body_nconsts"))
def _while(ctx, eqn, *args):
    # A loop whose condition is known at conversion time (a counter) is unrolled; one that
    # tests a value computed from the input needs run-time loops, which are a later issue.
    p = eqn.params
    cn, bn = int(p["cond_nconsts"]), int(p["body_nconsts"])
    cconsts, bconsts, carry = args[:cn], args[cn:cn + bn], list(args[cn + bn:])
    for _ in range(MAX_UNROLL + 1):
        (pred,) = ctx.inline(p["cond_jaxpr"], [*cconsts, *carry])
        if not isinstance(pred, Const):
            raise Unsupported("lax.while_loop whose condition depends on the input: run-time loops are not "
                              "supported yet; use a loop with a static trip count")
        if not bool(pred.array):
            return carry
        carry = list(ctx.inline(p["body_jaxpr"], [*bconsts, *carry]))
    raise Unsupported(f"lax.while_loop running more than {MAX_UNROLL} iterations: too long to unroll")


# Unrolling a scan emits its body once per step; beyond this the code grows too large to be useful.
MAX_UNROLL = 256


def _step_of(ctx, x, i):
    """x[i] along the leading axis."""
    if isinstance(x, Const):
        return Const(x.array[i], x.hint)
    shape = ctx.shape(x)
    starts = [i] + [0] * (len(shape) - 1)
    limits = [i + 1] + list(shape[1:])
    return reshape_to(ctx, slice_of(ctx, x, starts, limits), shape[1:])


def _stack(ctx, steps):
    if all(isinstance(s, Const) for s in steps):
        return Const(np.stack([s.array for s in steps]), steps[0].hint)
    parts = [reshape_to(ctx, ctx.tensor(s), (1,) + ctx.shape(s)) for s in steps]
    return parts[0] if len(parts) == 1 else ctx.add(Concat([ctx.tensor(p) for p in parts], axis=0), hint="stack")


@handles(lax.scan_p, params=("jaxpr", "length", "reverse", "num_consts", "num_carry", "linear", "unroll",
                             "_split_transpose"))
def _scan(ctx, eqn, *args):
    # A scan has a static trip count, so it can be unrolled; run-time loops are a later issue.
    p = eqn.params
    length, nc, ncar = int(p["length"]), int(p["num_consts"]), int(p["num_carry"])
    if length > MAX_UNROLL:
        raise Unsupported(f"lax.scan of length {length}: scans are unrolled and at most {MAX_UNROLL} steps are "
                          "supported until run-time loops land")
    if length == 0:
        raise Unsupported("lax.scan of length 0")
    consts, carry, xs = args[:nc], list(args[nc:nc + ncar]), args[nc + ncar:]
    per_step = {}
    for i in (range(length - 1, -1, -1) if p["reverse"] else range(length)):
        outs = ctx.inline(p["jaxpr"], [*consts, *carry, *[_step_of(ctx, x, i) for x in xs]])
        carry, per_step[i] = list(outs[:ncar]), outs[ncar:]
    n_ys = len(eqn.outvars) - ncar
    ys = [_stack(ctx, [per_step[i][k] for i in range(length)]) for k in range(n_ys)]
    return [*carry, *ys]


# ---------------------------------------------------------------------------------------------
# Test cases (see cases.py)
import jax   # noqa: E402
import jax.numpy as _jnp   # noqa: E402

from .cases import Case, f32   # noqa: E402


@jax.custom_vjp
def _clip_grad(x):
    return _jnp.tanh(x) * 2.0


_clip_grad.defvjp(lambda x: (_clip_grad(x), x), lambda x, g: (g,))


def _closed_cos(x):
    # closed_call has no public wrapper; bind it the way JAX's own evaluator does
    (out,) = P.closed_call_p.bind(x, **P.closed_call_p.get_bind_params({"call_jaxpr": jax.make_jaxpr(_jnp.cos)(x)}))
    return out


def _rnn(p, xs):
    def step(h, x):
        h = _jnp.tanh(x @ p["wx"] + h @ p["wh"])
        return h, h * 2.0
    return lax.scan(step, _jnp.zeros((1, 4), "float32"), xs)


CASES = [
    Case("jit_nested", jax.jit(lambda x: jax.jit(_jnp.sin)(x) * 2.0), (f32(3, 4),), ("jit", "sin")),
    Case("closed_call", lambda x: _closed_cos(x) * 2.0, (f32(3, 4),), ("closed_call",)),
    Case("while_static_trip_count", lambda x: lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, _jnp.sin(c[1])),
                                                             (0, x))[1], (f32(3, 4),), ("while",)),
    Case("custom_jvp_call", jax.nn.relu6, (f32(3, 4, scale=5.0),), ("custom_jvp_call",)),
    Case("custom_vjp_call", _clip_grad, (f32(3, 4),), ("custom_vjp_call",)),
    Case("remat", jax.checkpoint(lambda x: _jnp.sin(x) * _jnp.cos(x)), (f32(3, 4),), ("remat2",)),
    Case("cond_static_predicate", lambda x: lax.cond(True, lambda a: a + 1.0, lambda a: a - 1.0, x),
         (f32(3, 4),), ("cond",)),
    Case("fori_loop_unrolled", lambda x: lax.fori_loop(0, 3, lambda i, a: a * 0.5 + _jnp.sin(a), x),
         (f32(3, 4),), ("scan",)),
    Case("scan_rnn", _rnn, (f32(5, 1, 3),), ("scan", "dot_general"),
         params={"wx": f32(3, 4, scale=0.5), "wh": f32(4, 4, scale=0.5)}),
    Case("scan_reverse", lambda xs: lax.scan(lambda c, x: (c + x, c * x), _jnp.zeros(3, "float32"), xs, reverse=True),
         (f32(4, 3),), ("scan",)),
]
# second shapes for the rules above (every primitive is tested on at least two shapes)
CASES += [
    Case("closed_call_rank3", lambda x: _closed_cos(x) + x, (f32(2, 3, 4),), ("closed_call",)),
    Case("custom_vjp_call_rank1", lambda x: _clip_grad(x) * x, (f32(7),), ("custom_vjp_call",)),
    Case("remat_dense", lambda p, x: jax.checkpoint(lambda a: _jnp.tanh(a @ p))(x), (f32(2, 5),), ("remat2",),
         params=f32(5, 3)),
    Case("switch_static_index", lambda x: lax.switch(2, [lambda a: a, lambda a: -a, lambda a: a * 3.0], x),
         (f32(2, 3, 4),), ("cond",)),
    Case("while_counter_rank1", lambda x: lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 2, c[1] * 0.9 + 1.0),
                                                         (0, x))[1], (f32(6),), ("while",)),
]
