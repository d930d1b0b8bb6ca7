"""SOFIE traps the differential fuzzer found through real SOFIE (tests/fuzz/sofie_leg.py), each with
a minimal reproducer: the standard ONNX export (target="onnx") read by SOFIE gives the wrong answer,
and the export made for SOFIE (target="sofie", what to_rmodel and generate(backend="sofie") read)
matches JAX, built under AddressSanitizer and UndefinedBehaviorSanitizer. If a SOFIE release fixes
a trap, its first test fails and says so: the workaround (onnx.SOFIE_TRAPS) can then go.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort
import pytest
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.errors import BuildError
from jaxpr2sofie.model import SofieModel
from jaxpr2sofie.onnx import SOFIE_TRAPS

from helpers import assert_close

import sofie  # noqa: F401  (the test extra installs it: a missing package fails, it does not skip)

RNG = np.random.default_rng(20261205)


def _sofie_reading(m, target, sanitize=True):
    """SOFIE's compiled header for `m`, made from the export for `target`."""
    if target == "sofie":
        return m.compile_sofie(sanitize=sanitize, route="onnx")
    real = SofieModel.to_onnx
    with pytest.MonkeyPatch.context() as mp:   # SOFIE reads the standard export instead
        mp.setattr(SofieModel, "to_onnx", lambda self, path=None, opset=None, target="onnx": real(self, path, opset))
        return m.compile_sofie(sanitize=sanitize, route="onnx")


def _run(c, *xs):
    out = c(*xs)
    return out if not isinstance(out, tuple) else out[0]


def test_every_trap_found_here_is_listed():
    for trap in ("* strided Slice whose step does not divide its span", "* dilated ConvTranspose", "Pad with -inf", "* Expand at a run-time batch",
                 "* broadcasting Bitwise* at a run-time batch"):
        assert trap in SOFIE_TRAPS, trap


def test_strided_slice_length():
    """SOFIE's Slice counts floor((end - start) / step) elements: x[0:9:2] has 4 rows, not 5."""
    x = RNG.normal(size=(9, 3)).astype(np.float32)
    f = lambda x: jnp.tanh(x[0:9:2]) * 2   # noqa: E731
    m = j2s.convert(f, None, x, name="Strided", progress=False)
    with pytest.raises(AssertionError):   # SOFIE's output holds 4 rows: the 5th is never written
        got = _run(_sofie_reading(m, "onnx", sanitize=False), x)
        assert got.shape == (5, 3)
        assert_close(got, np.asarray(f(x)), 1e-5)
    assert_close(_run(_sofie_reading(m, "sofie"), x), np.asarray(f(x)), 1e-5, what="strided slice")


def test_dilated_conv_transpose():
    """SOFIE's ConvTranspose with dilations > 1 writes past its output buffer."""
    x = RNG.normal(size=(1, 5, 5, 2)).astype(np.float32)
    k = RNG.normal(size=(2, 2, 2, 3)).astype(np.float32)

    def f(k, x):
        return lax.conv_general_dilated(x, k, (1, 1), ((0, 0), (0, 0)), lhs_dilation=(1, 2), rhs_dilation=(2, 2),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    m = j2s.convert(f, k, x, name="DilatedT", progress=False)
    with pytest.raises(BuildError, match="heap-buffer-overflow"):
        _run(_sofie_reading(m, "onnx"), x)
    ct = [n for n in m.to_onnx(target="sofie").graph.node if n.op_type == "ConvTranspose"]
    assert [list(a.ints) for n in ct for a in n.attribute if a.name == "dilations"] == [[1, 1]]
    assert_close(_run(_sofie_reading(m, "sofie"), x), np.asarray(f(k, x)), 1e-4, what="dilated ConvTranspose")


def test_asymmetrically_padded_max_pool():
    """SOFIE writes a Pad of -inf as `-inf`, which does not compile: the edge is padded with copies of
    itself (exact: a window reaching into the padding holds the edge element); -inf inputs too."""
    x = RNG.normal(size=(2, 5, 6, 3)).astype(np.float32)
    x[0, 0, 0, 0] = -np.inf
    f = lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 1, 1),   # noqa: E731
                                    ((0, 0), (2, 1), (1, 2), (0, 0)))
    m = j2s.convert(f, None, x, name="PadPool", progress=False)
    with pytest.raises(BuildError, match="inf"):
        _run(_sofie_reading(m, "onnx", sanitize=False), x)
    assert "Pad" not in {n.op_type for n in m.to_onnx(target="sofie").graph.node}
    assert_close(_run(_sofie_reading(m, "sofie"), x), np.asarray(f(x)), 1e-5, what="padded max pool")
    # SOFIE's own operators, built from the IR, pad the same way (not with -FLT_MAX: the -inf stays)
    assert np.array_equal(_run(m.compile_sofie(sanitize=True, route="operators"), x), np.asarray(f(x)))


@pytest.mark.parametrize("case", ["expand", "bitwise"])
def test_run_time_batch_broadcasts(case):
    """At a run-time batch, SOFIE's Expand to [N,2,3,1] from [N,1,3,1] and its BitwiseXor of [N,1,1,4]
    with a [1,1,4] weight are wrong past the first event."""
    if case == "expand":
        params = None
        shapes, dtype = [(2, 3, 1), (1, 3, 1)], np.float32
        f = lambda p, xs: xs[0] - jnp.broadcast_to(xs[1], xs[0].shape)   # noqa: E731
    else:
        params = RNG.integers(-20, 21, (1, 1, 4)).astype(np.int32)
        shapes, dtype = [(1, 1, 4)], np.int32
        f = lambda p, xs: jax.vmap(lambda a: lax.bitwise_xor(a, p))(xs[0])   # noqa: E731

    def inputs(n):
        return tuple(RNG.integers(-20, 21, (n,) + s).astype(dtype) for s in shapes)
    m = j2s.convert(f, params, inputs(3), batch="dynamic", max_batch=8, name=f"Dyn{case.title()}", progress=False)
    plain, ours = _sofie_reading(m, "onnx", sanitize=False), _sofie_reading(m, "sofie")
    xs = inputs(7)
    want = np.asarray(f(params, xs))
    assert not np.array_equal(_run(plain, *xs), want), "SOFIE now reads the standard form right: drop the trap"
    for n in (1, 7, 8):
        xs = inputs(n)
        assert_close(_run(ours, *xs), np.asarray(f(params, xs)), 1e-5, what=f"{case} at batch {n}")


def test_scan_at_a_run_time_batch_exports():
    """Not a SOFIE trap but found by the same leg: a loop's ONNX body at a run-time batch named its
    batch dimension with a Python object (a raw ValueError from onnx); onnxruntime now runs it."""
    def p(a0):
        v0 = a0[:, 1:]
        ys = lax.scan(lambda c, r: (jnp.maximum(c, r), c - r), jnp.zeros(v0.shape[1:], jnp.float32), v0)[1]
        return jax.nn.gelu(ys, approximate=False)
    f = jax.vmap(p)
    m = j2s.convert(f, None, RNG.normal(size=(3, 4, 6)).astype(np.float32), batch="dynamic", progress=False)
    sess = ort.InferenceSession(m.to_onnx().SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3, 5):
        x = RNG.normal(size=(n, 4, 6)).astype(np.float32)
        assert_close(sess.run(None, {sess.get_inputs()[0].name: x})[0], np.asarray(f(x)), 1e-5, what=f"batch {n}")
