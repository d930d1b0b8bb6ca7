"""An ONNX LSTM, GRU or RNN node's equations written out step by step, for SOFIE.

SOFIE reads those nodes but gets two cases wrong or refuses them (sofie 0.1.0):
- a GRU with linear_before_reset=0 (Keras `reset_after=False`): SOFIE computes (r * h) R with an
  sgemm whose input and output are the same buffer, so the candidate loses its recurrent term;
- any of them at a run-time (Dim) batch: SOFIE reads their input's shape as a fixed one ("is a
  dynamic tensor").
The same maths in plain operators SOFIE reads (Gemm, MatMul, Slice, Sigmoid, Tanh, Mul, Add, Sub,
Concat): per step the input projection (a Gemm) and the ONNX cell (gates in ONNX
order: LSTM i, o, f, c; GRU z, r, h), e.g. for a GRU

    z, r = sigmoid(xw_t[:, :2H] + h R_zr);  n = tanh(xw_t[:, 2H:] + (r * h) R_n + Rb_n);  h = n + z * (h - n)

rearranged, not approximated. The sequence length is known at export; a sequence longer than
MAX_STEPS is refused rather than written out node by node.
"""
from __future__ import annotations

import numpy as np

from .builder import NotExportable

MAX_STEPS = 256
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def needed(b, op_type, attrs, batch) -> bool:
    """Whether SOFIE needs the node written out (see the module docstring)."""
    from .builder import symbolic
    return b.target == "sofie" and (symbolic(batch) or (op_type == "GRU" and not attrs.get("linear_before_reset")))


def unrolled(b, op_type, attrs, x, w, r, bias, states, length, batch, hid):
    """The outputs of an ONNX `op_type` node (forward; Y [length, 1, batch, hid], Y_h and for an LSTM
    Y_c [1, batch, hid]) over x [length, batch, width], from its W [1, G*H, width], R [1, G*H, H],
    B [1, 2*G*H] and initial states [1, batch, hid] (h, then c)."""
    if length > MAX_STEPS:
        raise NotExportable(f"an {op_type} over {length} steps for SOFIE: SOFIE's own node cannot take this one (a "
                            f"run-time batch, or a GRU with reset_after=False) and the step-by-step form is written "
                            f"out for at most {MAX_STEPS} steps")
    gates, width = GATES[op_type], w.shape[-1]
    wb, rb = bias[0, :gates * hid], bias[0, gates * hid:]
    # R's bias joins W's in the projection, except a GRU candidate's (inside r * (...) or after (r*h) R)
    inner = op_type == "GRU"
    proj_bias = wb + (np.concatenate([rb[:2 * hid], np.zeros(hid, rb.dtype)]) if inner else rb)
    w_x, b_x = b.const(w[0], f"{op_type}_W"), b.const(proj_bias, f"{op_type}_Wb")
    rt = np.ascontiguousarray(r[0].T)   # [H, G*H]
    h, c = (b.reshape(s, (batch, hid)) for s in states) if op_type == "LSTM" else (b.reshape(states[0], (batch, hid)), None)

    def cols(v, k, n=1):
        return b.slice(v, {1: (k * hid, (k + n) * hid, 1)})

    ys = []
    for t in range(length):
        # one product per step: SOFIE cannot generate a reshape to [length * N, width] ("stoi")
        xt = b.node("Gemm", [b.reshape(b.slice(x, {0: (t, t + 1, 1)}), (batch, width)), w_x, b_x], transB=1,
                    hint=f"{op_type.lower()}_x", shape=(batch, gates * hid), dtype="float32")
        if op_type == "GRU":
            hr = b.node("MatMul", [h, b.const(rt[:, :2 * hid], "GRU_Rzr")], hint="gru_hr", shape=(batch, 2 * hid),
                        dtype="float32")
            zr = b.ew("Sigmoid", b.ew("Add", cols(xt, 0, 2), hr))
            z, reset = cols(zr, 0), cols(zr, 1)
            r_n, rb_n = b.const(rt[:, 2 * hid:], "GRU_Rn"), b.const(rb[2 * hid:], "GRU_Rbn")
            if attrs.get("linear_before_reset"):
                rec = b.ew("Mul", reset, b.node("Gemm", [h, r_n, rb_n], hint="gru_rn", shape=(batch, hid),
                                                dtype="float32"))
            else:
                rec = b.node("Gemm", [b.ew("Mul", reset, h), r_n, rb_n], hint="gru_rn", shape=(batch, hid),
                             dtype="float32")
            n = b.ew("Tanh", b.ew("Add", cols(xt, 2), rec))
            h = b.ew("Add", n, b.ew("Mul", z, b.ew("Sub", h, n)))
        else:
            pre = b.ew("Add", xt, b.node("MatMul", [h, b.const(rt, f"{op_type}_R")], hint=f"{op_type.lower()}_hr",
                                         shape=(batch, gates * hid), dtype="float32"))
            if op_type == "RNN":
                h = b.ew("Tanh", pre)
            else:
                i, o, f = (b.ew("Sigmoid", cols(pre, k)) for k in range(3))
                c = b.ew("Add", b.ew("Mul", f, c), b.ew("Mul", i, b.ew("Tanh", cols(pre, 3))))
                h = b.ew("Mul", o, b.ew("Tanh", c))
        ys.append(b.reshape(h, (1, 1, batch, hid)))
    y = ys[0] if length == 1 else b.node("Concat", ys, hint=f"{op_type.lower()}_y", shape=(length, 1, batch, hid),
                                          dtype="float32", axis=0)
    return [y] + [b.reshape(s, (1, batch, hid)) for s in ([h, c] if op_type == "LSTM" else [h])]
