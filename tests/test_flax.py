"""Flax bridges: every layer converted, compiled and compared with Flax's own output, computed live.

Tolerance: float32, |C++ - Flax| <= 1e-4 * max(1, |Flax|) elementwise, scaled by the largest
output value (`check`). Weights are drawn by NumPy at the shapes Flax gives (no zero biases or
unit norm scales that would hide a mistake) and BatchNorm statistics come from real training steps.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

pytest.importorskip("flax")
import flax.linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

import jaxpr2sofie as j2s  # noqa: E402
from helpers import assert_close  # noqa: E402

ATOL = 1e-4
KEY = jax.random.key(0)


def rand(*shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def check(model, want, x, atol=ATOL):
    """Compile `model` and compare its output on `x` with `want` (Flax's output, any pytree)."""
    got = model.compile()(*[np.asarray(v) for v in jax.tree_util.tree_leaves(x)])
    got = jax.tree_util.tree_leaves(got)   # the model's own structure (a dict output is a dict)
    want_paths = jax.tree_util.tree_flatten_with_path(want)[0]
    assert len(got) == len(want_paths)
    for g, (path, w) in zip(got, want_paths):
        assert_close(g, np.asarray(w), atol, what=f"{model.name} output {jax.tree_util.keystr(path)}")
    return model


def random_variables(module, x, seed=1, **call_kwargs):
    """linen variables with the shapes `module.init` gives, filled by NumPy: kernels scaled by
    1/sqrt(fan-in), every other float perturbed. (Flax's own initialisers would compile a JAX
    random kernel per weight shape, seconds per model on a loaded 2-core machine.)"""
    shapes = jax.eval_shape(functools.partial(module.init, **call_kwargs), KEY, x)
    rng = np.random.default_rng(seed)

    def f(path, s):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']") or name.endswith("['embedding']"):
            fan_in = int(np.prod(s.shape[:-1])) if name.endswith("['kernel']") else 1
            return (rng.standard_normal(s.shape) / np.sqrt(max(fan_in, 1))).astype(s.dtype)
        if name.endswith("['var']"):
            return rng.uniform(0.5, 2.0, s.shape).astype(s.dtype)
        base = 1.0 if name.endswith("['scale']") else 0.0
        return (base + 0.3 * rng.standard_normal(s.shape)).astype(s.dtype)
    return jax.tree_util.tree_map_with_path(f, shapes)


# ---------------------------------------------------------------------------------------------
# linen
# ---------------------------------------------------------------------------------------------

def linen_check(module, x, atol=ATOL, variables=None, ref_kwargs=None, **bridge_kwargs):
    """from_flax(module) against module.apply(variables, x, **ref_kwargs) (explicit inference flags)."""
    if variables is None:
        variables = random_variables(module, x, **(ref_kwargs or {}))
    m = j2s.from_flax(module, variables, x, name=type(module).__name__, **bridge_kwargs)
    kwargs = {**(ref_kwargs or {}), **bridge_kwargs}
    want = jax.jit(lambda v, x: module.apply(v, x, **kwargs))(variables, x)
    return check(m, want, x, atol)


@pytest.mark.parametrize("use_bias", [True, False])
def test_linen_dense(use_bias):
    x = rand(3, 5)
    m = linen_check(nn.Dense(7, use_bias=use_bias), x)
    # FrozenDict variables and a user-given name: same weights, same code
    from flax.core import freeze
    v = random_variables(nn.Dense(7, use_bias=use_bias), x)
    frozen = j2s.from_flax(nn.Dense(7, use_bias=use_bias), freeze(v), x, name="Dense")
    assert frozen.header() == m.header()
    assert frozen.traced.param_labels == ["params.bias", "params.kernel"][(not use_bias):]


@pytest.mark.parametrize("features,axis,shape", [
    ((4, 3), -1, (2, 5)),
    (6, (-2, -1), (2, 3, 4)),
    ((2, 5), (1, 3), (2, 3, 4, 2)),
])
def test_linen_dense_general(features, axis, shape):
    linen_check(nn.DenseGeneral(features, axis=axis), rand(*shape))


CONV_CASES = {   # id: (module kwargs, input shape)
    "1d_same_stride2": (dict(features=4, kernel_size=(3,), strides=2, padding="SAME"), (2, 11, 3)),
    "1d_causal_dilated": (dict(features=3, kernel_size=(3,), kernel_dilation=2, padding="CAUSAL"), (2, 10, 2)),
    "2d_valid": (dict(features=5, kernel_size=(3, 3), padding="VALID"), (2, 8, 9, 3)),
    "2d_same_stride_dilation": (dict(features=4, kernel_size=(3, 2), strides=(2, 1), kernel_dilation=(1, 2),
                                     padding="SAME"), (1, 9, 8, 2)),
    "2d_explicit_padding": (dict(features=3, kernel_size=(2, 3), padding=((1, 2), (0, 1))), (2, 6, 7, 2)),
    "2d_circular": (dict(features=3, kernel_size=(3, 3), padding="CIRCULAR"), (1, 6, 5, 2)),
    "2d_groups": (dict(features=6, kernel_size=(3, 3), feature_group_count=2, padding="SAME"), (2, 7, 7, 4)),
    "2d_depthwise": (dict(features=8, kernel_size=(3, 3), feature_group_count=4, use_bias=False), (1, 6, 6, 4)),
    "3d_same_stride": (dict(features=3, kernel_size=(3, 3, 3), strides=2, padding="SAME"), (1, 6, 7, 5, 2)),
    "3d_valid_dilated": (dict(features=2, kernel_size=(2, 2, 2), kernel_dilation=2, padding="VALID"),
                         (2, 5, 5, 5, 3)),
}


@pytest.mark.parametrize("kwargs,shape", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_linen_conv(kwargs, shape):
    linen_check(nn.Conv(**kwargs), rand(*shape))


CONV_T_CASES = {
    "1d_stride2_same": (dict(features=3, kernel_size=(3,), strides=(2,), padding="SAME"), (2, 5, 2)),
    "2d_stride2_valid": (dict(features=4, kernel_size=(3, 3), strides=(2, 2), padding="VALID"), (1, 4, 5, 3)),
    "2d_dilated_transpose_kernel": (dict(features=2, kernel_size=(2, 3), kernel_dilation=(2, 1),
                                         transpose_kernel=True, padding="SAME"), (2, 4, 4, 3)),
    "3d_stride2": (dict(features=2, kernel_size=(2, 2, 2), strides=(2, 2, 2)), (1, 3, 3, 3, 2)),
}


@pytest.mark.parametrize("kwargs,shape", CONV_T_CASES.values(), ids=CONV_T_CASES.keys())
def test_linen_conv_transpose(kwargs, shape):
    linen_check(nn.ConvTranspose(**kwargs), rand(*shape))


def linen_train_batch_stats(module, variables, batches, **train_kwargs):
    """A few forward passes in training mode: BatchNorm running statistics move off (0, 1)."""
    step = jax.jit(lambda v, x: module.apply(v, x, mutable=["batch_stats"], **train_kwargs)[1])
    for x in batches:
        variables = {**variables, **step(variables, x)}
    return variables


def test_linen_batchnorm_running_stats():
    bn = nn.BatchNorm(momentum=0.5)
    x = rand(6, 5)
    v = random_variables(bn, x, use_running_average=True)
    v = linen_train_batch_stats(bn, v, [rand(6, 5, seed=s) * 2 + 3 for s in range(3)], use_running_average=False)
    assert np.abs(np.asarray(v["batch_stats"]["mean"])).min() > 0.5     # really trained
    # bare BatchNorm: the bridge passes use_running_average=True to __call__
    linen_check(bn, x, variables=v, ref_kwargs=dict(use_running_average=True))


def test_linen_batchnorm_in_a_train_flag_model():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.Conv(4, (3, 3))(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=0.6, axis_name=None)(x)
            return nn.relu(x)
    x = rand(2, 6, 6, 3)
    v = random_variables(Net(), x, train=False)
    v = linen_train_batch_stats(Net(), v, [rand(4, 6, 6, 3, seed=s) + 1 for s in range(3)], train=True)
    m = linen_check(Net(), x, variables=v, ref_kwargs=dict(train=False))
    assert "batch_stats.BatchNorm_0.mean" in m.traced.param_labels
    assert "params.Conv_0.kernel" in m.traced.param_labels


@pytest.mark.parametrize("module,shape", [
    (nn.LayerNorm(), (3, 6)),
    (nn.LayerNorm(reduction_axes=(-2, -1), feature_axes=-1, epsilon=1e-3), (2, 4, 5)),
    (nn.LayerNorm(use_scale=False), (2, 3, 4)),
    (nn.GroupNorm(num_groups=2), (2, 5, 5, 4)),
    (nn.GroupNorm(num_groups=None, group_size=3), (2, 7, 6)),
    (nn.RMSNorm(), (3, 8)),
    (nn.RMSNorm(reduction_axes=(-2, -1), feature_axes=-1), (2, 3, 4)),
    (nn.InstanceNorm(), (2, 5, 5, 3)),
], ids=["layer", "layer_2axes", "layer_noscale", "group", "group_size", "rms", "rms_2axes", "instance"])
def test_linen_norms(module, shape):
    linen_check(module, rand(*shape, scale=2.0) + 1.0)


def test_linen_embed():
    emb = nn.Embed(num_embeddings=11, features=4)
    ids = np.random.default_rng(2).integers(0, 11, (3, 5)).astype(np.int32)
    v = random_variables(emb, ids)
    m = linen_check(emb, ids, variables=v)
    edge = np.array([[0, 10, 10, 0, 5]] * 3, np.int32)
    check(m, emb.apply(v, edge), edge)


class Pools(nn.Module):
    dims: int

    @nn.compact
    def __call__(self, x):
        w = (2,) * self.dims
        s = (1,) + (2,) * (self.dims - 1)
        return {
            "max": nn.max_pool(x, w, strides=w),
            "max_same": nn.max_pool(x, (3,) * self.dims, strides=s, padding="SAME"),
            "avg": nn.avg_pool(x, w, strides=s),
            "avg_same_count_pad": nn.avg_pool(x, (3,) * self.dims, padding="SAME"),
            "avg_same_exclude_pad": nn.avg_pool(x, (3,) * self.dims, padding="SAME", count_include_pad=False),
            "min": nn.pool(x, jnp.inf, lax.min, w, w, "VALID"),
            "global_avg": jnp.mean(x, axis=tuple(range(1, self.dims + 1))),
            "global_max": jnp.max(x, axis=tuple(range(1, self.dims + 1))),
        }


@pytest.mark.parametrize("dims,shape", [(1, (2, 9, 3)), (2, (2, 8, 7, 3)), (3, (1, 4, 6, 5, 2))])
def test_linen_pooling(dims, shape):
    linen_check(Pools(dims), rand(*shape))


ACTIVATIONS = {
    "relu": nn.relu, "relu6": nn.relu6, "gelu_tanh": functools.partial(nn.gelu, approximate=True),
    "gelu_erf": functools.partial(nn.gelu, approximate=False), "silu": nn.silu, "swish": nn.swish,
    "softmax": nn.softmax, "log_softmax": nn.log_softmax, "elu": nn.elu, "celu": nn.celu, "selu": nn.selu,
    "leaky_relu": functools.partial(nn.leaky_relu, negative_slope=0.2), "sigmoid": nn.sigmoid, "tanh": nn.tanh,
    "softplus": nn.softplus, "soft_sign": nn.soft_sign, "hard_swish": nn.hard_swish,
    "hard_sigmoid": nn.hard_sigmoid, "hard_tanh": nn.hard_tanh, "hard_silu": nn.hard_silu,
    "log_sigmoid": nn.log_sigmoid, "glu": nn.glu, "logsumexp": functools.partial(nn.logsumexp, axis=-1),
    "standardize": nn.standardize, "mish": jax.nn.mish,
}


class Activations(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(8)(x)
        return {k: f(h) for k, f in ACTIVATIONS.items()} | {"prelu": nn.PReLU()(h)}


def test_linen_activations():
    # one conversion for all of them (a compile each would cost ~1 s); every output checked by name
    linen_check(Activations(), rand(4, 6, scale=3.0))


def test_linen_dropout_is_identity_in_inference():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            x = nn.Dense(6)(x)
            x = nn.Dropout(0.5, deterministic=not train)(x)
            return nn.Dense(2)(x)
    x = rand(3, 4)
    linen_check(Net(), x, ref_kwargs=dict(train=False))
    # a bare Dropout: the bridge passes deterministic=True
    m = j2s.from_flax(nn.Dropout(0.9), {}, x)
    check(m, x, x)


def test_linen_user_given_flag_wins():
    class Scaled(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            return x * (2.0 if train else 3.0)
    x = rand(2, 3)
    check(j2s.from_flax(Scaled(), {}, x), 3 * x, x)
    check(j2s.from_flax(Scaled(), {}, x, call_kwargs={"train": True}), 2 * x, x)


def test_linen_method_kwarg():
    class Enc(nn.Module):
        def setup(self):
            self.enc = nn.Dense(3)
            self.dec = nn.Dense(5)

        def __call__(self, x):
            return self.dec(self.enc(x))

        def encode(self, x, deterministic: bool = False):
            return nn.tanh(self.enc(x)) * (1.0 if deterministic else 0.0)
    x = rand(2, 5)
    v = random_variables(Enc(), x)
    m = j2s.from_flax(Enc(), v, x, method="encode")
    check(m, Enc().apply(v, x, method="encode", deterministic=True), x)


def test_linen_attention_and_friends():
    x = rand(2, 5, 8)
    # deterministic=True (attention dropout off) comes from the bridge
    linen_check(nn.MultiHeadDotProductAttention(num_heads=2, qkv_features=8, dropout_rate=0.3), x,
                ref_kwargs=dict(deterministic=True))
    linen_check(nn.Sequential([nn.Dense(6), nn.gelu, nn.LayerNorm(), nn.Einsum((6, 3), "btc,cd->btd")]), x)
    # SpectralNorm: update_stats=False comes from the bridge
    linen_check(nn.SpectralNorm(nn.Dense(4)), x, ref_kwargs=dict(update_stats=False))


# Recurrent layers: RNG keys built inside the function (the zero initial carry) are folded away;
# the time loop is a scan, one C++ loop whatever the sequence length.
def test_linen_lstm():
    linen_check(nn.RNN(nn.LSTMCell(5)), rand(2, 6, 3))


def test_linen_simple_cell_rnn_long_sequence():
    linen_check(nn.RNN(nn.SimpleCell(4)), rand(1, 600, 3))


def test_nnx_lstm():
    nnx_check(nnx_build(nnx.RNN, nnx.LSTMCell(3, 5, rngs=nnx.Rngs(0))), rand(2, 6, 3))


def test_linen_gru_bidirectional():
    linen_check(nn.Bidirectional(nn.RNN(nn.GRUCell(4)), nn.RNN(nn.GRUCell(4))), rand(2, 5, 3))


# -- realistic linen model ----------------------------------------------------------------------

class ResBlock(nn.Module):
    features: int
    strides: int = 1

    @nn.compact
    def __call__(self, x, train: bool):
        bn = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.8)
        y = nn.Conv(self.features, (3, 3), strides=self.strides, use_bias=False)(x)
        y = nn.relu(bn()(y))
        y = nn.Conv(self.features, (3, 3), use_bias=False)(y)
        y = bn(scale_init=nn.initializers.ones)(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False, name="proj")(x)
            x = bn(name="proj_bn")(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    stages: tuple = (8, 16, 32)
    classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(self.stages[0], (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        for k, f in enumerate(self.stages):
            x = ResBlock(f, strides=1 if k == 0 else 2)(x, train)
            x = ResBlock(f)(x, train)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(0.3, deterministic=not train)(x)
        return nn.log_softmax(nn.Dense(self.classes)(x))


def test_linen_resnet_cnn():
    model = ResNet()
    x = rand(2, 32, 32, 3)
    v = random_variables(model, x, train=False)
    stats = [rand(4, 32, 32, 3, seed=s) * 1.5 + 0.5 for s in range(3)]
    v = linen_train_batch_stats(model, v, stats, train=True, rngs={"dropout": KEY})
    m = linen_check(model, x, variables=v, ref_kwargs=dict(train=False))
    assert m.parameter_count() > 20000
    assert "Conv" in {op.op_type for op in m.graph.ops}
    x2 = rand(2, 32, 32, 3, seed=9)
    check(m, jax.jit(lambda v, x: model.apply(v, x, train=False))(v, x2), x2)


# ---------------------------------------------------------------------------------------------
# nnx
# ---------------------------------------------------------------------------------------------

def nnx_build(cls, *args, seed=1, **kwargs):
    """`cls(*args, **kwargs, rngs=...)` with its Variables filled by NumPy (kernels scaled by
    1/sqrt(fan-in), every other float perturbed), built abstractly first so that no JAX random
    kernel is compiled per weight shape."""
    module = nnx.eval_shape(lambda: cls(*args, **kwargs, rngs=nnx.Rngs(0, dropout=1)))
    rng = np.random.default_rng(seed)
    flat = []
    for path, var in nnx.to_flat_state(nnx.state(module)):
        s, name = var.get_value(), path[-1]
        if isinstance(var, nnx.RngKey):
            val = jax.random.key(seed)
        elif isinstance(var, nnx.RngCount):
            val = np.zeros(s.shape, s.dtype)
        elif name in ("kernel", "embedding"):
            fan_in = int(np.prod(s.shape[:-1])) if name == "kernel" else 1
            val = (rng.standard_normal(s.shape) / np.sqrt(fan_in)).astype(s.dtype)
        elif name == "var":
            val = rng.uniform(0.5, 2.0, s.shape).astype(s.dtype)
        else:
            val = ((name == "scale") + 0.3 * rng.standard_normal(s.shape)).astype(s.dtype)
        flat.append((path, var.replace(jnp.asarray(val))))
    nnx.update(module, nnx.from_flat_state(flat))
    return module


def _snapshot(module):
    """The module's mode flags per submodule and a copy of every array it holds."""
    flags = {path: (getattr(node, "deterministic", None), getattr(node, "use_running_average", None))
             for path, node in nnx.iter_graph(module) if isinstance(node, nnx.Module)}
    arrays = [np.array(v) for v in jax.tree_util.tree_leaves(nnx.state(module, nnx.Any(nnx.Param, nnx.BatchStat)))]
    return flags, arrays


def nnx_check(module, x, atol=ATOL, want=None):
    """from_nnx(module) against the module itself, called in eval mode on a clone."""
    if want is None:
        ref = nnx.clone(module)
        ref.eval()
        want = nnx.jit(lambda mod, x: mod(x))(ref, x)
    before = _snapshot(module)
    m = j2s.from_nnx(module, x, name=type(module).__name__)
    after = _snapshot(module)
    assert before[0] == after[0], "from_nnx changed the module's mode flags"
    jax.tree_util.tree_map(np.testing.assert_array_equal, before[1], after[1])
    return check(m, want, x, atol)



@pytest.mark.parametrize("use_bias", [True, False])
def test_nnx_linear(use_bias):
    nnx_check(nnx_build(nnx.Linear, 5, 7, use_bias=use_bias), rand(3, 5))


@pytest.mark.parametrize("in_f,out_f,axis,shape", [
    (5, (4, 3), -1, (2, 5)),
    ((3, 4), 6, (-2, -1), (2, 3, 4)),
    ((3, 2), (2, 5), (1, 3), (2, 3, 4, 2)),
])
def test_nnx_linear_general(in_f, out_f, axis, shape):
    nnx_check(nnx_build(nnx.LinearGeneral, in_f, out_f, axis=axis), rand(*shape))


NNX_CONV_CASES = {
    "1d_same_stride2": (dict(in_features=3, out_features=4, kernel_size=(3,), strides=2, padding="SAME"), (2, 11, 3)),
    "1d_causal": (dict(in_features=2, out_features=3, kernel_size=(4,), padding="CAUSAL"), (2, 10, 2)),
    "2d_valid_dilated": (dict(in_features=3, out_features=5, kernel_size=(3, 3), kernel_dilation=2,
                              padding="VALID"), (2, 9, 9, 3)),
    "2d_groups_stride": (dict(in_features=4, out_features=6, kernel_size=(3, 3), strides=(1, 2),
                              feature_group_count=2), (2, 7, 7, 4)),
    "3d_same": (dict(in_features=2, out_features=3, kernel_size=(3, 3, 3)), (1, 5, 6, 4, 2)),
}


@pytest.mark.parametrize("kwargs,shape", NNX_CONV_CASES.values(), ids=NNX_CONV_CASES.keys())
def test_nnx_conv(kwargs, shape):
    nnx_check(nnx_build(nnx.Conv, **kwargs), rand(*shape))


@pytest.mark.parametrize("kwargs,shape", [
    (dict(in_features=3, out_features=4, kernel_size=(3, 3), strides=(2, 2), padding="SAME"), (1, 4, 5, 3)),
    (dict(in_features=2, out_features=3, kernel_size=(3,), strides=(2,), padding="VALID",
          transpose_kernel=True), (2, 5, 2)),
], ids=["2d_stride2_same", "1d_valid_transpose_kernel"])
def test_nnx_conv_transpose(kwargs, shape):
    nnx_check(nnx_build(nnx.ConvTranspose, **kwargs), rand(*shape))


def test_nnx_batchnorm_running_stats_and_module_untouched():
    bn = nnx_build(nnx.BatchNorm, 5, momentum=0.5)
    for s in range(3):          # training mode (the module's default): updates the running stats
        bn(rand(6, 5, seed=s) * 2 + 3)
    assert np.abs(np.asarray(bn.mean[...])).min() > 0.5
    mean, var = np.asarray(bn.mean[...]).copy(), np.asarray(bn.var[...]).copy()
    x = rand(4, 5)
    ref = nnx.clone(bn)
    ref.eval()
    want = ref(x)
    assert not np.allclose(want, nnx.clone(bn)(x), atol=0.1)     # eval mode matters here
    nnx_check(bn, x, want=want)
    # the user's module: still in training mode, statistics unchanged
    assert bn.use_running_average is False
    np.testing.assert_array_equal(np.asarray(bn.mean[...]), mean)
    np.testing.assert_array_equal(np.asarray(bn.var[...]), var)


@pytest.mark.parametrize("cls,args,kwargs,shape", [
    (nnx.LayerNorm, (6,), {}, (3, 6)),
    (nnx.LayerNorm, (4,), dict(use_bias=False, epsilon=1e-3), (2, 3, 4)),
    (nnx.GroupNorm, (4,), dict(num_groups=2), (2, 5, 5, 4)),
    (nnx.RMSNorm, (8,), {}, (3, 8)),
    (nnx.InstanceNorm, (3,), {}, (2, 5, 5, 3)),
], ids=["layer", "layer_nobias", "group", "rms", "instance"])
def test_nnx_norms(cls, args, kwargs, shape):
    nnx_check(nnx_build(cls, *args, **kwargs), rand(*shape, scale=2.0) + 1.0)


def test_nnx_embed():
    emb = nnx_build(nnx.Embed, num_embeddings=11, features=4)
    ids = np.random.default_rng(3).integers(0, 11, (3, 5)).astype(np.int32)
    nnx_check(emb, ids)


def test_nnx_attention():
    nnx_check(nnx_build(nnx.MultiHeadAttention, num_heads=2, in_features=8, qkv_features=8, dropout_rate=0.3,
                        decode=False), rand(2, 5, 8))


class NnxPools(nnx.Module):
    def __call__(self, x):
        return {"max": nnx.max_pool(x, (2, 2), strides=(2, 2)),
                "avg": nnx.avg_pool(x, (3, 3), strides=(1, 2), padding="SAME"),
                "min": nnx.min_pool(x, (2, 3), strides=(2, 1))}


def test_nnx_pooling():
    nnx_check(NnxPools(), rand(2, 8, 7, 3))


class NnxActivations(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(6, 8, rngs=rngs)

    def __call__(self, x):
        h = self.lin(x)
        acts = {"relu": nnx.relu, "gelu": nnx.gelu, "silu": nnx.silu, "softmax": nnx.softmax,
                "log_softmax": nnx.log_softmax, "elu": nnx.elu, "leaky_relu": nnx.leaky_relu,
                "sigmoid": nnx.sigmoid, "tanh": nnx.tanh, "softplus": nnx.softplus, "hard_swish": nnx.hard_swish,
                "relu6": nnx.relu6, "selu": nnx.selu, "celu": nnx.celu, "glu": nnx.glu}
        return {k: f(h) for k, f in acts.items()}


def test_nnx_activations():
    nnx_check(nnx_build(NnxActivations), rand(4, 6, scale=3.0))


def test_nnx_dropout_is_identity_and_module_keeps_its_mode():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(4, 6, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)
            self.b = nnx.Linear(6, 2, rngs=rngs)

        def __call__(self, x):
            return self.b(self.drop(self.a(x)))
    net = nnx_build(Net)
    x = rand(3, 4)
    want = net.b(net.a(x))      # dropout off == no dropout
    nnx_check(net, x, want=want)
    assert net.drop.deterministic is False


# -- realistic nnx model -----------------------------------------------------------------------

class MLPClassifier(nnx.Module):
    def __init__(self, din, hidden, classes, rngs):
        self.layers = nnx.List()
        for a, b in zip((din, *hidden[:-1]), hidden):
            self.layers.append(nnx.Linear(a, b, rngs=rngs))
            self.layers.append(nnx.BatchNorm(b, momentum=0.7, rngs=rngs))
            self.layers.append(nnx.Dropout(0.2, rngs=rngs))
        self.head = nnx.Linear(hidden[-1], classes, rngs=rngs)

    def __call__(self, x):
        for k in range(0, len(self.layers), 3):
            lin, bn, drop = self.layers[k:k + 3]
            x = drop(nnx.gelu(bn(lin(x))))
        return nnx.softmax(self.head(x))


def test_nnx_mlp_classifier_trained():
    model = nnx_build(MLPClassifier, 12, (32, 16), 4)
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((64, 12)).astype(np.float32) * 2 + 1
    ys = (xs[:, :4].argmax(axis=1)).astype(np.int32)

    def loss_fn(m, x, y):
        p = m(x)
        return -jnp.mean(jnp.log(p[jnp.arange(len(y)), y] + 1e-7))

    @nnx.jit
    def step(m, x, y):
        loss, grads = nnx.value_and_grad(loss_fn)(m, x, y)
        nnx.update(m, jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, nnx.state(m, nnx.Param), grads))
        return loss
    losses = [float(step(model, xs[i:i + 16], ys[i:i + 16])) for i in range(0, 64, 16) for _ in range(3)]
    assert losses[-1] < losses[0]
    x = rand(5, 12, seed=7)
    m = nnx_check(model, x)
    assert "layers.1.mean" in m.traced.param_labels and "head.kernel" in m.traced.param_labels
    assert model.layers[1].use_running_average is False and model.layers[2].deterministic is False


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

class Sorting(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(6)(x)
        top = lax.lgamma(h)               # no rule for lgamma
        return lax.erf_inv(h * 0.1) + top          # nor for erf_inv


def test_unsupported_primitive_in_a_flax_layer_names_primitive_and_line():
    x = rand(2, 4)
    with pytest.raises(j2s.UnsupportedPrimitiveError) as e:
        j2s.from_flax(Sorting(), random_variables(Sorting(), x), x)
    assert set(e.value.primitives) == {"lgamma", "erf_inv"}
    msg = str(e.value)
    assert "test_flax.py" in msg and "- lgamma:" in msg and "- erf_inv:" in msg

    class NnxSorting(nnx.Module):
        def __call__(self, x):
            return lax.lgamma(x)
    with pytest.raises(j2s.UnsupportedPrimitiveError, match=r"lgamma: .*test_flax\.py:\d+"):
        j2s.from_nnx(NnxSorting(), x)


def test_wrong_argument_types_are_clear():
    x = rand(2, 3)
    lin = nnx_build(nnx.Linear, 3, 2)
    dense = nn.Dense(2)
    v = random_variables(dense, x)
    with pytest.raises(TypeError, match="from_nnx"):
        j2s.from_flax(lin, {"params": {}}, x)
    with pytest.raises(TypeError, match="from_flax"):
        j2s.from_nnx(dense, x)
    with pytest.raises(TypeError, match="no 'params' collection.*variables\\['params'\\]"):
        j2s.from_flax(dense, v["params"], x)
    with pytest.raises(TypeError, match="dict returned by module.init"):
        j2s.from_flax(dense, [v], x)
    with pytest.raises(TypeError, match="instance"):
        j2s.from_flax(nn.Dense, v, x)
    with pytest.raises(TypeError, match="flax.linen.Module"):
        j2s.from_flax(lambda p, x: x, v, x)
    with pytest.raises(TypeError, match="mutable=False"):
        j2s.from_flax(dense, v, x, mutable=["batch_stats"])
    with pytest.raises(TypeError, match="takes no variables"):
        j2s.from_nnx(lin, {"params": {}})
    with pytest.raises(TypeError, match="name must be a string"):
        j2s.from_nnx(lin, x, x)


def test_hard_wired_training_batchnorm_is_a_trace_error():
    class TrainOnly(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.BatchNorm(use_running_average=False)(x)
    class DropoutOn(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dropout(0.5, deterministic=False)(x)
    x = rand(4, 3)
    with pytest.raises(j2s.TraceError, match="inference mode(.|\n)*call_kwargs={'train': False}"):
        j2s.from_flax(TrainOnly(), random_variables(TrainOnly(), x), x)
    with pytest.raises(j2s.TraceError, match="needs PRNG"):
        j2s.from_flax(DropoutOn(), {}, x)


# ---------------------------------------------------------------------------------------------
# the documented examples stay runnable
# ---------------------------------------------------------------------------------------------

def test_bridge_docstring_examples():
    import doctest

    from jaxpr2sofie import flax_bridge
    result = doctest.testmod(flax_bridge, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.slow   # trains for a while (about 6 s): in .ci/run's slow set, as is the README run top to bottom
def test_example_script(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "flax_example.py"
    spec = importlib.util.spec_from_file_location("flax_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(str(tmp_path))
    out = capsys.readouterr().out
    assert (tmp_path / "FlaxCNN.hxx").exists() and (tmp_path / "NnxMLP.dat").exists()
    errors = [float(line.split("max abs error ")[1].split(",")[0])
              for line in out.splitlines() if "max abs error" in line]
    assert len(errors) == 2 and max(errors) < 1e-4
    assert "module still in training mode: True" in out


# ---------------------------------------------------------------------------------------------
# one set of options everywhere; variables that do not fit the module
# ---------------------------------------------------------------------------------------------
class TwoDense(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        h = nn.relu(nn.Dense(8, name="hidden")(x))
        return nn.Dense(3, name="out")(h) * (1.0 if train else 2.0)


def test_linen_takes_every_convert_option_and_call_kwargs():
    x = rand(2, 5)
    v = random_variables(TwoDense(), x)
    want = TwoDense().apply(v, x, train=False)
    m = j2s.from_flax(TwoDense(), v, x, progress=False, disable_passes=("fuse_elementwise",), blas="none",
                      output_names=["score"])
    assert m.graph.outputs == ["score"] and m.graph.blas == "none"
    check(m, want, x)
    # the module's own arguments go through call_kwargs (here: the training branch, scale 1)
    m = j2s.from_flax(TwoDense(), v, x, call_kwargs={"train": True})
    check(m, TwoDense().apply(v, x, train=True), x)
    # a keyword the bridge does not know is named, with where the module's arguments go
    with pytest.raises(TypeError, match=r"from_flax\(\) got unknown keyword argument\(s\) 'train'.*call_kwargs="):
        j2s.from_flax(TwoDense(), v, x, train=False)
    with pytest.raises(TypeError, match="'progres' \\(did you mean 'progress'\\?\\)"):
        j2s.from_flax(TwoDense(), v, x, progres=False)


def test_nnx_takes_every_convert_option_and_call_kwargs():
    class Scaled(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(5, 3, rngs=rngs)

        def __call__(self, x, scale=1.0):
            return self.lin(x) * scale
    module, x = Scaled(nnx.Rngs(0)), rand(2, 5)
    m = j2s.from_nnx(module, x, progress=False, disable_passes=("fuse_elementwise",), call_kwargs={"scale": 3.0})
    check(m, module(x, scale=3.0), x)
    with pytest.raises(TypeError, match=r"from_nnx\(\) got unknown keyword argument\(s\) 'scale'.*call_kwargs="):
        j2s.from_nnx(module, x, scale=3.0)


def test_linen_variables_that_do_not_fit_name_each_path_and_shape():
    x = rand(2, 5)
    v = random_variables(TwoDense(), x)
    wrong = {"params": {"hidden": {"kernel": rand(6, 8), "bias": v["params"]["hidden"]["bias"]},
                        "out": {"kernel": v["params"]["out"]["kernel"]}}}
    with pytest.raises(j2s.TraceError) as e:
        j2s.from_flax(TwoDense(), wrong, x)
    msg = str(e.value)
    assert "variables['params']['hidden']['kernel']: expected shape (5, 8), given (6, 8)" in msg, msg
    assert "variables['params']['out']['bias']: missing (expected shape (3,))" in msg, msg
