"""Test cases of the shape primitive rules (jaxpr2sofie/primitives/shape.py)."""
from __future__ import annotations

import jax.numpy as _jnp
import numpy as np
from jax import lax

from . import Case, f32, i32


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
    # lax.slice itself: jax < 0.10 lowers strided indexing (x[1:5:2, ::3]) to a gather instead
    Case("slice_steps", lambda x: lax.slice(x, (1, 0), (5, 7), (2, 3)) * 1.0, (f32(6, 7),), ("slice",)),
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
