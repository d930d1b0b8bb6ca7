"""Plain JAX: convert a jitted function with a params pytree, write the C++, compile, validate."""
import jax
import jax.numpy as jnp
import numpy as np

import jaxpr2sofie as j2s

rng = np.random.default_rng(0)
params = {"conv": rng.standard_normal((3, 3, 1, 4)).astype(np.float32) * 0.3,
          "dense": {"kernel": rng.standard_normal((4, 2)).astype(np.float32), "bias": np.zeros(2, np.float32)}}


@jax.jit
def net(p, x):                                   # x: (batch, 8, 8, 1) calorimeter image
    h = jax.lax.conv_general_dilated(x, p["conv"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h).max(axis=(1, 2))          # global max pool
    return jax.nn.softmax(h @ p["dense"]["kernel"] + p["dense"]["bias"])


x = np.zeros((1, 8, 8, 1), np.float32)
m = j2s.convert(net, params, x, name="CaloNet")
print(m.summary())
print("files:", *m.generate("out/"))
print("C++ vs JAX:", m.validate(rng.standard_normal(x.shape).astype(np.float32)))
