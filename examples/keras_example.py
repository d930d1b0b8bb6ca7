"""Convert Keras 3 models to SOFIE-style C++: one built in memory, one from a file trained under TensorFlow.

    python examples/keras_example.py [output-directory]

Writes <dir>/KerasTagger.hxx + .dat and <dir>/keras_cnn.hxx + .dat (default: out/), compiles both
with g++, checks them against Keras (and against the outputs TensorFlow recorded for the file)
and prints the error and the operator summary. TensorFlow is not needed: Keras runs on JAX.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"      # before Keras is imported (from_keras would also set it)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import jaxpr2sofie as j2s  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def in_memory(out: Path):
    """A functional jet tagger: Dense + BatchNormalization + Dropout, softmax over 3 classes."""
    x = keras.Input((16,), name="jet_features")
    h = keras.layers.Dense(32, activation="relu")(x)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Dropout(0.2)(h)            # identity at inference
    h = keras.layers.Dense(32, activation="swish")(h)
    model = keras.Model(x, keras.layers.Dense(3, activation="softmax")(h))

    m = j2s.from_keras(model, name="KerasTagger")    # example input from model.inputs: (1, 16) float32
    m.generate(out)
    batch = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    got, want = m.compile()(batch), model.predict(batch, verbose=0)
    print(m.summary())
    print(f"KerasTagger: max |C++ - Keras| = {np.abs(got - want).max():.2e}\n")


def from_file(out: Path):
    """A small CNN trained and saved (.keras) under TensorFlow, converted here under JAX."""
    m = j2s.from_keras(FIXTURES / "keras_cnn.keras")          # named after the file: keras_cnn
    m.generate(out)
    recorded = np.load(FIXTURES / "keras_tf_outputs.npz")
    x, y_tf = recorded["cnn/x"], recorded["cnn/y_0"]
    compiled = m.compile()
    got = np.concatenate([compiled(x[i:i + 1]) for i in range(len(x))])   # one event at a time
    print(m.summary())
    print(f"keras_cnn: max |C++ - TensorFlow {recorded['tensorflow_version']}| = {np.abs(got - y_tf).max():.2e}, "
          f"{m.validate()}")


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
    in_memory(out)
    from_file(out)
    print(f"C++ written to {out}/")
