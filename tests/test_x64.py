"""int64 end to end with jax_enable_x64: counters, carries, argmax results and outputs of scans and
fori loops stay int64 and exact. Run in a subprocess, as x64 is a process-wide JAX setting."""
from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = textwrap.dedent("""
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp, numpy as np
    from jax import lax
    import jaxpr2sofie as j2s

    def f(x, n):
        def body(c, xi):
            i, acc, m = c
            acc = acc + xi * i
            m = jnp.maximum(m, jnp.argmax(xi).astype(jnp.int64))
            return (i + 1, acc, m), acc.sum()
        init = (jnp.int64(1), jnp.zeros(x.shape[1], jnp.int64), jnp.int64(0))
        (i, acc, m), ys = lax.scan(body, init, x)
        k = lax.fori_loop(0, 3, lambda j, v: v * 2 + n, n)
        return acc, ys, m, k + i

    # values past 2^31, so an int32 anywhere on the way would show
    x = np.arange(60, dtype=np.int64).reshape(12, 5) * 3_000_000_000 % 7_000_000_019
    n = np.array(5, np.int64)
    m = j2s.convert(lambda xs: f(*xs), None, (x, n), name="X64", progress=False)
    got, want = m.compile()(x, n), f(x, n)
    for g, w in zip(got, want):
        w = np.asarray(w)
        assert g.dtype == w.dtype == np.int64, (g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w)
    assert np.abs(want[0]).max() > 2**31
    print("x64 ok")
""")


def test_int64_end_to_end_with_x64():
    res = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "x64 ok" in res.stdout
