"""Test cases of the elementwise primitive rules (jaxpr2sofie/primitives/elementwise.py)."""
from __future__ import annotations

import jax
import jax.numpy as _jnp
from jax import lax
from jax import nn as _nn

from . import Case, boolean, f32, i32


# Each unary rule runs on a rank-2 and a rank-3 input; binary rules
# also with a broadcast operand (row bias), a scalar literal, and a non-contiguous view.



def _mlp_loss(p, x):
    h = _jnp.tanh(x @ p["w1"] + p["b1"])
    return _jnp.sum((h @ p["w2"] + h[:, :2]) ** 2)


_MLP = {"w1": f32(4, 6, scale=0.5), "b1": f32(6), "w2": f32(6, 2, scale=0.5)}

_POS = dict(low=0.1, high=3.0)
_UNARY_CASES = {
    "neg": (lax.neg, {}), "exp": (lax.exp, {}), "exp2": (lax.exp2, {}), "log": (lax.log, _POS),
    "log1p": (lax.log1p, _POS), "expm1": (lax.expm1, {}), "sqrt": (lax.sqrt, _POS), "rsqrt": (lax.rsqrt, _POS),
    "cbrt": (lax.cbrt, {}), "tanh": (lax.tanh, {}), "logistic": (lax.logistic, {}), "erf": (lax.erf, {}),
    "erfc": (lax.erfc, {}),
    "abs": (lax.abs, {}), "sign": (lax.sign, {}), "floor": (lax.floor, {}), "ceil": (lax.ceil, {}),
    "sin": (lax.sin, {}), "cos": (lax.cos, {}), "tan": (lax.tan, dict(low=-1.2, high=1.2)),
    "atan": (lax.atan, {}), "sinh": (lax.sinh, {}), "cosh": (lax.cosh, {}), "asinh": (lax.asinh, {}),
    "acosh": (lax.acosh, dict(low=1.1, high=4.0)), "atanh": (lax.atanh, dict(low=-0.9, high=0.9)),
    "asin": (lax.asin, dict(low=-0.9, high=0.9)), "acos": (lax.acos, dict(low=-0.9, high=0.9)),
    "square": (lax.square, {}), "is_finite": (lax.is_finite, {}),
}
CASES = []
for _name, (_f, _rng) in _UNARY_CASES.items():
    for _shape in ((3, 5), (2, 3, 4)):
        CASES.append(Case(f"{_name}_{'x'.join(map(str, _shape))}", _f, (f32(*_shape, scale=2.0, **_rng),), (_name,)))

_BINARY = {"add": lax.add, "sub": lax.sub, "mul": lax.mul, "div": lax.div, "max": lax.max, "min": lax.min,
           "pow": lax.pow, "atan2": lax.atan2, "rem": lax.rem}
for _name, _f in _BINARY.items():
    _a = f32(4, 6, low=0.5, high=2.0) if _name == "pow" else f32(4, 6)
    _b = f32(4, 6, low=0.5, high=2.0) if _name in ("div", "rem") else f32(4, 6)
    CASES += [
        Case(f"{_name}_same_shape", _f, (_a, _b), (_name,)),
        # a row vector broadcast over rows, and the transposed (non-contiguous) view of an input
        Case(f"{_name}_broadcast_row", lambda a, b, _f=_f: _f(a, _jnp.broadcast_to(b[0], a.shape)), (_a, _b),
             (_name, "broadcast_in_dim")),
        Case(f"{_name}_transposed_operand", lambda a, b, _f=_f: _f(a.T, b.T * 1.0), (_a, _b), (_name, "transpose")),
        Case(f"{_name}_scalar_literal", lambda a, _f=_f: _f(a, _jnp.float32(1.5)), (_a,), (_name,)),
    ]
# found by tests/fuzz: folding a custom_jvp_call whose operands are all weights fails
CASES.append(Case("relu_of_weight_folded", lambda p, x: _nn.relu(p["k"]) + x, (f32(2, 3),), ("custom_jvp_call", "add"),
                  params={"k": f32(2, 3)}))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    _a = i32(3, 4, high=3).astype("float32")
    CASES.append(Case(f"{_name}_compare", getattr(lax, _name), (_a, i32(3, 4, high=3).astype("float32")), (_name,)))
    CASES.append(Case(f"{_name}_compare_int", getattr(lax, _name), (i32(3, 4, high=3), i32(3, 4, high=3)), (_name,)))
for _name in ("and", "or", "xor"):
    _f = getattr(lax, "bitwise_" + _name)
    CASES.append(Case(f"{_name}_bool", _f, (boolean(3, 4), boolean(3, 4)), (_name,)))
    CASES.append(Case(f"{_name}_int", _f, (i32(3, 4, high=64), i32(3, 4, high=64)), (_name,)))
CASES += [
    Case("not_bool", lax.bitwise_not, (boolean(3, 4),), ("not",)),
    Case("int_arith", lambda a, b: (a * b - a // (b + 1), a % (b + 1), _jnp.maximum(a, b), _jnp.minimum(a, b),
                                    _jnp.abs(a - b)),
         (i32(3, 4, low=-5, high=5), i32(3, 4, low=0, high=5)), ("mul", "sub", "div", "rem", "max", "min", "abs")),
    Case("relu", _nn.relu, (f32(4, 7),), ("max", "custom_jvp_call"), ops=("Relu",), no_ops=("Max",)),
    Case("integer_pow", lambda x: (x ** 2, x ** 3, x ** -2, lax.integer_pow(x, 0)), (f32(3, 4, low=0.5, high=1.5),),
         ("integer_pow",)),
    Case("round_half_even", _jnp.round, (_jnp.array([[0.5, 1.5, 2.5, -0.5], [-1.5, 1.2, -2.7, 3.49]], "float32"),),
         ("round",)),
    Case("round_away", lambda x: lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO),
         (_jnp.array([[0.5, 1.5, 2.5, -0.5], [-1.5, 1.2, -2.7, 3.49]], "float32"),), ("round",)),
    Case("select_n_bool", lambda p, a, b: lax.select_n(p, a, b), (boolean(3, 5), f32(3, 5), f32(3, 5)), ("select_n",)),
    Case("select_n_int3", lambda w, a, b, c: lax.select_n(w, a, b, c), (i32(3, 5, high=3), f32(3, 5), f32(3, 5),
                                                                         f32(3, 5)), ("select_n",)),
    Case("where", lambda x: _jnp.where(x > 0, x, 0.1 * x), (f32(4, 6),), ("select_n", "gt")),
    Case("clamp", lambda x: lax.clamp(-0.5, x, 0.7), (f32(4, 6),), ("clamp",)),
    Case("clip", lambda x: _jnp.clip(x, -1.0, 1.0), (f32(4, 6),), ("max", "min")),
    Case("convert_float_int_bool", lambda x: (x.astype("int32"), (x * 3).astype("int32").astype("float32"),
                                              x.astype(bool), (x > 0).astype("float32")),
         (f32(3, 4, scale=3.0),), ("convert_element_type",)),
    # activations, through the primitives they lower to
    Case("gelu_tanh", lambda x: _nn.gelu(x, approximate=True), (f32(4, 8, scale=2.0),), ("tanh", "integer_pow")),
    Case("gelu_erf", lambda x: _nn.gelu(x, approximate=False), (f32(4, 8, scale=2.0),), ("erfc",)),
    Case("silu", _nn.silu, (f32(4, 8, scale=2.0),), ("logistic",)),
    Case("elu", _nn.elu, (f32(4, 8, scale=2.0),), ("expm1", "select_n")),
    Case("selu", _nn.selu, (f32(4, 8, scale=2.0),), ("expm1", "select_n")),
    Case("leaky_relu", _nn.leaky_relu, (f32(4, 8, scale=2.0),), ("select_n",)),
    Case("softplus", _nn.softplus, (f32(4, 8, scale=4.0),), ("log1p",)),
    Case("softmax", lambda x: _nn.softmax(x, axis=-1), (f32(3, 10, scale=3.0),), ("reduce_max", "exp", "reduce_sum"),
         ops=("Softmax",), no_ops=("Exp",)),
    Case("log_softmax", lambda x: _nn.log_softmax(x, axis=1), (f32(2, 6, 3, scale=3.0),), ("reduce_max", "log")),
    Case("hard_sigmoid", _nn.hard_sigmoid, (f32(4, 8, scale=4.0),), ("min", "max")),
    Case("sigmoid", _nn.sigmoid, (f32(4, 8, scale=4.0),), ("logistic",)),
]
# second shapes for the rules above (every primitive is tested on at least two shapes)
CASES += [
    Case("clamp_arrays_3d", lambda lo, x, hi: lax.clamp(lo, x, hi), (f32(2, 3, 4, low=-1.0, high=-0.2), f32(2, 3, 4),
                                                                   f32(2, 3, 4, low=0.2, high=1.0)), ("clamp",)),
    Case("not_int_rank1", lambda x: lax.bitwise_not(x), (i32(6, low=-50, high=50),), ("not",)),
    Case("convert_int_to_float_3d", lambda x: x.astype("float32") * 0.5, (i32(2, 3, 4, low=-9, high=9),),
         ("convert_element_type",)),
    # gradients (jax.grad) add cotangents with add_any
    Case("grad_mlp_wrt_input", jax.grad(_mlp_loss, argnums=1), (f32(3, 4),), ("add_any", "pad"), params=_MLP),
    Case("grad_mlp_wrt_params", jax.grad(_mlp_loss), (f32(3, 4),), ("add_any", "dot_general"), params=_MLP),
]
# chains of elementwise operators run as one loop (the fuse_elementwise pass); the steps are still
# listed, so a case can name them and that the ops it must not have are gone
CASES += [
    Case("fused_gelu_tanh", lambda x: _nn.gelu(x, approximate=True), (f32(4, 40, scale=3.0),), ("tanh", "mul"),
         ops=("FusedElementwise", "Tanh")),
    Case("fused_affine_relu_broadcast", lambda x, r: _nn.relu(x * r + 0.25) - r, (f32(3, 5, 8), f32(8)),
         ("mul", "add", "max", "sub"), ops=("FusedElementwise", "Relu")),
    Case("fused_mixed_dtypes", lambda x, y: (_jnp.where((x > 0) & (y < 1), x * 2, y - 1).astype("int32") + 3),
         (f32(4, 6, scale=2.0), f32(4, 6, scale=2.0)), ("gt", "and", "select_n", "convert_element_type"),
         ops=("FusedElementwise", "Where", "Cast")),
    Case("fused_shared_operand_stays_in_memory", lambda x: (x * 2 + 1) * (x * 2 - 1), (f32(5, 7),),
         ("mul", "add", "sub"), ops=("FusedElementwise", "Mul")),
]
