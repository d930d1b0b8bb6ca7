"""Nested jaxprs: call-like primitives are inlined; scan and while become one C++ loop over a
sub-graph (Loop), cond/switch a run-time branch (If/Switch) unless the index is known."""
from __future__ import annotations

import jax.extend.core.primitives as P
import numpy as np
from jax import lax

from ..ir.dims import canon_shape
from ..ir.ops.control import Branch, Loop
from ..ir.ops.elementwise import Elementwise
from ..ir.ops.movement import Identity
from ..ir.ops.reduce import Reduce
from ..values import Const, Poison, Unsupported
from . import handles
from .shape import reshape_to


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


def _results(ctx, op, hint):
    out = ctx.add(op, hint=hint)
    return out if isinstance(out, list) else [out]


def _failed(outs) -> bool:
    """A sub-graph output could not be converted: its problem is already in the list."""
    return any(isinstance(o, Poison) for o in outs)


def _check_carries(what, state_avals, outs, ctx):
    for k, (aval, o) in enumerate(zip(state_avals, outs)):
        if ctx.dtype(o) != np.dtype(aval.dtype).name or ctx.shape(o) != canon_shape(aval.shape):
            raise Unsupported(f"{what} whose carry {k} changes from {np.dtype(aval.dtype).name}{list(aval.shape)} to "
                              f"{ctx.dtype(o)}{list(ctx.shape(o))} in the body: a loop carry keeps its type")


def _untangle(body, n_carry):
    """A new carry that *is* another carry's old value (a swap) would be overwritten before it
    is copied; give it a buffer of its own inside the body."""
    state = body.inputs[:n_carry]
    for k, new in enumerate(body.outputs[:n_carry]):
        base, op = new, body.producer(new)
        while op is not None and op.aliases_input:
            base, op = op.inputs[0], body.producer(op.inputs[0])
        if base in state and base != state[k]:
            (body.outputs[k],) = body.add_op(Identity([new]), hint="carry_next")


def _locals(ctx, avals, hint, kind="intermediate"):
    return [ctx.local(hint, tuple(a.shape), np.dtype(a.dtype).name, kind) for a in avals]


@handles(lax.cond_p, params=("branches",))
def _cond(ctx, eqn, index, *args):
    branches = eqn.params["branches"]
    if isinstance(index, Const):   # the branch is decided at conversion time
        i = min(max(int(index.array), 0), len(branches) - 1)
        return ctx.inline(branches[i], args)
    subs = [ctx.subgraph(b, args) for b in branches]
    if any(_failed(outs) for _, outs in subs):
        return [Poison() for _ in eqn.outvars]
    op = Branch([ctx.tensor(index)], branches=tuple(g for g, _ in subs))
    op.refresh()
    return _results(ctx, op, "cond")


@handles(lax.while_p, params=("cond_jaxpr", "body_jaxpr", "cond_nconsts", "body_nconsts"))
def _while(ctx, eqn, *args):
    # Reaching here means something is computed at run time (a loop over known values only is
    # folded by the walker), so the condition is evaluated in C++ before every step.
    p = eqn.params
    cn, bn = int(p["cond_nconsts"]), int(p["body_nconsts"])
    cconsts, bconsts, carry = args[:cn], args[cn:cn + bn], list(args[cn + bn:])
    avals = [v.aval for v in p["body_jaxpr"].jaxpr.invars[bn:]]
    state = _locals(ctx, avals, "carry")
    cond, couts = ctx.subgraph(p["cond_jaxpr"], [*cconsts, *state], inputs=state)
    if p["cond_jaxpr"].out_avals[0].shape:
        # A batched predicate (vmap of a while_loop): XLA loops while any entry holds, and a step
        # changes only the carry entries whose predicate still holds (the others keep their value).
        if _failed(couts):
            return [Poison() for _ in eqn.outvars]
        pred = couts[0]
        rank = len(ctx.shape(pred))
        (cond.outputs[0],) = cond.add_op(Reduce([cond.outputs[0]], kind="max", axes=tuple(range(rank)),
                                                origin=f"while (any of the predicate) @ {ctx.where(eqn)}"),
                                         hint="while_any")

        def masked_step(child):
            (pred,) = child.inline(p["cond_jaxpr"], [*cconsts, *state])
            new = child.inline(p["body_jaxpr"], [*bconsts, *state])
            if _failed([pred, *new]):
                return new
            out = []
            for old, n in zip(state, new):
                shape = child.shape(n)
                which = reshape_to(child, pred, tuple(shape[:rank]) + (1,) * (len(shape) - rank))
                out.append(child.add(Elementwise.make("select", [child.operand(which), old, child.operand(n)],
                                                      child.dtype(n), param=2, shape=shape), hint="carry_masked"))
            return out
        body, bouts = ctx.subgraph_with(masked_step, inputs=state)
    else:
        body, bouts = ctx.subgraph(p["body_jaxpr"], [*bconsts, *state], inputs=state)
    if _failed(couts) or _failed(bouts):
        return [Poison() for _ in eqn.outvars]
    _check_carries("lax.while_loop", avals, bouts, ctx)
    _untangle(body, len(state))
    op = Loop([ctx.tensor(c) for c in carry], body=body, cond=cond, n_carry=len(state))
    op.refresh()
    return _results(ctx, op, "while")


@handles(lax.scan_p, params=("jaxpr", "length", "reverse", "num_consts", "num_carry", "linear", "unroll",
                             "_split_transpose"))
def _scan(ctx, eqn, *args):
    # One C++ loop over the body; `unroll` is a scheduling hint for XLA and changes no value.
    p = eqn.params
    length, nc, ncar = int(p["length"]), int(p["num_consts"]), int(p["num_carry"])
    consts, carry, xs = args[:nc], list(args[nc:nc + ncar]), list(args[nc + ncar:])
    invars = p["jaxpr"].jaxpr.invars
    state = _locals(ctx, [v.aval for v in invars[nc:nc + ncar]], "carry")
    slices = _locals(ctx, [v.aval for v in invars[nc + ncar:]], "x_step", kind="slice")
    body, outs = ctx.subgraph(p["jaxpr"], [*consts, *state, *slices], inputs=[*state, *slices])
    if _failed(outs):
        return [Poison() for _ in eqn.outvars]
    _check_carries("lax.scan", [v.aval for v in invars[nc:nc + ncar]], outs[:ncar], ctx)
    _untangle(body, ncar)
    op = Loop([ctx.tensor(c) for c in carry] + [ctx.tensor(x) for x in xs], body=body, n_carry=ncar,
              n_xs=len(xs), length=length, reverse=bool(p["reverse"]))
    op.refresh()
    return _results(ctx, op, "scan")


# ---------------------------------------------------------------------------------------------
# Test cases (see cases.py)
import jax   # noqa: E402
import jax.numpy as _jnp   # noqa: E402

from .cases import Case, f32, i32   # noqa: E402


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


def _scan_sum(xs, **kw):
    return lax.scan(lambda c, x: (c * 0.9 + x, c * x), _jnp.full(xs.shape[1:], 0.5, xs.dtype), xs, **kw)


def _carries_consts_ints(p, xs):
    """Several carries of three dtypes, a weight read in the body, a y that is the old carry."""
    def step(c, x):
        h, n, seen = c
        h2 = _jnp.tanh(h @ p + x)
        return (h2, n + (x.sum() > 0).astype("int32"), seen | (x > 1.0)), (h, n)
    return lax.scan(step, (_jnp.zeros(3, "float32"), _jnp.int32(0), _jnp.zeros(3, bool)), xs)


def _swap(xs):
    return lax.scan(lambda c, x: ((c[1] + x, c[0]), c[0] - c[1]), (_jnp.ones(2, "float32"), -_jnp.ones(2, "float32")),
                    xs)


def _nested(xs):
    def outer(c, row):
        inner, ys = lax.scan(lambda a, v: (a + v * c, a), _jnp.float32(0.0), row)
        return c * 0.5 + inner, ys[::-1]
    return lax.scan(outer, _jnp.float32(1.0), xs, reverse=True)


def _attend(p, xs):
    """Dense + bias + softmax in a body: the fusion passes must fire inside loops too."""
    def step(c, x):
        s = jax.nn.softmax(_jnp.concatenate([c, x]) @ p["w"] + p["b"])
        return s * c.sum() + 0.1, s
    return lax.scan(step, _jnp.ones(3, "float32"), xs)


def _until_big(x):
    """Doubles until the sum passes 100: the trip count depends on the input."""
    return lax.while_loop(lambda c: c[1].sum() < 100.0, lambda c: (c[0] + 1, c[1] * 2.0 + 0.5),
                          (_jnp.int32(0), _jnp.abs(x)))


def _switch(i, x):
    return lax.switch(i[0], [lambda a: a + 1.0, lambda a: _jnp.sin(a) * 3.0, lambda a: a @ a.T @ a], x)


def _rnn_loss(p, xs):
    h, ys = _rnn(p, xs)
    return (h ** 2).sum() + (ys * xs[:, :, :1]).sum()


_RNN = {"wx": f32(3, 4, scale=0.5), "wh": f32(4, 4, scale=0.5)}
LOOP = dict(ops=("Loop",), no_ops=("Concat",))
CASES = [
    Case("jit_nested", jax.jit(lambda x: jax.jit(_jnp.sin)(x) * 2.0), (f32(3, 4),), ("jit", "sin"), ops=("Sin", "Mul")),
    Case("closed_call", lambda x: _closed_cos(x) * 2.0, (f32(3, 4),), ("closed_call",)),
    Case("while_counter_and_tensor", lambda x: lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, _jnp.sin(c[1])),
                                                              (0, x))[1], (f32(3, 4),), ("while",), **LOOP),
    Case("custom_jvp_call", jax.nn.relu6, (f32(3, 4, scale=5.0),), ("custom_jvp_call",)),
    Case("custom_vjp_call", _clip_grad, (f32(3, 4),), ("custom_vjp_call",)),
    Case("remat", jax.checkpoint(lambda x: _jnp.sin(x) * _jnp.cos(x)), (f32(3, 4),), ("remat2",)),
    Case("cond_static_predicate", lambda x: lax.cond(True, lambda a: a + 1.0, lambda a: a - 1.0, x),
         (f32(3, 4),), ("cond",), no_ops=("If", "Switch")),
    Case("fori_loop_counted", lambda x: lax.fori_loop(0, 3, lambda i, a: a * 0.5 + _jnp.sin(a), x),
         (f32(3, 4),), ("scan",), **LOOP),
    Case("scan_rnn", _rnn, (f32(5, 1, 3),), ("scan", "dot_general"),
         params={"wx": f32(3, 4, scale=0.5), "wh": f32(4, 4, scale=0.5)}, ops=("Loop", "MatMul", "Tanh"),
         no_ops=("Concat",)),
    Case("scan_reverse", lambda xs: lax.scan(lambda c, x: (c + x, c * x), _jnp.zeros(3, "float32"), xs, reverse=True),
         (f32(4, 3),), ("scan",), **LOOP),
    Case("scan_length_1", _scan_sum, (f32(1, 3),), ("scan",), **LOOP),
    Case("scan_length_0", lambda x, xs: lax.scan(lambda c, v: (c * v, c), x, xs), (f32(3), f32(0, 3)), ("scan",),
         **LOOP),
    Case("scan_length_2_reverse", lambda xs: _scan_sum(xs, reverse=True), (f32(2, 2, 3),), ("scan",), **LOOP),
    Case("scan_length_2000", _scan_sum, (f32(2000, 3),), ("scan",), atol=1e-4, **LOOP),
    Case("scan_unroll_param", lambda xs: _scan_sum(xs, unroll=4), (f32(9, 2),), ("scan",), **LOOP),
    Case("scan_carries_consts_ints_bools", _carries_consts_ints, (f32(6, 3),), ("scan",), params=f32(3, 3, scale=0.5),
         **LOOP),
    Case("scan_swapped_carries", _swap, (f32(5, 2),), ("scan",), **LOOP),
    Case("scan_nested_in_reverse_scan", _nested, (f32(4, 3),), ("scan",), **LOOP),
    Case("scan_body_fuses_gemm_softmax", _attend, (f32(4, 2),), ("scan", "dot_general"),
         params={"w": f32(5, 3), "b": f32(3)}, ops=("Loop", "Gemm", "Softmax"), no_ops=("MatMul", "Exp")),
    Case("scan_int_sequence", lambda xs: lax.scan(lambda c, x: (c * 3 + x, c % 7), _jnp.int32(1), xs),
         (i32(5, high=4),), ("scan",), **LOOP),
    Case("fori_loop_1000", lambda x: lax.fori_loop(0, 1000, lambda i, a: a * 0.99 + _jnp.sin(i * 0.01), x),
         (f32(2, 3),), ("scan",), atol=1e-4, **LOOP),
    Case("fori_loop_runtime_bound", lambda n, x: lax.fori_loop(0, n[0], lambda i, a: a * 0.5 + i, x),
         (np.array([5], np.int32), f32(3)), ("while",), **LOOP),
    Case("fori_loop_reads_row_i", lambda x: lax.fori_loop(0, 5, lambda i, a: a * 0.5 + x[i], _jnp.zeros(4)),
         (f32(5, 4),), ("scan", "dynamic_slice"), ops=("Loop", "DynamicSlice"), no_ops=("Concat",)),
    Case("fori_loop_writes_row_i",
         lambda x: lax.fori_loop(0, 4, lambda i, a: lax.dynamic_update_slice(a, _jnp.sin(a[i][None] + i), (i + 1, 0)), x),
         (f32(5, 3),), ("scan", "dynamic_update_slice"), ops=("Loop", "DynamicUpdateSlice")),
    Case("while_data_dependent", _until_big, (f32(2, 3),), ("while",), **LOOP),
    Case("cond_runtime_predicate", lambda x: lax.cond(x.sum() > 0, lambda a: a * 2.0, lambda a: _jnp.cos(a), x),
         (f32(3, 4),), ("cond",), ops=("If", "Mul", "Cos")),
    Case("switch_runtime_index", _switch, (np.array([1], np.int32), f32(3, 3)), ("cond",), ops=("Switch",)),
]
# second shapes for the rules above (every primitive is tested on at least two shapes)
CASES += [
    Case("closed_call_rank3", lambda x: _closed_cos(x) + x, (f32(2, 3, 4),), ("closed_call",)),
    Case("custom_vjp_call_rank1", lambda x: _clip_grad(x) * x, (f32(7),), ("custom_vjp_call",)),
    Case("remat_dense", lambda p, x: jax.checkpoint(lambda a: _jnp.tanh(a @ p))(x), (f32(2, 5),), ("remat2",),
         params=f32(5, 3)),
    Case("switch_static_index", lambda x: lax.switch(2, [lambda a: a, lambda a: -a, lambda a: a * 3.0], x),
         (f32(2, 3, 4),), ("cond",), no_ops=("If", "Switch")),
    Case("while_counter_rank1", lambda x: lax.while_loop(lambda c: c[0] < 5, lambda c: (c[0] + 2, c[1] * 0.9 + 1.0),
                                                         (0, x))[1], (f32(6),), ("while",), **LOOP),
    # vmap of a data-dependent while_loop: a batched predicate; finished rows keep their values
    Case("while_vmapped_predicate", jax.vmap(lambda v: lax.while_loop(
        lambda s: (s[0] < 6) & (_jnp.max(_jnp.abs(s[1])) < 4.0), lambda s: (s[0] + 1, s[1] * 2.0), (0, v))[1]),
        (f32(5, 3),), ("while",), **LOOP),
    Case("while_vmapped_predicate_dynamic_batch", jax.vmap(lambda v: lax.while_loop(
        lambda s: _jnp.sum(s * s) < 9.0, lambda s: s * 1.5 + 0.25, v)), (f32(4, 2),), ("while",), batch="dynamic",
        **LOOP),
    # the gradient of a scan is a second, reverse scan over the saved residuals
    Case("grad_rnn_scan_wrt_params", jax.grad(_rnn_loss), (f32(7, 1, 3),), ("scan", "add_any"), params=_RNN, **LOOP),
    Case("grad_rnn_scan_wrt_input", jax.grad(_rnn_loss, argnums=1), (f32(7, 1, 3),), ("scan",), params=_RNN, **LOOP),
]
