"""Whole models written as plain JAX functions over params pytrees, converted, compiled and compared
with JAX; plus a seeded random-composition test of programs nobody tuned the converter for."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr2sofie as j2s

from helpers import assert_close, convert_and_check


def _dense(rng, n_in, n_out):
    # 1/sqrt(fan_in) keeps activations O(1) through the layers.
    return {"kernel": (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            "bias": (0.1 * rng.standard_normal(n_out)).astype(np.float32)}


def _conv_kernel(rng, *shape):
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _inputs(seed, *shape, n=2):
    """The example input and `n` more inputs of the same shape, all seeded."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n + 1)]


def _op_types(m):
    return {op.op_type for op in m.graph.ops}


# --------------------------------------------------------------------------------------------- MLP
def _mlp_params():
    rng = np.random.default_rng(0)
    return {"layers": [_dense(rng, 20, 32), _dense(rng, 32, 32), _dense(rng, 32, 5)]}


def mlp(params, x):
    l0, l1, l2 = params["layers"]
    h = jax.nn.relu(x @ l0["kernel"] + l0["bias"])
    h = jax.nn.gelu(h @ l1["kernel"] + l1["bias"])
    return jax.nn.softmax(h @ l2["kernel"] + l2["bias"], axis=-1)


@pytest.mark.parametrize("batch", [1, 16])
def test_mlp(batch):
    params = _mlp_params()
    x, *more = _inputs(batch, batch, 20)
    m = convert_and_check(mlp, params, x, name="MLP", extra_inputs=more)
    n_values = sum(np.size(v) for v in jax.tree_util.tree_leaves(params))
    assert m.parameter_count() == n_values
    s = m.summary()
    assert "Gemm" in s
    assert s.count("Gemm") >= 3, s
    assert f"{n_values} values" in s
    # the softmax rows of the compiled model sum to one, like JAX's
    y = m.compile()(x)
    np.testing.assert_allclose(y.sum(axis=-1), np.ones(batch), atol=1e-5)


# --------------------------------------------------------------------------------------------- CNN
def _cnn_params():
    rng = np.random.default_rng(1)
    def bias(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    return {"conv1": {"kernel": _conv_kernel(rng, 3, 3, 3, 8), "bias": bias(8)},
            "conv2": {"kernel": _conv_kernel(rng, 3, 3, 8, 12), "bias": bias(12)},
            "head": _dense(rng, 2 * 2 * 12, 10)}


def _conv2d(x, p, strides=(1, 1)):
    y = lax.conv_general_dilated(x, p["kernel"], strides, "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def _max_pool(x, k):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, k, k, 1), "VALID")


def _avg_pool(x, k):
    return lax.reduce_window(x, 0.0, lax.add, (1, k, k, 1), (1, k, k, 1), "VALID") / (k * k)


def cnn(params, x):
    h = jax.nn.relu(_conv2d(x, params["conv1"]))
    h = _max_pool(h, 2)                          # 16x16 -> 8x8
    h = jax.nn.relu(_conv2d(h, params["conv2"]))
    h = _avg_pool(h, 4)                          # 8x8 -> 2x2
    h = h.reshape(h.shape[0], -1)
    return jax.nn.softmax(h @ params["head"]["kernel"] + params["head"]["bias"])


def test_cnn_nhwc():
    x, *more = _inputs(2, 2, 16, 16, 3)
    m = convert_and_check(cnn, _cnn_params(), x, name="CNN", extra_inputs=more)
    s = m.summary()
    for op in ("Conv", "MaxPool", "Gemm"):
        assert op in s, f"{op} missing from summary:\n{s}"
    assert _op_types(m) >= {"Conv", "MaxPool"}
    assert "epilogue=add + relu" in s, f"bias and relu not fused into the convolution:\n{s}"


# ------------------------------------------------------------------------ depthwise-separable CNN
def _dsc_params():
    rng = np.random.default_rng(2)
    c = 6
    return {"stem": _conv_kernel(rng, 3, 3, 3, c),
            "blocks": [{"depthwise": _conv_kernel(rng, 3, 3, 1, c), "pointwise": _conv_kernel(rng, 1, 1, c, c)}
                       for _ in range(2)],
            "head": _dense(rng, c, 4)}


# Batch-norm statistics folded into the function as constants (not params): they reach the
# converter as jaxpr constants, not as named weights.
_BN = np.random.default_rng(20)
_BN_STATS = [{"mean": (0.1 * _BN.standard_normal(6)).astype(np.float32),
              "var": _BN.uniform(0.5, 1.5, 6).astype(np.float32),
              "gamma": _BN.uniform(0.8, 1.2, 6).astype(np.float32),
              "beta": (0.1 * _BN.standard_normal(6)).astype(np.float32)} for _ in range(3)]


def _batch_norm(x, stats):
    scale = stats["gamma"] / np.sqrt(stats["var"] + 1e-3)
    return (x - stats["mean"]) * jnp.asarray(scale) + stats["beta"]


def ds_cnn(params, x):
    dn = ("NHWC", "HWIO", "NHWC")
    c = params["stem"].shape[-1]
    h = lax.conv_general_dilated(x, params["stem"], (2, 2), "SAME", dimension_numbers=dn)
    h = jax.nn.relu6(_batch_norm(h, _BN_STATS[0]))
    for blk, stats in zip(params["blocks"], _BN_STATS[1:]):
        d = lax.conv_general_dilated(h, blk["depthwise"], (1, 1), "SAME", dimension_numbers=dn,
                                     feature_group_count=c)
        p = lax.conv_general_dilated(d, blk["pointwise"], (1, 1), "VALID", dimension_numbers=dn)
        h = h + jax.nn.relu6(_batch_norm(p, stats))  # residual
    h = jnp.mean(h, axis=(1, 2))                     # global average pool
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def test_depthwise_separable_cnn():
    x, *more = _inputs(3, 2, 12, 12, 3)
    m = convert_and_check(ds_cnn, _dsc_params(), x, name="DSCNN", extra_inputs=more)
    assert "Conv" in m.summary()
    # stem + 2 x (depthwise + pointwise): every convolution is kept as a convolution
    assert sum(op.op_type == "Conv" for op in m.graph.ops) == 5, m.summary()
    # the batch-norm constants are not parameters: only the params pytree counts
    assert m.parameter_count() >= sum(np.size(v) for v in jax.tree_util.tree_leaves(_dsc_params()))


# --------------------------------------------------------------------------- 1D and 3D conv nets
def _conv1d_params():
    rng = np.random.default_rng(4)
    return {"c1": _conv_kernel(rng, 5, 2, 8), "c2": _conv_kernel(rng, 3, 8, 8), "head": _dense(rng, 8 * 6, 3)}


def conv1d_net(params, x):
    dn = ("NWC", "WIO", "NWC")
    h = lax.conv_general_dilated(x, params["c1"], (2,), "SAME", dimension_numbers=dn)          # 48 -> 24
    h = jnp.tanh(h)
    h = lax.conv_general_dilated(h, params["c2"], (2,), ((2, 2),), rhs_dilation=(2,),          # 24 -> 12
                                 dimension_numbers=dn)
    h = jax.nn.relu(h)
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 1), (1, 2, 1), "VALID")                  # 12 -> 6
    h = h.reshape(h.shape[0], -1)
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def test_conv1d_net():
    x, *more = _inputs(5, 3, 48, 2)
    m = convert_and_check(conv1d_net, _conv1d_params(), x, name="Conv1D", extra_inputs=more)
    assert {"Conv", "Gemm"} <= _op_types(m), m.summary()


def _conv3d_params():
    rng = np.random.default_rng(6)
    return {"c1": _conv_kernel(rng, 3, 3, 3, 1, 4), "c2": _conv_kernel(rng, 2, 2, 2, 4, 6),
            "head": _dense(rng, 6, 2)}


def conv3d_net(params, x):
    dn = ("NDHWC", "DHWIO", "NDHWC")
    h = jax.nn.relu(lax.conv_general_dilated(x, params["c1"], (1, 1, 1), "SAME", dimension_numbers=dn))
    h = jax.nn.sigmoid(lax.conv_general_dilated(h, params["c2"], (2, 2, 2), "VALID", dimension_numbers=dn))
    h = jnp.max(h, axis=(1, 2, 3))
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def test_conv3d_net():
    x, *more = _inputs(7, 2, 6, 8, 8, 1)
    m = convert_and_check(conv3d_net, _conv3d_params(), x, name="Conv3D", extra_inputs=more)
    assert {"Conv", "Gemm"} <= _op_types(m), m.summary()


# ------------------------------------------------------------------ several inputs and outputs
def _multi_params():
    rng = np.random.default_rng(8)
    return {"jets": _dense(rng, 4, 8), "leptons": _dense(rng, 3, 8), "head": _dense(rng, 8, 2)}


def two_tower(params, inputs):
    """Inputs {'jets': (B, 4), 'leptons': (B, 3)}; outputs (logits, probabilities, embedding)."""
    a = jnp.tanh(inputs["jets"] @ params["jets"]["kernel"] + params["jets"]["bias"])
    b = jnp.tanh(inputs["leptons"] @ params["leptons"]["kernel"] + params["leptons"]["bias"])
    emb = a * b + a
    logits = emb @ params["head"]["kernel"] + params["head"]["bias"]
    return logits, jax.nn.softmax(logits), {"embedding": emb, "score": jnp.sum(emb, axis=-1)}


def test_several_inputs_and_outputs():
    params = _multi_params()
    rng = np.random.default_rng(9)

    def sample():
        return {"leptons": rng.standard_normal((5, 3)).astype(np.float32),
                "jets": rng.standard_normal((5, 4)).astype(np.float32)}

    x = sample()
    m = convert_and_check(two_tower, params, x, name="TwoTower", extra_inputs=[sample()])
    # inputs are taken in the flattened pytree order (dict keys sorted), outputs likewise
    assert [m.graph.tensors[n].shape for n in m.graph.inputs] == [(5, 4), (5, 3)]
    got = m.compile()(*jax.tree_util.tree_leaves(x))
    # the function's own structure comes back: (logits, prob, {"embedding", "score"})
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(two_tower(params, x))
    got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(two_tower(params, x))
    assert len(got) == len(want) == 4
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {k}: {g.shape} != {w.shape}"
        assert_close(g, np.asarray(w), what=f"output {k}")


def test_an_input_the_model_ignores():
    """A pytree input with an entry the model does not use (a feature kept for bookkeeping)."""
    params = _multi_params()
    rng = np.random.default_rng(12)
    x = {"jets": rng.standard_normal((5, 4)).astype(np.float32),
         "leptons": rng.standard_normal((5, 3)).astype(np.float32),
         "run_number": rng.standard_normal((5, 1)).astype(np.float32)}
    m = convert_and_check(lambda p, x: two_tower(p, x)[0], params, x, name="IgnoresAnInput")
    assert len(m.graph.inputs) == 3   # the C++ signature still takes every input, in pytree order


# ------------------------------------------------------------------- jitted and param-less functions
def test_jitted_function():
    params = _mlp_params()
    x, *more = _inputs(10, 4, 20)
    m = convert_and_check(jax.jit(mlp), params, x, name="JitMLP", extra_inputs=more)
    assert m.parameter_count() == sum(np.size(v) for v in jax.tree_util.tree_leaves(params))
    assert "Gemm" in m.summary()


@jax.jit
def _standardise_and_score(x):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    sd = jnp.sqrt(jnp.mean((x - mu) ** 2, axis=-1, keepdims=True) + 1e-5)
    z = (x - mu) / sd
    return jnp.sum(jax.nn.softplus(z) * jnp.arange(x.shape[-1], dtype=x.dtype), axis=-1)


def test_function_without_params():
    x, *more = _inputs(11, 3, 7)
    m = convert_and_check(_standardise_and_score, None, x, name="NoParams", extra_inputs=more)
    assert m.traced.param_values == []
    # nothing comes from a params pytree; only the folded jnp.arange constant may sit in the weight file
    assert m.parameter_count() <= x.shape[-1]


# ------------------------------------------------------------------ a function nobody tuned
_UNARY = {
    "tanh": jnp.tanh,
    "sin": jnp.sin,
    "abs": jnp.abs,
    "neg": jnp.negative,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "exp_tanh": lambda v: jnp.exp(jnp.tanh(v)),          # exp on a bounded argument
    "log1p_abs": lambda v: jnp.log1p(jnp.abs(v)),
    "sqrt_sq": lambda v: jnp.sqrt(v * v + 1.0),
    "square": jnp.square,
}
_BINARY = {
    "add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "max": jnp.maximum, "min": jnp.minimum,
    "div": lambda a, b: a / (1.0 + b * b),             # a denominator that never vanishes
}
_REDUCE = {"sum": jnp.sum, "max": jnp.max, "min": jnp.min, "mean": jnp.mean}


def _broadcasts_to(small, big):
    return len(small) <= len(big) and all(a in (1, b) for a, b in zip(reversed(small), reversed(big)))


class RandomProgram:
    """A seeded random program over a pool of primitives. Built by running every step eagerly on the
    example inputs (so each step knows the shapes it works on), then replayed under tracing."""

    def __init__(self, seed, n_steps=7):
        self.rng = np.random.default_rng(seed)
        r = self.rng
        shape = tuple(int(d) for d in r.integers(2, 5, size=int(r.integers(2, 4))))
        self.inputs = (r.standard_normal(shape).astype(np.float32),
                       r.standard_normal(shape[-1:] if r.random() < 0.5 else shape).astype(np.float32))
        self.params = {}
        self.steps = []            # (description, fn(params, env) -> new value)
        env = [jnp.asarray(v) for v in self.inputs]
        deps = [{0}, {1}]          # which inputs each value depends on
        for _ in range(n_steps):
            desc, step = self._pick(env)
            self._append(env, deps, desc, step)
        self.n_outputs = 1 + int(r.random() < 0.4)
        # the outputs must depend on every input, or the program tests less than it claims
        while missing := {0, 1} - set().union(*deps[-self.n_outputs:]):
            i, k = len(env) - 1, min(missing)
            self._append(env, deps, f"v{i} + mean(v{k})", lambda p, e: e[i] + jnp.mean(e[k]))

    def _append(self, env, deps, desc, step):
        env.append(step(self.params, env))
        deps.append(set().union(*(deps[int(j)] for j in re.findall(r"v(\d+)", desc))))
        self.steps.append((desc, step))

    def __repr__(self):
        return " ; ".join(d for d, _ in self.steps)

    def __call__(self, params, xs):
        env = list(xs)
        for _, step in self.steps:
            env.append(step(params, env))
        return tuple(env[-self.n_outputs:]) if self.n_outputs > 1 else env[-1]

    def _pick(self, env):
        r = self.rng
        i = len(env) - 1 if r.random() < 0.75 else int(r.integers(len(env)))   # mostly chain the latest value
        x = env[i]
        kinds = ["unary", "binary", "transpose", "reshape", "slice", "concat", "reduce", "matmul", "where"]
        kind = kinds[int(r.integers(len(kinds)))]
        if x.ndim == 0 or x.size == 1:
            kind = "unary" if kind not in ("binary", "where") else kind
        if kind == "unary":
            name = list(_UNARY)[int(r.integers(len(_UNARY)))]
            return f"{name}(v{i})", lambda p, e, f=_UNARY[name]: f(e[i])
        if kind in ("binary", "where"):
            j, bshape = self._broadcast_partner(env, x)
            if kind == "binary":
                name = list(_BINARY)[int(r.integers(len(_BINARY)))]
                if j is None:
                    return f"{name}(v{i}, c{bshape})", self._with_const(bshape, _BINARY[name], i)
                return f"{name}(v{i}, v{j})", lambda p, e, f=_BINARY[name]: f(e[i], e[j])
            if j is None:
                return (f"where(v{i}>0, v{i}, c{bshape})",
                        self._with_const(bshape, lambda a, c: jnp.where(a > 0, a, c), i))
            return f"where(v{i}>v{j}, v{i}, v{j}*0.5)", lambda p, e: jnp.where(e[i] > e[j], e[i], e[j] * 0.5)
        if kind == "transpose":
            perm = tuple(int(a) for a in r.permutation(x.ndim))
            return f"transpose(v{i}, {perm})", lambda p, e: jnp.transpose(e[i], perm)
        if kind == "reshape":
            new = self._reshape_target(x.shape)
            return f"reshape(v{i}, {new})", lambda p, e: jnp.reshape(e[i], new)
        if kind == "slice":
            ax = int(r.integers(x.ndim))
            n = x.shape[ax]
            start = int(r.integers(0, max(1, n - 1)))
            step_ = int(r.integers(1, 3))
            idx = tuple(slice(start, n, step_) if a == ax else slice(None) for a in range(x.ndim))
            return f"v{i}[{idx}]", lambda p, e: e[i][idx]
        if kind == "concat":
            ax = int(r.integers(x.ndim))
            return f"concat(v{i}, tanh(v{i}), axis={ax})", lambda p, e: jnp.concatenate([e[i], jnp.tanh(e[i])], axis=ax)
        if kind == "reduce":
            name = list(_REDUCE)[int(r.integers(len(_REDUCE)))]
            ax = int(r.integers(x.ndim))
            keep = bool(r.random() < 0.5)
            return (f"{name}(v{i}, axis={ax}, keepdims={keep})",
                    lambda p, e, f=_REDUCE[name]: f(e[i], axis=ax, keepdims=keep))
        k = x.shape[-1]
        partners = [j for j, v in enumerate(env) if v.ndim == 2 and v.shape[0] == k and j != i]
        if partners and r.random() < 0.5:   # matmul of two computed values
            j = partners[int(r.integers(len(partners)))]
            return f"v{i} @ v{j}", lambda p, e: e[i] @ e[j]
        # matmul against a weight matrix; scaled by 1/sqrt(K) so values stay O(1)
        n_out = int(r.integers(2, 6))
        key = f"w{len(self.params)}"
        self.params[key] = (r.standard_normal((k, n_out)) / np.sqrt(k)).astype(np.float32)
        return f"v{i} @ {key}{self.params[key].shape}", lambda p, e: e[i] @ p[key]

    def _broadcast_partner(self, env, x):
        """Another live value broadcastable against x (and not changing x's shape), else a constant shape."""
        r = self.rng
        cands = [j for j, v in enumerate(env) if _broadcasts_to(v.shape, x.shape)]
        if cands and r.random() < 0.7:
            return cands[int(r.integers(len(cands)))], None
        shape = tuple(1 if r.random() < 0.4 else d for d in x.shape)
        shape = shape[int(r.integers(0, len(shape) + 1)) if len(shape) else 0:]   # maybe drop leading dims
        return None, shape

    def _with_const(self, shape, f, i):
        c = self.rng.standard_normal(shape).astype(np.float32)
        return lambda p, e: f(e[i], c)

    def _reshape_target(self, shape):
        r = self.rng
        size = int(np.prod(shape))
        choice = r.integers(3)
        if choice == 0 or len(shape) == 1:
            return (size,) if choice == 0 or r.random() < 0.5 else (1, size)
        if choice == 1:   # merge two neighbours
            a = int(r.integers(len(shape) - 1))
            return shape[:a] + (shape[a] * shape[a + 1],) + shape[a + 2:]
        return tuple(reversed(shape))   # same size, different layout


@pytest.mark.parametrize("seed", range(20))
def test_random_program(seed):
    prog = RandomProgram(seed)
    r = np.random.default_rng(1000 + seed)
    extra = tuple(tuple(r.standard_normal(v.shape).astype(np.float32) for v in prog.inputs) for _ in range(2))
    try:
        convert_and_check(prog, prog.params, prog.inputs, name=f"Random{seed}", extra_inputs=extra)
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: program {prog!r}\n{e}") from None
