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


# jax.extend exports remat_p from jax 0.9; the primitive (jax.checkpoint's "remat2") is older
@handles(getattr(P, "remat_p", "remat2"), params=("jaxpr", "prevent_cse", "differentiated", "policy"))
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
