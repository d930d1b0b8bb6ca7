"""Bundled example: a small jet-tagging MLP (16 features -> 64 -> 64 -> 5 classes), as HEP uses them."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

N_FEATURES, N_CLASSES = 16, 5


def jet_tagger(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["kernel"] + layer["bias"])
    return jax.nn.softmax(x @ params[-1]["kernel"] + params[-1]["bias"])


def jet_tagger_params(seed: int = 0, widths=(N_FEATURES, 64, 64, N_CLASSES)):
    rng = np.random.default_rng(seed)
    return [{"kernel": (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32),
             "bias": (0.1 * rng.standard_normal(b)).astype(np.float32)}
            for a, b in zip(widths[:-1], widths[1:])]


# The names `jaxpr2sofie convert/inspect/bench` look for in a model file (see README).
function = jax.jit(jet_tagger)
params = jet_tagger_params()
example_input = np.zeros((1, N_FEATURES), np.float32)
