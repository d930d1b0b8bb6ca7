"""Shape and data-movement primitives."""
from __future__ import annotations

import numpy as np
from jax import lax

from ..ir.ops.elementwise import DimValue, Iota
from ..ir.ops.gather import DynamicSlice, DynamicUpdateSlice
from ..ir.ops.movement import Concat, Expand, Pad, Reshape, Slice, Transpose, reverse
from ..ir.tensor import numel
from ..values import Const, Scalar, Unsupported
from . import handles, out_aval


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


@handles(lax.tile_p, params=("reps",))   # jnp.tile
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


@handles(lax.stack_p, params=("axis",))
def _stack_rule(ctx, eqn, *xs):
    # jnp.stack (and Keras' ops.stack, e.g. TimeDistributed): each operand gains a size-1 axis,
    # then one Concat along it.
    axis, shape = int(eqn.params["axis"]), tuple(out_aval(eqn).shape)
    parts = [ctx.tensor(reshape_to(ctx, x, shape[:axis] + (1,) + shape[axis + 1:])) for x in xs]
    return parts[0] if len(parts) == 1 else ctx.add(Concat(parts, axis=axis), hint="stack")


@handles(lax.unstack_p, params=("axis",))
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


# ---------------------------------------------------------------------------------------------
# Test cases (see cases.py)
import jax.numpy as _jnp   # noqa: E402

from .cases import Case, f32, i32   # noqa: E402

CASES = [
    Case("reshape_flatten", lambda x: _jnp.tanh(x).reshape(2, -1), (f32(2, 3, 4),), ("reshape",)),
    Case("reshape_of_transpose", lambda x: x.T.reshape(2, 12) * 2.0, (f32(6, 4),), ("reshape", "transpose")),
    Case("squeeze_expand_dims", lambda x: _jnp.expand_dims(_jnp.squeeze(x, 1) * 2.0, 0) + 1.0, (f32(3, 1, 4),),
         ("squeeze", "broadcast_in_dim")),
    Case("broadcast_in_dim", lambda x: _jnp.broadcast_to(x[:, None, :], (3, 5, 4)) * 1.0, (f32(3, 4),),
         ("broadcast_in_dim",)),
    Case("broadcast_scalar_and_col", lambda x, s: x + _jnp.broadcast_to(s, x.shape) + x[:, :1],
         (f32(3, 4), f32()), ("broadcast_in_dim",)),
    Case("transpose_3d", lambda x: _jnp.transpose(x, (2, 0, 1)) + 0.5, (f32(2, 3, 4),), ("transpose",)),
    Case("transpose_4d", lambda x: _jnp.transpose(x, (0, 3, 1, 2)) * 1.5, (f32(2, 3, 4, 5),), ("transpose",)),
    Case("concatenate", lambda a, b: _jnp.concatenate([a, b, a], axis=1), (f32(2, 3), f32(2, 5)), ("concatenate",)),
    Case("concatenate_const", lambda a: _jnp.concatenate([a, _jnp.ones((1, 3), "float32")], axis=0),
         (f32(2, 3),), ("concatenate",)),
    Case("slice_steps", lambda x: x[1:5:2, ::3] * 1.0, (f32(6, 7),), ("slice",)),
    Case("slice_3d", lambda x: lax.slice(x, (0, 1, 2), (2, 3, 5), (1, 1, 2)), (f32(3, 4, 6),), ("slice",)),
    Case("dynamic_slice_const", lambda x: lax.dynamic_slice(x, (1, 2), (2, 3)), (f32(4, 6),), ("dynamic_slice",)),
    Case("dynamic_slice_clamped", lambda x: lax.dynamic_slice(x, (3, 5), (2, 3)), (f32(4, 6),), ("dynamic_slice",)),
    Case("dynamic_slice_runtime_start", lambda x, i: lax.dynamic_slice(x, (i[0], 2), (2, 3)),
         (f32(5, 6), np.array([2], np.int32)), ("dynamic_slice",), ops=("DynamicSlice",)),
    Case("dynamic_slice_runtime_clamped", lambda x, i: lax.dynamic_slice(x, (i[0], i[1] * 3), (2, 4)),
         (f32(4, 6), np.array([-3, 5], np.int32)), ("dynamic_slice",), ops=("DynamicSlice",)),
    Case("dynamic_update_slice_runtime", lambda x, u, i: lax.dynamic_update_slice(x, u * 2.0, (i[0], 1)),
         (f32(5, 4), f32(2, 3), np.array([4], np.int32)), ("dynamic_update_slice",), ops=("DynamicUpdateSlice",)),
    Case("dynamic_update_slice_const_int", lambda x, u: lax.dynamic_update_slice(x, u, (1, -2)),
         (i32(4, 5), i32(2, 2)), ("dynamic_update_slice",)),
    Case("pad_constant", lambda x: _jnp.pad(x, ((1, 2), (0, 3))), (f32(3, 4),), ("pad",)),
    Case("pad_value_interior_negative", lambda x: lax.pad(x, -1.5, ((1, -1, 1), (-2, 2, 0))), (f32(4, 5),), ("pad",)),
    # found by tests/fuzz: the crop removes every input element, so the input is never read
    # (an unused C++ parameter, an error under -Werror)
    Case("pad_crops_whole_input", lambda x: lax.pad(x, -1.5, ((-1, 2, 0), (-1, 2, 0))), (f32(1, 3),), ("pad",)),
    # found by tests/fuzz: a zero-size slice emitted `i < 0` on a size_t (-Wtype-limits, an error under -Werror)
    Case("slice_empty_then_concat", lambda x: _jnp.concatenate([x[:, 2:2], x], axis=1) * 2.0, (f32(3, 4),),
         ("slice", "concatenate")),
    # found by tests/fuzz: an empty input concatenated to another is never read (unused parameter)
    Case("concatenate_empty_input", lambda x, e: _jnp.concatenate([x, e], axis=1) + 1.0, (f32(3, 2), f32(3, 0)),
         ("concatenate",)),
    Case("pad_runtime_value", lambda x, v: lax.pad(x, v, ((2, 0, 0), (1, 1, 2))), (f32(3, 3), f32()), ("pad",)),
    Case("rev", lambda x: x[::-1, :, ::-1] * 1.0, (f32(3, 4, 5),), ("rev",)),
    Case("split", lambda x: tuple(a * 2.0 for a in _jnp.split(x, [1, 4], axis=1)), (f32(3, 6),), ("split",)),
    Case("iota_arange", lambda x: x * _jnp.arange(4, dtype="float32") + _jnp.arange(3.0)[:, None], (f32(3, 4),),
         ("iota",)),
    Case("copy", lambda x: _jnp.copy(x) * 2.0, (f32(3, 4),), ("copy",)),
    Case("stop_gradient", lambda x: lax.stop_gradient(x) + x, (f32(3, 4),), ("stop_gradient",)),
    Case("int_reshape_concat", lambda a, b: _jnp.concatenate([a.reshape(2, 6), b], 0), (i32(3, 4), i32(1, 6)),
         ("reshape", "concatenate")),
]
# second shapes for the rules above (every primitive is tested on at least two shapes)
CASES += [
    Case("tile_2d", lambda x: _jnp.tile(x, (2, 3)) * 2.0, (f32(2, 3),), ("tile",), ops=("Expand",)),
    Case("tile_3d_int_one_axis", lambda x: _jnp.tile(x, (1, 3, 1)) + 1, (i32(2, 2, 4),), ("tile",)),
    Case("rev_rank1_and_4d", lambda a, b: (a[::-1] + 0.0, lax.rev(b, (1, 3))), (f32(7), f32(2, 3, 2, 4)), ("rev",)),
    Case("split_rank3", lambda x: tuple(a - 1.0 for a in _jnp.split(x, 3, axis=2)), (f32(2, 2, 6),), ("split",)),
    Case("iota_2d_int", lambda x: x + lax.broadcasted_iota("int32", (3, 4), 1) * 2, (i32(3, 4),), ("iota",)),
    Case("copy_rank1", lambda x: lax.copy_p.bind(x) + 1.0, (f32(5),), ("copy",)),
    Case("stop_gradient_3d", lambda x: x * lax.stop_gradient(_jnp.tanh(x)), (f32(2, 3, 4),), ("stop_gradient",)),
    Case("stack_axis0_with_const", lambda a, b: _jnp.stack([a, _jnp.tanh(b), _jnp.ones((2, 3), "float32")]),
         (f32(2, 3), f32(2, 3)), ("stack",)),
    Case("stack_last_axis_3d", lambda a, b: _jnp.stack([a, b], axis=-1) * 2.0, (f32(2, 3, 4), f32(2, 3, 4)),
         ("stack",)),
    Case("stack_single_int", lambda a: _jnp.stack([a + 1], axis=1), (i32(3, 4),), ("stack",)),
    Case("unstack_axis1", lambda x: tuple(v * 2.0 for v in _jnp.unstack(x, axis=1)), (f32(2, 3, 4),), ("unstack",)),
    Case("unstack_axis0_rank2", lambda x: _jnp.unstack(_jnp.tanh(x)), (f32(3, 5),), ("unstack",)),
    # lax.associative_scan lowers to strided slices, pads and the combining op: no rule of its own
    Case("associative_scan_add", lambda x: lax.associative_scan(_jnp.add, x, axis=1), (f32(3, 11),),
         ("slice", "pad", "add", "concatenate")),
    Case("associative_scan_max_reverse", lambda x: lax.associative_scan(_jnp.maximum, x, axis=0, reverse=True),
         (f32(6, 4),), ("slice", "pad", "max", "rev")),
    # batch="dynamic": the batch as a run-time value
    Case("dim_as_value_mean_over_batch", lambda x: _jnp.mean(x, axis=0) - x, (f32(5, 3),), ("dim_as_value",),
         batch="dynamic"),
    Case("dim_as_value_last_row", lambda x: x[-1] * 2.0 + x[0], (f32(4, 6),), ("dim_as_value",), batch="dynamic"),
    Case("iota_reverse_the_batch", lambda x: x[::-1] * 2.0 + _jnp.arange(x.shape[0], dtype="float32")[:, None],
         (f32(5, 3),), ("iota",), batch="dynamic"),
]
