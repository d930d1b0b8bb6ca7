"""Model files that must not be trusted: code inside a .keras file is not run, and a custom layer that
cannot be found, a weights-only .h5 and a zip of garbage are clear ModelFileErrors, never crashes."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")

import jaxpr2sofie as j2s  # noqa: E402


def _lambda_model():
    x = keras.Input((4,))
    y = keras.layers.Lambda(lambda t: t * 2.0 + 1.0)(keras.layers.Dense(3)(x))
    return keras.Model(x, y)


def test_lambda_layer_is_refused_by_default_and_says_how_to_opt_in(tmp_path):
    path = tmp_path / "lam.keras"
    _lambda_model().save(path)
    with pytest.raises(j2s.ModelFileError) as err:
        j2s.from_keras(path)
    msg = str(err.value)
    assert str(path) in msg and "holds Python code" in msg and "safe_mode=False" in msg, msg


def test_lambda_layer_with_safe_mode_off_converts(tmp_path):
    model = _lambda_model()
    path = tmp_path / "lam.keras"
    model.save(path)
    m = j2s.from_keras(path, safe_mode=False)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    np.testing.assert_allclose(m.compile()(x), model.predict(x, verbose=0), atol=1e-5)


def test_custom_layer_that_cannot_be_imported(tmp_path):
    # the layer class exists only in the process that saved the file
    save = f"""
import os; os.environ["KERAS_BACKEND"] = "jax"
import keras
@keras.saving.register_keras_serializable(package="gone")
class Gone(keras.layers.Layer):
    def call(self, x):
        return x * 3.0
x = keras.Input((4,))
keras.Model(x, Gone()(x)).save({str(tmp_path / 'custom.keras')!r})
"""
    subprocess.run([sys.executable, "-c", save], check=True, capture_output=True, timeout=300)
    with pytest.raises(j2s.ModelFileError) as err:
        j2s.from_keras(tmp_path / "custom.keras")
    msg = str(err.value)
    assert str(tmp_path / "custom.keras") in msg and "custom_objects" in msg, msg


def test_keras_zip_holding_garbage(tmp_path):
    path = tmp_path / "garbage.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "{ this is not json")
        z.writestr("model.weights.h5", b"\0" * 64)
    with pytest.raises(j2s.ModelFileError) as err:
        j2s.from_keras(path)
    assert str(path) in str(err.value)


def test_h5_without_a_model_config(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "only.weights.h5"
    model.save_weights(path)
    renamed = tmp_path / "only.h5"
    path.rename(renamed)
    with pytest.raises(j2s.ModelFileError) as err:
        j2s.from_keras(renamed)
    assert str(renamed) in str(err.value) and "weights only" in str(err.value)
