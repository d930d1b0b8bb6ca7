"""A chain of elementwise operators run as one loop (the `fuse_elementwise` pass builds it).

Unfused, `x * 0.5 * (1 + y)` is three loops, each reading and writing a whole tensor; fused it is
one loop that keeps the intermediate values in registers. The steps are the original
`Elementwise` operators, unchanged: each keeps its output tensor's name, which the fused loop
holds in a local variable instead of memory (the tensor table marks those tensors "fused", so the
memory plan gives them no storage). Every step's result has the fused output's shape, so one
index walks them all; operands from outside the chain may broadcast, as an Elementwise's do.
The scalar C++ of each step is its operator's own template; the one difference fusing can make is
that g++ may contract a multiply and an add of neighbouring steps into one FMA, as it does within
any one expression (a last-bit change, like XLA's own contractions).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..tensor import ctype, numel, strides_of
from .base import Op, Scalar
from .elementwise import Elementwise

# Steps a whole-vector loop can run (GCC vector extensions, vmath.py): arithmetic works on vectors as
# written, and exp/tanh/logistic become vmath's vector functions instead of libm calls.
VECTOR_CALLS = {"exp": "detail::vm_exp({0})", "tanh": "detail::vm_tanh({0})", "logistic": "detail::vm_sigmoid({0})"}
VECTOR_RELU = "detail::vm_pick(({0}) <= 0.f, detail::VmF{{}}, ({0}))"   # NaN stays NaN, -0 becomes +0
VECTOR_ARITH = frozenset({"add", "sub", "mul", "div", "neg", "square", "identity", "integer_pow"})


def vector_chain(g, steps, shape) -> bool:
    """Whether `steps` can run as a whole-vector loop: float32 throughout, every outside operand
    of the output's own shape (or a literal), every step a kind vectors do as written."""
    made = {s.outputs[0] for s in steps}
    for s in steps:
        if s.dtype != "float32" or not (s.kind in VECTOR_ARITH or s.kind in VECTOR_CALLS or s.kind == "relu"
                                         or s.literal_bound()):
            return False
        for a in s.args:
            if isinstance(a, Scalar):
                if a.dtype != "float32":
                    return False
            elif a not in made and (g.tensors[a].dtype != "float32" or g.tensors[a].shape != shape):
                return False
    return True


@dataclass(eq=False)
class FusedElementwise(Op):
    steps: list = field(default_factory=list)   # Elementwise operators, in order; the last makes the output

    elementwise = True   # reads each operand at the output's own index (graph.in_place_carries)

    @classmethod
    def chain(cls, g, first, second) -> "FusedElementwise":
        """`first` (an Elementwise or a fused chain) feeding `second` (likewise), as one chain."""
        steps = [*steps_of(first), *steps_of(second)]
        for s in steps_of(first):
            g.tensors[s.outputs[0]].kind = "fused"
        internal = {s.outputs[0] for s in steps}
        inputs = [a for s in steps for a in s.inputs if a not in internal]
        return cls(list(dict.fromkeys(inputs)), steps=steps, outputs=list(second.outputs),
                   origin=second.origin or first.origin)

    @property
    def internal(self) -> list:
        """The tensors computed inside the loop (kept in the table for summaries and ONNX export)."""
        return [s.outputs[0] for s in self.steps[:-1]]

    def infer(self, g):
        t = g.tensors[self.outputs[0]]
        return [(t.shape, t.dtype)]

    def emit(self, w, g) -> None:
        out = g.tensors[self.outputs[0]]
        w.comment(f"Fused {self.describe()}" + (f" ({self.origin})" if self.origin else ""))
        if any(s.kind in VECTOR_CALLS for s in self.steps):   # the pass fused them only if vector_chain holds
            w.need("vmath")
            w.line("#if defined(__GNUC__)")
            self._emit_vectors(w, g)
            w.line("#else")
            self._emit_scalars(w, g, out)
            w.line("#endif")
        else:
            self._emit_scalars(w, g, out)

    def _emit_vectors(self, w, g) -> None:
        """One function of vectors for the chain, called on each full vector, then once on the tail
        through zero-padded copies (as vmath's own loops do), so every element gets the same code."""
        n, out = numel(g.tensors[self.outputs[0]].shape), self.outputs[0]
        fn, args = w.fresh("chain"), {a: w.fresh("a") for a in self.inputs}
        params = ", ".join(f"detail::VmF {v}" for v in args.values())
        with w.block(f"auto {fn} = [&]({params})", tail=";"):
            local = dict(args)
            for k, s in enumerate(self.steps):
                operands = [local[a] if isinstance(a, str) else w.literal(a.value, a.dtype) for a in s.args]
                expr = self._vector_template(g, s).format(*operands)
                if k == len(self.steps) - 1:
                    w.line(f"return {expr};")
                else:
                    local[s.outputs[0]] = w.fresh("v")
                    w.line(f"const detail::VmF {local[s.outputs[0]]} = {expr};")
        i, tail = w.fresh("i"), w.fresh("tail")
        w.line(f"long {i} = 0;")
        with w.block(f"for (; {i} + detail::kVmLanes <= long({n}); {i} += detail::kVmLanes)"):
            for a, v in args.items():
                w.line(f"detail::VmF {v};")
                w.line(f"std::memcpy(&{v}, {w.ref(a)} + {i}, sizeof {v});")
            w.line(f"const detail::VmF r = {fn}({', '.join(args.values())});")
            w.line(f"std::memcpy({w.ref(out)} + {i}, &r, sizeof r);")
        with w.block(f"if ({i} < long({n}))"):
            w.line(f"const size_t {tail} = (long({n}) - {i}) * sizeof(float);")
            for a, v in args.items():
                w.line(f"float {v}_buf[detail::kVmLanes] = {{}};")
                w.line(f"std::memcpy({v}_buf, {w.ref(a)} + {i}, {tail});")
            call = ", ".join(f"detail::vm_bits<detail::VmF>({v}_buf)" for v in args.values())
            w.line(f"const detail::VmF r = {fn}({call});")
            w.line(f"std::memcpy({w.ref(out)} + {i}, &r, {tail});")

    @staticmethod
    def _vector_template(g, s) -> str:
        if s.kind in VECTOR_CALLS:
            return VECTOR_CALLS[s.kind]
        if s.kind == "relu":
            return VECTOR_RELU
        bound = s.literal_bound()
        if bound:   # the literal where the comparison holds, else the operand, lane by lane
            acc, edge, lit = bound
            return f"detail::vm_pick(({acc}) {edge} ({lit}), detail::VmF{{{{}}}} + ({lit}), ({acc}))"
        return s.template(g).replace("{T}", "float")

    def _emit_scalars(self, w, g, out) -> None:
        shape = out.shape
        flat = all(g.tensors[a].shape == shape for a in self.inputs)
        extents = [numel(shape)] if flat else list(shape)
        with w.loops(extents) as idx:
            local = {}
            for k, s in enumerate(self.steps):
                operands = [self._operand(w, g, a, idx, None if flat else shape, local) for a in s.args]
                expr = s.vector_template(g).format(*operands)
                if k == len(self.steps) - 1:
                    at = idx[0] if flat else w.index(idx, strides_of(shape))
                    w.line(f"{w.ref(out.name)}[{at}] = {expr};")
                else:
                    local[s.outputs[0]] = w.fresh("v")
                    w.line(f"const {ctype(s.dtype)} {local[s.outputs[0]]} = {expr};")

    @staticmethod
    def _operand(w, g, a, idx, shape, local) -> str:
        if isinstance(a, str) and a in local:
            return local[a]
        return Elementwise._operand(w, g, a, idx, shape)

    def flops(self, g) -> int:
        return numel(g.tensors[self.outputs[0]].shape) * len(self.steps)

    def describe(self) -> str:
        return " > ".join(s.describe() for s in self.steps)


def steps_of(op) -> list:
    return list(op.steps) if isinstance(op, FusedElementwise) else [op]


def expand(ops) -> list:
    """`ops` with every fused chain replaced by its steps (for tools that read the unfused form)."""
    return [s for op in ops for s in steps_of(op)]

