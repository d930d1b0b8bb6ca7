"""An operator's epilogue in C++: its stages as one generated functor applied block by block."""
from __future__ import annotations

from ...ir.ops.base import Scalar
from ...ir.ops.epilogue import operand_kind
from .elementwise import vector_template


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
        body.append(f"      v = {vector_template(s, g).format(*operands)};")
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
