"""Convert a small Flax model (linen, then the same idea in nnx) to SOFIE-style C++.

    python examples/flax_example.py [output-directory]

Writes <dir>/FlaxCNN.hxx + .dat and <dir>/NnxMLP.hxx + .dat (default: out/), compiles both with
g++, checks them against Flax and prints the error and the operator summary.
"""
from __future__ import annotations

import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxpr2sofie as j2s


class FlaxCNN(nn.Module):
    """conv -> batch norm -> relu -> max pool -> dense head, with a `train` flag."""

    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.Conv(8, (3, 3))(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(0.25, deterministic=not train)(x)
        return nn.softmax(nn.Dense(4)(x))


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(16, 32, rngs=rngs)
        self.norm = nnx.LayerNorm(32, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.out = nnx.Linear(32, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(nnx.gelu(self.norm(self.hidden(x)))))


def main(out_dir="out"):
    # --- linen: module + the variables dict from init (params and batch_stats) -------------
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 3)).astype(np.float32)
    cnn = FlaxCNN()
    variables = cnn.init(jax.random.key(0), x, train=False)
    # a training-mode pass so BatchNorm's running statistics are not the trivial (0, 1)
    _, updates = cnn.apply(variables, x * 2 + 1, train=True, mutable=["batch_stats"],
                           rngs={"dropout": jax.random.key(1)})
    variables = {**variables, **updates}

    model = j2s.from_flax(cnn, variables, x, name="FlaxCNN")     # applied with train=False
    print(model.generate(out_dir))
    y_cpp = model.compile()(x)                                    # the real g++ build, called via ctypes
    y_flax = cnn.apply(variables, x, train=False)
    print("linen:", model.validate(x), "| vs Flax apply:", float(np.abs(y_cpp - y_flax).max()))
    print(model.summary())

    # --- nnx: the module itself (converted in eval mode; the module is left as it is) --------
    mlp = NnxMLP(nnx.Rngs(0))
    xm = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    model = j2s.from_nnx(mlp, xm, name="NnxMLP")
    print(model.generate(out_dir))
    print("nnx:", model.validate(xm), "| module still in training mode:", mlp.drop.deterministic is False)
    print(model.summary())


if __name__ == "__main__":
    main(*sys.argv[1:])
