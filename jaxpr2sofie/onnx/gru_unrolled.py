"""A GRU that resets before its recurrent product (Keras `reset_after=False`, ONNX
linear_before_reset=0) spelled step by step, for SOFIE.

SOFIE's GRU computes that case's (r * h) R with an sgemm whose input and output are the same
buffer, so the recurrent term of the candidate is lost (wrong numbers, sofie 0.1.0). The same
maths in plain operators SOFIE reads (Gemm, MatMul, Slice, Sigmoid, Tanh, Mul, Add, Sub, Concat):
the input projections of every step in one Gemm, then per step

    z, r = sigmoid(xw_t[:, :2H] + h R_zr);  n = tanh(xw_t[:, 2H:] + (r * h) R_n + Rb_n);  h = n + z * (h - n)

which is ONNX's GRU equation rearranged, not an approximation. The sequence length is known at
export; a longer one than MAX_STEPS is refused rather than written out node by node.
"""
from __future__ import annotations

import numpy as np

from .builder import NotExportable

MAX_STEPS = 256


def gru_reset_before(b, x, w, r, bias, h0, length, batch, hid):
    """(Y [length, 1, batch, hid], Y_h [1, batch, hid]) of an ONNX GRU with linear_before_reset=0 over
    x [length, batch, width], from its W [1, 3H, width], R [1, 3H, H], B [1, 6H] (gates z, r, h)."""
    if length > MAX_STEPS:
        raise NotExportable(f"a GRU with reset_after=False over {length} steps for SOFIE: SOFIE's own GRU gets this "
                            f"case wrong and the step-by-step form is written out for at most {MAX_STEPS} steps")
    width = w.shape[-1]
    wb, rb = bias[0, :3 * hid], bias[0, 3 * hid:]
    proj_bias = np.concatenate([wb[:2 * hid] + rb[:2 * hid], wb[2 * hid:]])
    rows = b.reshape(x, (length * batch, width))
    xw = b.node("Gemm", [rows, b.const(w[0], "GRU_W"), b.const(proj_bias, "GRU_Wb")], hint="gru_x", transB=1,
                shape=(length * batch, 3 * hid), dtype="float32")
    xw = b.reshape(xw, (length, batch, 3 * hid))
    r_zr, r_n = b.const(np.ascontiguousarray(r[0, :2 * hid].T), "GRU_Rzr"), b.const(np.ascontiguousarray(r[0, 2 * hid:].T), "GRU_Rn")
    rb_n = b.const(rb[2 * hid:], "GRU_Rbn")
    h = b.reshape(h0, (batch, hid))
    ys = []
    for t in range(length):
        xt = b.reshape(b.slice(xw, {0: (t, t + 1, 1)}), (batch, 3 * hid))
        hr = b.node("MatMul", [h, r_zr], hint="gru_hr", shape=(batch, 2 * hid), dtype="float32")
        zr = b.ew("Sigmoid", b.ew("Add", b.slice(xt, {1: (0, 2 * hid, 1)}), hr))
        z, reset = b.slice(zr, {1: (0, hid, 1)}), b.slice(zr, {1: (hid, 2 * hid, 1)})
        rec = b.node("Gemm", [b.ew("Mul", reset, h), r_n, rb_n], hint="gru_rn", shape=(batch, hid), dtype="float32")
        n = b.ew("Tanh", b.ew("Add", b.slice(xt, {1: (2 * hid, 3 * hid, 1)}), rec))
        h = b.ew("Add", n, b.ew("Mul", z, b.ew("Sub", h, n)))
        ys.append(b.reshape(h, (1, 1, batch, hid)))
    y = ys[0] if length == 1 else b.node("Concat", ys, hint="gru_y", shape=(length, 1, batch, hid), dtype="float32",
                                          axis=0)
    return [y, b.reshape(h, (1, batch, hid))]
