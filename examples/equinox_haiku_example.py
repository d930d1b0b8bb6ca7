"""Equinox and Haiku models through `convert`, each with its two-line recipe."""
import equinox as eqx
import haiku as hk
import jax
import numpy as np

import jaxpr2sofie as j2s

x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)

# Equinox: the arrays of the model are the params, the rest is static
model = eqx.nn.MLP(8, 3, 16, 2, key=jax.random.PRNGKey(0))
params, static = eqx.partition(model, eqx.is_array)
m = j2s.convert(lambda p, x: jax.vmap(eqx.combine(p, static))(x), params, x, name="EqxMLP")
print("Equinox MLP, C++ vs JAX:", m.validate(x))

# Haiku: a transformed function's apply already is fn(params, x)
net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([16, 3])(x)))
m = j2s.convert(net.apply, net.init(jax.random.PRNGKey(0), x), x, name="HkMLP")
print("Haiku MLP, C++ vs JAX:", m.validate(x))
