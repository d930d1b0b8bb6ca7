"""Test cases of the control primitive rules (jaxpr2sofie/primitives/control.py)."""
from __future__ import annotations

import jax
import jax.extend.core.primitives as P
import jax.numpy as _jnp
import numpy as np
from jax import lax

from jaxpr2sofie.lowering import bind

from . import Case, f32, i32


@jax.custom_vjp
def _clip_grad(x):
    return _jnp.tanh(x) * 2.0


_clip_grad.defvjp(lambda x: (_clip_grad(x), x), lambda x, g: (g,))


def _closed_cos(x):
    # closed_call has no public wrapper; bind it the way JAX's own evaluator does
    (out,) = bind(P.closed_call_p, (x,), {"call_jaxpr": jax.make_jaxpr(_jnp.cos)(x)})
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
