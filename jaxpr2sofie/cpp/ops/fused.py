"""A fused elementwise chain in C++: one loop, the intermediate values in registers; whole vectors
(GCC vector extensions, vmath.py) when the chain has a vector call."""
from __future__ import annotations

from ...ir.ops.fused import FusedElementwise
from ...ir.tensor import ctype, numel, strides_of
from ..rules import emits
from ..writer import Writer
from .elementwise import operand, template, vector_template


# Steps a whole-vector loop can run (GCC vector extensions, vmath.py): arithmetic works on vectors as
# written, and exp/tanh/logistic become vmath's vector functions instead of libm calls.
VECTOR_CALLS = {"exp": "detail::vm_exp({0})", "tanh": "detail::vm_tanh({0})", "logistic": "detail::vm_sigmoid({0})"}
VECTOR_RELU = "detail::vec_pick(({0}) <= 0.f, detail::VecF{{}}, ({0}))"   # NaN stays NaN, -0 becomes +0


@emits(FusedElementwise)
def _fusedelementwise(op, w, g) -> None:
    out = g.tensors[op.outputs[0]]
    w.comment(f"Fused {op.describe()}")
    if any(s.kind in VECTOR_CALLS for s in op.steps):   # the pass fused them only if vector_chain holds
        w.need("vmath")
        w.line("#if defined(__GNUC__)")
        _emit_vectors(op, w, g)
        w.line("#else")
        _emit_scalars(op, w, g, out)
        w.line("#endif")
    else:
        _emit_scalars(op, w, g, out)


def _emit_vectors(op, w, g) -> None:
    """A function of the header's for the chain (Writer.define_dispatched: compiled for each vector
    tier, the widest the CPU has runs): one function of vectors called on each full vector, then once
    on the tail through zero-padded copies (as vmath's own loops do), so every element gets the same
    code. An output may be one of the inputs: each vector is read before it is written."""
    n, out = numel(g.tensors[op.outputs[0]].shape), op.outputs[0]
    args = {a: f"a{k}" for k, a in enumerate(dict.fromkeys(op.inputs))}
    f = Writer(indent=w.indent)
    # a function, not a lambda: a lambda's code is not compiled for the tier its function is
    with f.block(f"inline VecF @NAME@_lanes({', '.join(f'VecF {v}' for v in args.values())})"):
        local = dict(args)
        for k, s in enumerate(op.steps):
            operands = [local[a] if isinstance(a, str) else w.literal(a.value, a.dtype) for a in s.args]
            expr = lanes_template(g, s).format(*operands).replace("detail::", "")   # the tier's own names
            if k == len(op.steps) - 1:
                f.line(f"return {expr};")
            else:
                local[s.outputs[0]] = f"v{k}"
                f.line(f"const VecF v{k} = {expr};")
    params = ", ".join([*(f"const float* {v}" for v in args.values()), "float* out", "long n"])
    with f.block(f"inline void @NAME@_v({params})"):
        f.line("long i = 0;")
        with f.block("for (; i + kLanes <= n; i += kLanes)"):
            f.line(f"vec_store(out + i, @NAME@_lanes({', '.join(f'vec_load({v} + i)' for v in args.values())}));")
        with f.block("if (i < n)"):
            f.line("const int left = static_cast<int>(n - i);")
            call = ", ".join(f"vec_load_part({v} + i, left)" for v in args.values())
            f.line(f"vec_store_part(out + i, @NAME@_lanes({call}), left);")
    name = w.define_dispatched("chain", params, ", ".join([*args.values(), "out", "n"]), f.text())
    w.line(f"detail::{name}({', '.join(w.ref(a) for a in args)}, {w.ref(out)}, {n});")


def lanes_template(g, s) -> str:
    """The C++ template of step `s` on whole vectors (detail::VecF): vmath's functions, lane picks, or
    the scalar template where vector arithmetic reads as written."""
    if s.kind in VECTOR_CALLS:
        return VECTOR_CALLS[s.kind]
    if s.kind == "relu":
        return VECTOR_RELU
    bound = s.literal_bound()
    if bound:   # the literal where the comparison holds, else the operand, lane by lane
        acc, edge, lit = bound
        return f"detail::vec_pick(({acc}) {edge} ({lit}), detail::VecF{{{{}}}} + ({lit}), ({acc}))"
    return template(s, g).replace("{T}", "float")


def _emit_scalars(op, w, g, out) -> None:
    shape = out.shape
    flat = all(g.tensors[a].shape == shape for a in op.inputs)
    extents = [numel(shape)] if flat else list(shape)
    with w.loops(extents, independent=True) as idx:
        local = {}
        for k, s in enumerate(op.steps):
            operands = [_operand(w, g, a, idx, None if flat else shape, local) for a in s.args]
            expr = vector_template(s, g).format(*operands)
            if k == len(op.steps) - 1:
                at = idx[0] if flat else w.index(idx, strides_of(shape))
                w.line(f"{w.ref(out.name)}[{at}] = {expr};")
            else:
                local[s.outputs[0]] = w.fresh("v")
                w.line(f"const {ctype(s.dtype)} {local[s.outputs[0]]} = {expr};")


def _operand(w, g, a, idx, shape, local) -> str:
    if isinstance(a, str) and a in local:
        return local[a]
    return operand(w, g, a, idx, shape)
