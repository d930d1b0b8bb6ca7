"""Shape and data-movement primitives."""
from __future__ import annotations

import numpy as np
from jax import lax

from ..ir.ops.elementwise import DimValue, Iota
from ..ir.ops.gather import DynamicSlice, DynamicUpdateSlice
from ..ir.ops.movement import Concat, Expand, Pad, Reshape, Slice, Transpose, reverse
from ..ir.tensor import numel
from ..values import Const, Scalar, Unsupported
from . import handles, if_defined, out_aval


def reshape_to(ctx, x, shape):
    if ctx.shape(x) == tuple(shape):
        return x
    return ctx.add(Reshape([ctx.tensor(x)], shape=tuple(shape)), hint="reshape")


@handles(lax.reshape_p, params=("new_sizes", "dimensions"))
def _reshape(ctx, eqn, x):
    if eqn.params.get("dimensions") is not None:
        raise Unsupported("reshape with a `dimensions` permutation (use an explicit transpose)")
    return reshape_to(ctx, x, eqn.params["new_sizes"])


@handles(lax.squeeze_p, params=("dimensions",))
def _squeeze(ctx, eqn, x):
    return reshape_to(ctx, x, out_aval(eqn).shape)


@handles(lax.broadcast_in_dim_p, params=("shape", "broadcast_dimensions"))
def _broadcast_in_dim(ctx, eqn, x, *dyn):
    if dyn:
        raise Unsupported("broadcast to a shape computed at run time")
    shape = tuple(eqn.params["shape"])
    if numel(shape) == numel(ctx.shape(x)):   # only adds size-1 dimensions
        return reshape_to(ctx, x, shape)
    return ctx.add(Expand([ctx.tensor(x)], shape=shape, bdims=tuple(eqn.params["broadcast_dimensions"])))


@handles(*if_defined(lax, "tile_p"), params=("reps",))   # jnp.tile, jax >= 0.9 (before: broadcast, reshape)
def _tile(ctx, eqn, x):
    # repeat each dimension d_k r_k times: broadcast (d0, d1, ..) to (r0, d0, r1, d1, ..), then merge pairs
    shape, reps = ctx.shape(x), tuple(int(r) for r in eqn.params["reps"])
    if len(reps) != len(shape):
        raise Unsupported(f"tile with {len(reps)} repetitions for a rank-{len(shape)} operand")
    if all(r == 1 for r in reps):
        return x
    wide = tuple(v for r, d in zip(reps, shape) for v in (r, d))
    spread = ctx.add(Expand([ctx.tensor(x)], shape=wide, bdims=tuple(range(1, 2 * len(shape), 2))))
    return reshape_to(ctx, spread, out_aval(eqn).shape)


@handles(lax.transpose_p, params=("permutation",))
def _transpose(ctx, eqn, x):
    perm = tuple(eqn.params["permutation"])
    if perm == tuple(range(len(perm))):
        return x
    return ctx.add(Transpose([ctx.tensor(x)], perm=perm))


@handles(lax.concatenate_p, params=("dimension",))
def _concatenate(ctx, eqn, *xs):
    return ctx.add(Concat([ctx.tensor(x) for x in xs], axis=int(eqn.params["dimension"])))


def slice_of(ctx, x, starts, limits, steps=None):
    steps = tuple(steps or (1,) * len(starts))
    shape = ctx.shape(x)
    if tuple(starts) == (0,) * len(shape) and tuple(limits) == tuple(shape) and set(steps) <= {1}:
        return x
    return ctx.add(Slice([ctx.tensor(x)], starts=tuple(starts), limits=tuple(limits), steps=steps), hint="slice")


def slice_axis(ctx, x, axis: int, start: int, stop: int):
    """x[..., start:stop, ...] along one axis: the one helper unstack, split and friends share."""
    shape = ctx.shape(x)
    starts, limits = [0] * len(shape), list(shape)
    starts[axis], limits[axis] = start, stop
    return slice_of(ctx, x, starts, limits)


@handles(lax.slice_p, params=("start_indices", "limit_indices", "strides"))
def _slice(ctx, eqn, x):
    p = eqn.params
    return slice_of(ctx, x, p["start_indices"], p["limit_indices"], p["strides"])


def _starts(ctx, starts):
    """Per dimension a literal start (known now) or the name of a run-time scalar tensor."""
    return tuple(int(s.array) if isinstance(s, Const) else ctx.tensor(s) for s in starts)


@handles(lax.dynamic_slice_p, params=("slice_sizes",))
def _dynamic_slice(ctx, eqn, x, *starts):
    shape, sizes = ctx.shape(x), tuple(eqn.params["slice_sizes"])
    at = _starts(ctx, starts)
    if all(isinstance(s, int) for s in at):
        # XLA clamps the start so that the whole slice stays inside the operand.
        begin = [min(max(s, 0), n - k) for s, n, k in zip(at, shape, sizes)]
        return slice_of(ctx, x, begin, [b + k for b, k in zip(begin, sizes)])
    return ctx.add(DynamicSlice([ctx.tensor(x), *[s for s in at if isinstance(s, str)]], starts=at, sizes=sizes))


@handles(lax.dynamic_update_slice_p)
def _dynamic_update_slice(ctx, eqn, x, update, *starts):
    at = _starts(ctx, starts)
    return ctx.add(DynamicUpdateSlice([ctx.tensor(x), ctx.tensor(update), *[s for s in at if isinstance(s, str)]],
                                      starts=at))


@handles(lax.rev_p, params=("dimensions",))
def _rev(ctx, eqn, x):
    dims = tuple(eqn.params["dimensions"])
    if not dims:
        return x
    starts, limits, steps = reverse(ctx.shape(x), dims)
    return ctx.add(Slice([ctx.tensor(x)], starts=starts, limits=limits, steps=steps), hint="rev")


@handles(*if_defined(lax, "stack_p"), params=("axis",))   # jax >= 0.10.1
def _stack_rule(ctx, eqn, *xs):
    # jnp.stack (and Keras' ops.stack, e.g. TimeDistributed): each operand gains a size-1 axis,
    # then one Concat along it.
    axis, shape = int(eqn.params["axis"]), tuple(out_aval(eqn).shape)
    parts = [ctx.tensor(reshape_to(ctx, x, shape[:axis] + (1,) + shape[axis + 1:])) for x in xs]
    return parts[0] if len(parts) == 1 else ctx.add(Concat(parts, axis=axis), hint="stack")


@handles(*if_defined(lax, "unstack_p"), params=("axis",))   # jax >= 0.10.1
def _unstack_rule(ctx, eqn, x):
    axis, shape = int(eqn.params["axis"]), ctx.shape(x)
    return [reshape_to(ctx, slice_axis(ctx, x, axis, k, k + 1), tuple(v.aval.shape)) for k, v in enumerate(eqn.outvars)]


@handles(lax.split_p, params=("axis", "sizes"))
def _split(ctx, eqn, x):
    axis, outs, at = int(eqn.params["axis"]), [], 0
    for size in eqn.params["sizes"]:
        outs.append(slice_axis(ctx, x, axis, at, at + int(size)))
        at += int(size)
    return outs


@handles(lax.pad_p, params=("padding_config",))
def _pad(ctx, eqn, x, value):
    config = tuple(tuple(int(c) for c in cfg) for cfg in eqn.params["padding_config"])
    if isinstance(value, Const):
        return ctx.add(Pad([ctx.tensor(x)], config=config, value=Scalar(value.array.item(), value.array.dtype.name)))
    return ctx.add(Pad([ctx.tensor(x), value], config=config))


@handles(lax.iota_p, params=("dtype", "shape", "dimension"))
def _iota(ctx, eqn):
    # Has no operands, so it is folded into a constant unless its size is the run-time batch
    # (x[::-1] and argsort along the batch of a batch="dynamic" model)
    p = eqn.params
    return ctx.add(Iota([], shape=tuple(p["shape"]), dimension=int(p["dimension"]), dtype=np.dtype(p["dtype"]).name))


@handles("dim_as_value", params=("dim",))
def _dim_as_value(ctx, eqn):
    # the batch size as a value (jnp.mean over the batch, x[-1]): known only at run time
    dim = eqn.params["dim"]
    if isinstance(dim, int):
        return Const(np.asarray(dim, out_aval(eqn).dtype), "dim")
    return ctx.add(DimValue([], dim=dim, dtype=np.dtype(out_aval(eqn).dtype).name), hint="batch_size")


@handles(lax.copy_p, lax.stop_gradient_p)
def _identity(ctx, eqn, x):
    return x
