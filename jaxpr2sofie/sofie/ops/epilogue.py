"""An operator's epilogue: elementwise stages (bias, activation, residual add) applied to its output
while a block of it is still in cache, instead of one more pass over memory per stage.

A stage is an `Elementwise` whose args hold `None` where the running value goes; its other operands
are Scalars or tensors that are either per-channel (one value per last-axis entry, or one value) or
the full output shape (a residual). The scalar C++ expression is the unfused operator's own
template, so fusing changes no result.
"""
from __future__ import annotations

from .base import Scalar
from .elementwise import Elementwise

# kinds a stage may have: float in, float out, cheap next to the product that feeds them
UNARY = frozenset({"relu", "neg", "abs", "tanh", "logistic", "exp", "erf", "identity", "square"})
BINARY = frozenset({"add", "sub", "mul", "div", "max", "min"})
CLAMP = "clamp"   # clamp(lo, x, hi): the running value is the middle operand


def operand_kind(g, name, out_shape):
    """How a tensor operand lines up with an output of `out_shape` (channels last): "one" value,
    one per "channel", the "full" shape, or None when it broadcasts some other way."""
    t = g.tensors[name]
    if t.dtype != "float32":
        return None
    if tuple(t.shape) == tuple(out_shape):
        return "full"
    if len(t.shape) > len(out_shape) or any(d != 1 for d in t.shape[:-1]):
        return None
    if t.size == 1:
        return "one"
    return "channel" if len(out_shape) and t.shape[-1] == out_shape[-1] else None


def as_stage(g, op, acc, out_shape):
    """`op` (an Elementwise reading tensor `acc`) as a stage, or None if it cannot be one."""
    if not isinstance(op, Elementwise) or op.dtype != "float32" or op.param is not None:
        return None
    if tuple(g.tensors[op.outputs[0]].shape) != tuple(out_shape) or list(op.args).count(acc) != 1:
        return None
    k = op.kind
    at = op.args.index(acc)
    if not (k in UNARY and len(op.args) == 1 or k in BINARY and len(op.args) == 2
            or k == CLAMP and len(op.args) == 3 and at == 1):
        return None
    for a in op.args:
        if a != acc and not (isinstance(a, Scalar) and a.dtype == "float32"
                             or isinstance(a, str) and operand_kind(g, a, out_shape)):
            return None
    return Elementwise.make(k, tuple(None if a == acc else a for a in op.args), "float32")


def describe(stages) -> str:
    return " + ".join(s.kind for s in stages)


# how the functor reads a tensor operand of each kind (operand_kind)
_INDEX = {"one": "0", "channel": "c", "full": "i"}


def _functor(w, g, stages, out_shape):
    """The stages as a generated struct (written once per header for each distinct chain, literals
    included) whose call maps one output value; and the tensors its pointer members take, in order.
    A stage chain is one fused pass, and g++ compiles it once however many layers share it."""
    tensors = list(dict.fromkeys(a for s in stages for a in s.inputs))
    body = []
    for s in stages:
        operands = []
        for a in s.args:
            if a is None:
                operands.append("v")
            elif isinstance(a, Scalar):
                operands.append(w.literal(a.value, a.dtype))
            else:
                kind = operand_kind(g, a, out_shape)
                operands.append(f"t{tensors.index(a)}[{_INDEX[kind]}]")
        body.append(f"      v = {s.vector_template(g).format(*operands)};")
    text = "\n".join(["// an epilogue: v, the value of channel c at element i of the output, through every stage",
                      "struct @NAME@ {",
                      *(f"   const float* t{k};" for k in range(len(tensors))),
                      "   float operator()(float v, long c, long i) const {",
                      "      (void)c;",
                      "      (void)i;",
                      *body,
                      "      return v;",
                      "   }",
                      "};"])
    return w.define("Epilogue", text), tensors


def epilogue_object(w, g, stages, out_shape) -> str:
    """Declare the detail::Epilogue (conv_kernels.py) applying `stages`; its C++ name."""
    w.need("conv")
    name = w.fresh("epi")
    if not stages:
        w.line(f"const detail::Epilogue {name}{{}};")
        return name
    struct, tensors = _functor(w, g, stages, out_shape)
    w.line(f"const detail::{struct} {name}_stages{{{', '.join(w.ref(t) for t in tensors)}}};")
    w.line(f"const detail::Epilogue {name} = detail::epilogue_of({name}_stages);")
    return name


def emit_epilogue(w, g, stages, y: str, offset: str, rows, cout, out_shape) -> None:
    """Apply `stages` in place to the `rows` x `cout` block at `y`, which is the output tensor's
    element `offset` onward (full-shape operands are read at the same offset)."""
    if not stages:
        return
    epi = epilogue_object(w, g, stages, out_shape)
    w.line(f"{epi}({y}, {offset}, {rows}, {cout});")
