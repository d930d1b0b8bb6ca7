"""Pytree-based JAX libraries go through `convert` with a two-line recipe each (see README)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import assert_close, convert_and_check

eqx = pytest.importorskip("equinox")
hk = pytest.importorskip("haiku")

rng = np.random.default_rng(0)


def test_equinox_mlp():
    model = eqx.nn.MLP(8, 3, 16, 2, activation=jax.nn.gelu, key=jax.random.PRNGKey(0))
    # the recipe: arrays become params, everything else stays static
    params, static = eqx.partition(model, eqx.is_array)
    fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    m = convert_and_check(fn, params, x)
    assert_close(m.compile()(x), np.asarray(jax.vmap(model)(x)), what="equinox")
    assert "layers.0.weight" in {t.label for t in m.graph.weights()}


def test_equinox_conv():
    key1, key2 = jax.random.split(jax.random.PRNGKey(1))
    conv = eqx.nn.Conv2d(3, 4, 3, padding=1, key=key1)
    lin = eqx.nn.Linear(4 * 6 * 6, 2, key=key2)
    model = (conv, lin)
    params, static = eqx.partition(model, eqx.is_array)

    def fn(p, x):
        c, l = eqx.combine(p, static)
        return jax.vmap(lambda im: l(jax.nn.relu(c(im)).reshape(-1)))(x)

    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    convert_and_check(fn, params, x)


def test_haiku_mlp():
    net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([16, 3])(x)))
    x = rng.standard_normal((4, 8)).astype(np.float32)
    params = net.init(jax.random.PRNGKey(0), x)
    m = convert_and_check(net.apply, params, x)          # the recipe: apply is already fn(params, x)
    assert_close(m.compile()(x), np.asarray(net.apply(params, x)), what="haiku")


def test_haiku_with_state_batchnorm_conv():
    def forward(x, is_training):
        x = hk.Conv2D(4, 3)(x)
        x = hk.BatchNorm(True, True, 0.9)(x, is_training)
        return jax.nn.relu(x).mean(axis=(1, 2))

    net = hk.without_apply_rng(hk.transform_with_state(forward))
    x = rng.standard_normal((2, 6, 6, 3)).astype(np.float32)
    params, state = net.init(jax.random.PRNGKey(0), x, True)
    for _ in range(3):                                    # non-trivial running statistics
        _, state = net.apply(params, state, x * 2.0 + 1.0, True)
    # the recipe: params and state together, inference mode, keep the output only
    fn = lambda ps, x: net.apply(ps[0], ps[1], x, False)[0]
    m = convert_and_check(fn, (params, state), x, atol=1e-4)
    assert_close(m.compile()(x), np.asarray(net.apply(params, state, x, False)[0]), rtol=1e-4, what="haiku state")


# the Equinox/Haiku script (about 6 s) in .ci/run's slow set; test_haiku_* and test_equinox_* run its models
@pytest.mark.parametrize("script", ["jax_example.py", pytest.param("equinox_haiku_example.py", marks=pytest.mark.slow)])
def test_example_scripts_run(script, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / script
    res = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    errors = [float(line.split("max abs error ")[1].split(",")[0]) for line in res.stdout.splitlines()
              if "max abs error" in line]
    assert errors and max(errors) < 1e-5
