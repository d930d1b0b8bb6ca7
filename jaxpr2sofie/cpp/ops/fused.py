"""A fused elementwise chain in C++: one loop, the intermediate values in registers; whole vectors
(GCC vector extensions, vmath.py) when the chain has a vector call."""
from __future__ import annotations

from ...ir.ops.fused import FusedElementwise
from ...ir.tensor import ctype, numel, strides_of
from ..rules import emits
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
    """One function of vectors for the chain, called on each full vector, then once on the tail
    through zero-padded copies (as vmath's own loops do), so every element gets the same code."""
    n, out = numel(g.tensors[op.outputs[0]].shape), op.outputs[0]
    fn, args = w.fresh("chain"), {a: w.fresh("a") for a in op.inputs}
    params = ", ".join(f"detail::VecF {v}" for v in args.values())
    with w.block(f"auto {fn} = [&]({params})", tail=";"):
        local = dict(args)
        for k, s in enumerate(op.steps):
            operands = [local[a] if isinstance(a, str) else w.literal(a.value, a.dtype) for a in s.args]
            expr = lanes_template(g, s).format(*operands)
            if k == len(op.steps) - 1:
                w.line(f"return {expr};")
            else:
                local[s.outputs[0]] = w.fresh("v")
                w.line(f"const detail::VecF {local[s.outputs[0]]} = {expr};")
    i, tail = w.fresh("i"), w.fresh("tail")
    w.line(f"long {i} = 0;")
    with w.block(f"for (; {i} + detail::kLanes <= long({n}); {i} += detail::kLanes)"):
        for a, v in args.items():
            w.line(f"detail::VecF {v};")
            w.line(f"std::memcpy(&{v}, {w.ref(a)} + {i}, sizeof {v});")
        w.line(f"const detail::VecF r = {fn}({', '.join(args.values())});")
        w.line(f"std::memcpy({w.ref(out)} + {i}, &r, sizeof r);")
    with w.block(f"if ({i} < long({n}))"):
        w.line(f"const size_t {tail} = (long({n}) - {i}) * sizeof(float);")
        for a, v in args.items():
            w.line(f"float {v}_buf[detail::kLanes] = {{}};")
            w.line(f"std::memcpy({v}_buf, {w.ref(a)} + {i}, {tail});")
        call = ", ".join(f"detail::vec_bits<detail::VecF>({v}_buf)" for v in args.values())
        w.line(f"const detail::VecF r = {fn}({call});")
        w.line(f"std::memcpy({w.ref(out)} + {i}, &r, {tail});")


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
