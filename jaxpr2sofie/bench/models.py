"""The peer benchmark's models (issue 14), each with random but fixed weights.

Plain JAX wherever it is enough, so that the base install runs every model but MobileNetV2
(which needs Keras). Each builder returns `fn(params, x)`, its params and the per-event input
shape; builders are called lazily, so Keras is imported only when model G runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..examples import jet_tagger_params

MLP_BATCHES = (1, 16, 64, 256, 1024)
BATCHES = (1, 16, 64, 256)
# MobileNetV2 at batch 64 takes seconds per call under some peers: past 16 the full run would
# not fit its time budget on a 2-core machine (pass --batches to go further).
MOBILENET_BATCHES = (1, 16)


@dataclass(frozen=True)
class Built:
    fn: Callable          # fn(params, x) -> one array
    params: Any
    event_shape: tuple    # the input's shape without the batch


@dataclass(frozen=True)
class BenchModel:
    key: str              # the letter of the issue: A..H
    name: str             # C++ model name (a batch suffix is added per header)
    title: str
    batches: tuple
    build: Callable[[], Built]
    needs: str = ""       # an optional package the model needs, named in its "absent" cells

    def sample(self, event_shape, batch: int, seed: int = 1) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((batch, *event_shape)).astype(np.float32)


# -- MLPs ------------------------------------------------------------------------------------------

def mlp(params, x):
    """ReLU hidden layers, a linear output: logits, which stay of order one."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
    return x @ params[-1]["kernel"] + params[-1]["bias"]


def _mlp(*widths):
    return lambda: Built(mlp, jet_tagger_params(seed=sum(widths), widths=widths), (widths[0],))


# -- C: a small CNN on 28x28x1 -----------------------------------------------------------------------

def _cnn():
    # Flax nnx rather than raw lax: that is how a JAX user writes a CNN, and jax2onnx exports
    # nnx.max_pool as a 2-D MaxPool but a bare lax.reduce_window as a 4-D one, which ONNX Runtime
    # refuses ("Unsupported pooling size")
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(1, 16, (3, 3), padding="VALID", rngs=rngs)
            self.conv2 = nnx.Conv(16, 32, (3, 3), padding="VALID", rngs=rngs)
            # 28 -conv3-> 26 -pool-> 13 -conv3-> 11 -pool-> 5: 5*5*32 features
            self.dense1 = nnx.Linear(800, 64, rngs=rngs)
            self.dense2 = nnx.Linear(64, 10, rngs=rngs)

        def __call__(self, x):
            # window_shape by keyword: jax2onnx's stand-in for nnx.max_pool takes only x positionally
            x = nnx.max_pool(nnx.relu(self.conv1(x)), window_shape=(2, 2), strides=(2, 2))
            x = nnx.max_pool(nnx.relu(self.conv2(x)), window_shape=(2, 2), strides=(2, 2))
            x = nnx.relu(self.dense1(x.reshape(x.shape[0], -1)))
            return self.dense2(x)

    graphdef, state = nnx.split(CNN(nnx.Rngs(3)))
    # nnx initialises biases to zero: random ones, so that a dropped bias would show in the check
    rng = np.random.default_rng(3)
    state = jax.tree.map(lambda v: v + 0.1 * rng.standard_normal(v.shape).astype(np.float32)
                         if v.ndim == 1 else v, state)
    return Built(lambda st, x: nnx.merge(graphdef, st)(x), state, (28, 28, 1))


# -- F: an LSTM over 20 steps --------------------------------------------------------------------------

def lstm(params, xs):
    """xs: [batch, steps, features]; the last hidden state through a dense layer."""
    hidden = params["wh"].shape[0]

    def cell(carry, x):
        h, c = carry
        i, f, g, o = jnp.split(x @ params["wx"] + h @ params["wh"] + params["b"], 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), None

    zeros = jnp.zeros((xs.shape[0], hidden), xs.dtype)
    (h, _), _ = lax.scan(cell, (zeros, zeros), jnp.swapaxes(xs, 0, 1))
    return h @ params["out"]["kernel"] + params["out"]["bias"]


def _lstm(features=10, hidden=8, steps=20):
    rng = np.random.default_rng(6)
    params = {"wx": (rng.standard_normal((features, 4 * hidden)) / np.sqrt(features)).astype(np.float32),
              "wh": (rng.standard_normal((hidden, 4 * hidden)) / np.sqrt(hidden)).astype(np.float32),
              "b": (0.1 * rng.standard_normal(4 * hidden)).astype(np.float32),
              "out": {"kernel": (rng.standard_normal((hidden, 1)) / np.sqrt(hidden)).astype(np.float32),
                      "bias": np.zeros(1, np.float32)}}
    return Built(lstm, params, (steps, features))


# -- G: Keras MobileNetV2 -----------------------------------------------------------------------------

def _mobilenet():
    from ..keras_bridge import _keras, keras_function
    keras = _keras()
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classifier_activation=None)
    # a fresh BatchNorm's statistics are 0/1 and the logits of a deep random net then nearly vanish
    rng = np.random.default_rng(7)
    for v in model.non_trainable_variables + model.trainable_variables:
        leaf = v.path.rsplit("/", 1)[-1]
        if leaf == "moving_variance":
            v.assign(rng.uniform(0.5, 2.0, tuple(v.shape)).astype(np.float32))
        elif leaf in ("moving_mean", "beta"):
            v.assign((0.3 * rng.standard_normal(tuple(v.shape))).astype(np.float32))
        elif leaf == "gamma":
            v.assign((1.0 + 0.3 * rng.standard_normal(tuple(v.shape))).astype(np.float32))
    kf = keras_function(model, example_input=np.zeros((1, 96, 96, 3), np.float32))
    return Built(kf.fn, kf.params, (96, 96, 3))


# -- H: a 2-block transformer encoder -------------------------------------------------------------------

def _layernorm(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * lax.rsqrt(var + 1e-5) * p["scale"] + p["bias"]


def transformer(params, x, heads=4):
    """Pre-norm encoder blocks on [batch, seq, d_model]: attention and a GELU MLP, each residual."""
    b, s, d = x.shape
    for blk in params:
        h = _layernorm(x, blk["ln1"])
        q, k, v = (jnp.swapaxes((h @ blk[n]).reshape(b, s, heads, d // heads), 1, 2) for n in ("wq", "wk", "wv"))
        att = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2) / np.sqrt(d // heads), axis=-1)
        x = x + jnp.swapaxes(att @ v, 1, 2).reshape(b, s, d) @ blk["wo"]
        h = _layernorm(x, blk["ln2"])
        x = x + jax.nn.gelu(h @ blk["w1"] + blk["b1"]) @ blk["w2"] + blk["b2"]
    return x


def _transformer(seq=16, d=64, mlp_width=128, blocks=2):
    rng = np.random.default_rng(8)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    def ln():
        return {"scale": (1 + 0.1 * rng.standard_normal(d)).astype(np.float32),
                "bias": (0.1 * rng.standard_normal(d)).astype(np.float32)}
    params = [{"ln1": ln(), "wq": w(d, d), "wk": w(d, d), "wv": w(d, d), "wo": w(d, d), "ln2": ln(),
               "w1": w(d, mlp_width), "b1": np.zeros(mlp_width, np.float32), "w2": w(mlp_width, d),
               "b2": np.zeros(d, np.float32)} for _ in range(blocks)]
    return Built(transformer, params, (seq, d))


MODELS = {m.key: m for m in (
    BenchModel("A", "MlpA", "MLP 16-64-64-32-1", MLP_BATCHES, _mlp(16, 64, 64, 32, 1)),
    BenchModel("B", "MlpB", "MLP 256-512x4-10", MLP_BATCHES, _mlp(256, 512, 512, 512, 512, 10)),
    BenchModel("C", "CnnC", "CNN 28x28x1, conv16-pool-conv32-pool-64-10", BATCHES, _cnn, needs="flax"),
    BenchModel("D", "HiggsD", "Higgs MLP 28-300x3-1", MLP_BATCHES, _mlp(28, 300, 300, 300, 1)),
    BenchModel("E", "RootE", "ROOT dense 7-100x5-2", MLP_BATCHES, _mlp(7, 100, 100, 100, 100, 100, 2)),
    BenchModel("F", "LstmF", "LSTM 10 in, 20 steps, hidden 8", BATCHES, _lstm),
    BenchModel("G", "MobileNetG", "Keras MobileNetV2 96x96x3", MOBILENET_BATCHES, _mobilenet, needs="keras"),
    BenchModel("H", "EncoderH", "Transformer encoder 2x(seq16 d64 h4 mlp128)", BATCHES, _transformer),
)}
