"""A scan whose body is a recurrent cell, as one ONNX LSTM, GRU or RNN node.

SOFIE's ONNX parser has no Loop but reads LSTM, GRU and RNN, so a Keras LSTM/GRU/SimpleRNN layer
(or a Flax nn.RNN over an LSTMCell/GRUCell) exported as a recurrent node is readable by SOFIE.

How a body is recognised. Every gate's pre-activation is an *affine* function of a few *sources*
(the step's x, the carried h, r*h for a GRU without reset-after): `_Affine` folds the MatMul/Gemm
by constant kernels, the column Slices into gate blocks and the Adds of constant biases into one
matrix per source plus one bias vector, in float64, whatever order the framework wrote them in.
A cell matcher then checks the non-linear skeleton from the body outputs down to those
pre-activations: each operator's kind, activation and operands (Add and Mul either way round),
that the carry it multiplies is the right carry, and that each pre-activation reads only the
sources ONNX allows. The matrices of the gates it found become ONNX's W, R and B in ONNX gate
order (LSTM i,o,f,c; GRU z,r,h), each block transposed to [hidden, input].

Anything unexpected (another activation, a peephole, an extra term, a broadcast, a y that is not
the new h, a non-constant kernel, a dtype other than float32) is a mismatch: the Loop is exported
as the generic ONNX Loop instead, never as a wrong cell. `RECOGNISE_CELLS = False` switches the
recognition off (to compare both exports).

The x of a step is the sequence as the Loop reads it ([seq, batch, features]): where the framework
already projected it outside the loop (Keras GRU), W selects the projected columns, unless the
projection is a Gemm of a batch-major input by a constant that `_unproject` can fold into W.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..ir.ops.elementwise import Elementwise
from ..ir.ops.fused import expand
from ..ir.ops.linalg import MatMul
from ..ir.ops.movement import Slice, Transpose
from .builder import BEFORE_START
from . import unrolled

RECOGNISE_CELLS = True


class NoCell(Exception):
    """The body is not (exactly) a cell this module exports; the message says where it differs."""


def _need(ok, why):
    if not ok:
        raise NoCell(why)


@dataclass
class _Affine:
    """sum(source @ terms[source]) + bias, over rows of a [batch, width] tensor."""
    terms: dict = field(default_factory=dict)   # source tensor -> float64 [source width, width]
    bias: np.ndarray = None                     # float64 [width]

    def plus(self, other):
        terms = dict(self.terms)
        for s, m in other.terms.items():
            _need(s not in terms or terms[s].shape == m.shape, "mismatched affine widths")
            terms[s] = terms[s] + m if s in terms else m
        _need(self.bias.shape == other.bias.shape, "mismatched affine widths")
        return _Affine(terms, self.bias + other.bias)

    def times(self, k):
        return _Affine({s: m @ k for s, m in self.terms.items()}, self.bias @ k)

    def columns(self, a, b):
        return _Affine({s: m[:, a:b] for s, m in self.terms.items()}, self.bias[a:b])


class _Body:
    """Queries on a Loop body: producers, constants, and the affine form of a tensor."""

    def __init__(self, g, op):
        self.g, self.op, self.sub = g, op, op.body
        self.made = {o: x for x in expand(self.sub.ops) for o in x.outputs}   # fused chains as their steps
        self.batch = g.tensors[self.sub.inputs[0]].shape[0]
        self._affine: dict = {}

    def shape(self, name):
        return tuple(self.g.tensors[name].shape)

    def const(self, name):
        """The float64 values of a weight read by the body, or None for a run-time tensor."""
        t = self.g.tensors[name]
        if t.data is None or name in self.made or name in self.sub.inputs or t.kind != "weight":
            return None
        return np.asarray(t.data, np.float64)

    def producer(self, name, cls=None, kind=None):
        """The body operator making `name`, checked to be a float32 `cls` (an Elementwise of `kind`)."""
        x = self.made.get(name)
        _need(x is not None, f"{name} is not computed in the body")
        if cls is not None:
            _need(type(x) is cls, f"{name} is made by {type(x).__name__}, not {cls.__name__}")
        if kind is not None:
            _need(x.kind == kind and x.param is None and self.g.tensors[name].dtype == "float32",
                  f"{name} is {x.kind}, not {kind}")
            _need(all(isinstance(a, str) for a in x.args) or kind == "sub", f"{name} has a literal operand")
        return x

    def row(self, name, width):
        _need(self.shape(name) == (self.batch, width) and self.g.tensors[name].dtype == "float32",
              f"{name} has shape {self.shape(name)}, not {(self.batch, width)} float32")

    def affine(self, name) -> _Affine:
        if name not in self._affine:
            self._affine[name] = self._fold(name)
        return self._affine[name]

    def _fold(self, name):
        c = self.const(name)
        if c is not None:   # a bias row, broadcast over the batch
            _need(c.ndim in (1, 2) and c.shape[:-1] in ((), (1,)), f"constant {name} {c.shape} is not a bias row")
            _need(self.g.tensors[name].dtype == "float32", f"constant {name} is not float32")
            return _Affine({}, c.reshape(-1))
        w = self.shape(name)[-1] if self.shape(name) else 0
        self.row(name, w)
        x = self.made.get(name)
        if type(x) is MatMul and not x.act:
            return self._matmul(x, w)
        if type(x) is Slice:
            (src,) = x.inputs
            sw = self.shape(src)[-1] if len(self.shape(src)) == 2 else None
            _need(sw is not None and tuple(x.steps) == (1, 1) and tuple(x.starts[:1]) == (0,)
                  and tuple(x.limits[:1]) == (self.batch,) and 0 <= x.starts[1] < x.limits[1] <= sw
                  and x.limits[1] - x.starts[1] == w, f"{name} is not a column slice")
            return self.affine(src).columns(x.starts[1], x.limits[1])
        if type(x) is Elementwise and x.kind == "add" and x.param is None and len(x.args) == 2 \
                and all(isinstance(a, str) for a in x.args):
            a, b = (self.affine(v) for v in x.args)
            _need(a.bias.shape == (w,) and b.bias.shape == (w,), f"{name}: an add that broadcasts")
            return a.plus(b)
        # anything else is a source, entering with an identity
        return _Affine({name: np.eye(w)}, np.zeros(w))

    def _matmul(self, x, w):
        a, k = x.inputs[0], self.const(x.inputs[1])
        _need(k is not None, f"{x.outputs[0]}: the kernel {x.inputs[1]} is not a constant")
        _need(x.batch == 1 and not x.trans_a and x.n == w and self.shape(a) == (self.batch, x.k)
              and k.size == x.k * x.n and tuple(x.out_shape) == (self.batch, w), f"{x.outputs[0]}: not a row product")
        k = k.reshape(x.n, x.k).T if x.trans_b else k.reshape(x.k, x.n)
        out = self.affine(a).times(k)
        if len(x.inputs) > 2:
            bias = self.const(x.inputs[2])
            _need(bias is not None and bias.size == x.n, f"{x.outputs[0]}: the bias is not a constant row")
            out = out.plus(_Affine({}, bias.reshape(-1)))
        return out

    # -- skeleton helpers --------------------------------------------------------------------
    def width(self, name):
        s = self.shape(name)
        _need(len(s) == 2, f"{name} has shape {s}, not [batch, width]")
        return s[-1]

    def pair(self, name, kind):
        """The two tensor operands of an elementwise `kind` making `name`."""
        x = self.producer(name, Elementwise, kind)
        _need(len(x.args) == 2, f"{name}: {kind} of {len(x.args)} operands")
        for a in x.args:
            self.row(a, self.width(name))
        return x.args

    def activation(self, name, kind):
        """The pre-activation of `name` = kind(pre)."""
        x = self.producer(name, Elementwise, kind)
        _need(len(x.args) == 1, f"{name}: {kind} of {len(x.args)} operands")
        self.row(x.args[0], self.width(name))
        return x.args[0]

    def gate(self, name, kind, sources, hidden):
        """(matrix per allowed source, bias) of a gate name = kind(affine of `sources`)."""
        self.row(name, hidden)
        pre = self.affine(self.activation(name, kind))
        extra = set(pre.terms) - set(sources)
        _need(not extra, f"{name} reads {sorted(extra)} besides {sources}")
        return pre


def _split(bd, name, kind, test):
    """The operands (p, q) of `name` = kind(p, q) with test(p) true, in either order."""
    a, b = bd.pair(name, kind)
    for p, q in ((a, b), (b, a)):
        try:
            test(p)
            return p, q
        except NoCell:
            pass
    raise NoCell(f"{name}: no operand of the expected form")


def _is(expected):
    def check(name):
        _need(name == expected, f"{name} is not {expected}")
    return check


def _made_by(bd, kind):
    def check(name):
        bd.producer(name, Elementwise, kind)
    return check


def _ys_are(bd, h_new):
    nc = bd.op.n_carry
    _need(all(y == h_new for y in bd.sub.outputs[nc:]), "a per-step output is not the new h")


@dataclass
class Cell:
    op_type: str            # "LSTM" | "GRU" | "RNN"
    hidden: int
    x: str                  # the body's step slice
    gates: list             # per ONNX gate: (W-side _Affine, R-side _Affine or None)
    carries: list           # per loop carry: "h" or "c"
    attrs: dict


def _lstm(bd, x, h, c, h_new, c_new, hidden):
    # h' = o * tanh(c');  c' = f * c + i * g
    o, t = _split(bd, h_new, "mul", _made_by(bd, "logistic"))
    _need(bd.activation(t, "tanh") == c_new, f"{h_new} is not o * tanh(c')")
    fc, ig = _split(bd, c_new, "add", lambda v: _split(bd, v, "mul", _is(c)))
    f, _ = _split(bd, fc, "mul", lambda v: _need(v != c, "f is c"))
    i, g = _split(bd, ig, "mul", _made_by(bd, "logistic"))
    pre = [bd.gate(n, k, (x, h), hidden) for n, k in ((i, "logistic"), (o, "logistic"), (f, "logistic"), (g, "tanh"))]
    return [(p, None) for p in pre]


def _gru(bd, x, h, h_new, hidden):
    # h' = z * h + (1 - z) * n;  n = tanh(Wx + r * (R h + Rb))  or  tanh(Wx + (r * h) R)
    zh, rest = _split(bd, h_new, "add", lambda v: _split(bd, v, "mul", _is(h)))
    z, _ = _split(bd, zh, "mul", lambda v: _need(v != h, "z is h"))
    one_minus, n = _split(bd, rest, "mul", _made_by(bd, "sub"))
    sub = bd.producer(one_minus, Elementwise, "sub")
    _need(len(sub.args) == 2 and not isinstance(sub.args[0], str) and float(sub.args[0].value) == 1.0
          and sub.args[1] == z, f"{one_minus} is not 1 - z")
    pre_n = bd.affine(bd.activation(n, "tanh"))
    resets = [s for s in pre_n.terms if s != x]
    _need(len(resets) == 1, f"{n}: the candidate reads {sorted(pre_n.terms)}")
    (rq,) = resets
    r, q = _split(bd, rq, "mul", _made_by(bd, "logistic"))
    wn = _Affine({s: m for s, m in pre_n.terms.items() if s == x}, pre_n.bias)
    if q == h:      # (r * h) @ R: reset before the recurrent product
        rn, lbr = _Affine({h: pre_n.terms[rq]}, np.zeros(hidden)), 0
    else:           # r * (h @ R + Rb): reset after it, so the identity must be exact
        _need(np.array_equal(pre_n.terms[rq], np.eye(hidden)), f"{n}: r * (R h) enters scaled")
        rn, lbr = bd.affine(q), 1
        _need(set(rn.terms) <= {h}, f"{q} reads {sorted(rn.terms)} besides h")
    pre = [bd.gate(v, "logistic", (x, h), hidden) for v in (z, r)]
    return [(pre[0], None), (pre[1], None), (wn, rn)], {"linear_before_reset": lbr}


def match(g, op):
    """The Cell the Loop `op` computes, or None (the reason is dropped: the Loop export follows)."""
    try:
        return _match(g, op)
    except NoCell:
        return None


def _match(g, op):
    _need(RECOGNISE_CELLS, "cell recognition is switched off")
    _need(op.length is not None and op.length > 0 and op.n_xs == 1 and op.n_carry in (1, 2), "not a one-input scan")
    nc = op.n_carry
    state, (x,) = op.body.inputs[:nc], op.body.inputs[nc:]
    _need(all(len(g.tensors[v].shape) == 2 for v in op.body.inputs), "carries or x are not [batch, width]")
    bd = _Body(g, op)
    news = bd.sub.outputs[:nc]
    hidden = bd.width(state[0])
    for s in state:
        bd.row(s, hidden)
    _need(bd.shape(x)[0] == bd.batch and g.tensors[x].dtype == "float32", "x is not [batch, features]")
    if nc == 2:
        for k in (0, 1):    # Keras carries (h, c), Flax (c, h)
            try:
                h, c = state[k], state[1 - k]
                gates = _lstm(bd, x, h, c, news[k], news[1 - k], hidden)
                _ys_are(bd, news[k])
                return Cell("LSTM", hidden, x, gates, ["h", "c"] if k == 0 else ["c", "h"], {})
            except NoCell:
                bd = _Body(g, op)
        raise NoCell("no LSTM")
    (h,), (h_new,) = state, news
    _ys_are(bd, h_new)
    if getattr(bd.producer(h_new), "kind", None) == "tanh":
        pre = bd.gate(h_new, "tanh", (x, h), hidden)
        return Cell("RNN", hidden, x, [(pre, None)], ["h"], {})
    gates, attrs = _gru(bd, x, h, h_new, hidden)
    return Cell("GRU", hidden, x, gates, ["h"], attrs)


# -- export -------------------------------------------------------------------------------------

def _weights(cell, src, width, h):
    """W [1, gates*hidden, width], R [1, gates*hidden, hidden], B [1, 2*gates*hidden] (float32)."""
    ws, rs, wb, rb = [], [], [], []
    for w_side, r_side in cell.gates:
        ws.append(w_side.terms.get(src, np.zeros((width, cell.hidden))).T)
        wb.append(w_side.bias)
        if r_side is None:
            rs.append(w_side.terms.get(h, np.zeros((cell.hidden, cell.hidden))).T)
            rb.append(np.zeros(cell.hidden))
        else:
            rs.append(r_side.terms.get(h, np.zeros((cell.hidden, cell.hidden))).T)
            rb.append(r_side.bias)
    f = np.float32
    return (np.concatenate(ws)[None].astype(f), np.concatenate(rs)[None].astype(f),
            np.concatenate(wb + rb)[None].astype(f))


def _unproject(b, op, cell):
    """(ONNX X, W-side affines) with a projection computed before the loop folded in: the Loop's
    xs = Transpose(1, 0, 2) of a Gemm of a [batch, seq, d] tensor by a constant kernel. Else the
    xs themselves and the affines unchanged."""
    g, xs = b.g, op.inputs[op.n_carry]
    tr = g.producer(xs)
    if type(tr) is not Transpose or tuple(tr.perm) != (1, 0, 2):
        return xs, None
    mm = g.producer(tr.inputs[0])
    if type(mm) is not MatMul or mm.batch != 1 or mm.trans_a or mm.act:
        return xs, None
    src, out = g.tensors[mm.inputs[0]], g.tensors[mm.outputs[0]]
    consts = [g.tensors[n] for n in mm.inputs[1:]]
    if (any(t.data is None or t.kind != "weight" for t in consts) or src.dtype != "float32"
            or len(src.shape) != 3 or tuple(out.shape) != tuple(src.shape[:2]) + (mm.n,) or src.shape[2] != mm.k
            or (len(consts) == 2 and np.size(consts[1].data) != mm.n)):
        return xs, None
    k = np.asarray(consts[0].data, np.float64)
    k = k.reshape(mm.n, mm.k).T if mm.trans_b else k.reshape(mm.k, mm.n)
    bias = np.asarray(consts[1].data, np.float64).reshape(-1) if len(consts) == 2 else np.zeros(mm.n)
    gates = []
    for w, r in cell.gates:
        if cell.x in w.terms:    # (x k + b) Wx = x (k Wx) + b Wx
            m = w.terms[cell.x]
            w = _Affine({**w.terms, cell.x: k @ m}, w.bias + bias @ m)
        gates.append((w, r))
    return mm.inputs[0], gates


def export(b, op, cell):
    """The ONNX node for `cell` and the Loop's outputs from its Y / Y_h / Y_c."""
    g, nc, hid = b.g, op.n_carry, cell.hidden
    batch = g.tensors[op.body.inputs[0]].shape[0]
    seq_in, gates = _unproject(b, op, cell)
    if gates is None:
        x = b.value(seq_in)
    else:
        x = b.transpose(b.value(seq_in), (1, 0, 2))
        cell = Cell(cell.op_type, hid, cell.x, gates, cell.carries, cell.attrs)
    # SOFIE rejects direction="reverse" (LSTM, RNN): for it, a forward node over the reversed sequence
    backward = op.reverse and b.target == "sofie"
    if backward:
        x = b.slice(x, {0: (-1, BEFORE_START, -1)})
    width = g.tensors[seq_in].shape[-1]
    h_state = op.body.inputs[cell.carries.index("h")]
    w, r, bias = _weights(cell, cell.x, width, h_state)
    ins = [x, b.const(w, f"{cell.op_type}_W"), b.const(r, f"{cell.op_type}_R"), b.const(bias, f"{cell.op_type}_B"), ""]
    from .control import _val
    for kind in ("h", "c")[:2 if cell.op_type == "LSTM" else 1]:
        k = cell.carries.index(kind)
        init = b.reshape(_val(b, op.inputs[k]), g.tensors[op.body.inputs[k]].shape)
        ins.append(b.reshape(init, (1, batch, hid)))
    n_out = 3 if cell.op_type == "LSTM" else 2
    if unrolled.needed(b, cell.op_type, cell.attrs, batch):
        # a case SOFIE's node gets wrong or refuses (unrolled.py): for it, the same maths step by step
        outs = unrolled.unrolled(b, cell.op_type, cell.attrs, x, w, r, bias, ins[5:], op.length, batch, hid)
    else:
        outs = b.node(cell.op_type, ins, hint=cell.op_type.lower(), n_out=n_out, hidden_size=hid,
                      direction="reverse" if op.reverse and not backward else "forward", **cell.attrs)
    length = op.length
    b.meta[outs[0]] = ((length, 1, batch, hid), "float32")
    for v in outs[1:]:
        b.meta[v] = ((1, batch, hid), "float32")
    finals = {"h": outs[1], "c": outs[2] if n_out == 3 else None}
    result = [b.reshape(finals[kind], (batch, hid)) for kind in cell.carries]
    ys = b.reshape(outs[0], (length, batch, hid))
    if backward and op.outputs[nc:]:
        ys = b.slice(ys, {0: (-1, BEFORE_START, -1)})
    # each further y needs a value of its own: the driver renames a value to its first tensor
    extra = [b.node("Identity", [ys], hint="ys", shape=b.shape(ys), dtype="float32") for _ in op.outputs[nc + 1:]]
    return result + ([ys] + extra if op.outputs[nc:] else [])
