"""An operator's epilogue in C++: its stages as one generated functor applied block by block."""
from __future__ import annotations

from ...ir.ops.base import Scalar
from ...ir.ops.elementwise import VECTOR_KINDS
from ...ir.ops.epilogue import operand_kind
from ...ir.ops.fused import VECTOR_ARITH
from .elementwise import vector_template
from .fused import lanes_template


# how the functor reads a tensor operand of each kind (operand_kind), one value or n lanes
_INDEX = {"one": "0", "channel": "c", "full": "i"}
_LANES = {"one": "detail::vec_splat(t{0}[0])", "channel": "detail::vec_load_part(t{0} + c, n)",
          "full": "detail::vec_load_part(t{0} + i, n)"}


def _in_vectors(stages) -> bool:
    """Whether every stage has a whole-vector form (as a fused chain's steps: ir/ops/fused.py)."""
    return all(s.kind in VECTOR_ARITH or s.kind in VECTOR_KINDS or s.kind == "relu" or s.literal_bound()
               for s in stages)


def _body(w, g, stages, out_shape, tensors, lanes: bool) -> list:
    """The stages as statements updating `v`: on one float, or on n lanes of a vector."""
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
                k = tensors.index(a)
                operands.append(_LANES[kind].format(k) if lanes else f"t{k}[{_INDEX[kind]}]")
        expr = lanes_template(g, s) if lanes else vector_template(s, g)
        body.append(f"      v = {expr.format(*operands)};")
    return body


def _functor(w, g, stages, out_shape):
    """The stages as a generated struct (written once per header for each distinct chain, literals
    included) whose call maps one output value; and the tensors its pointer members take, in order.
    A stage chain is one fused pass, and g++ compiles it once however many layers share it."""
    tensors = list(dict.fromkeys(a for s in stages for a in s.inputs))
    lines = ["// an epilogue: v, the value of channel c at element i of the output, through every stage",
             "struct @NAME@ {",
             *(f"   const float* t{k};" for k in range(len(tensors))),
             "   float operator()(float v, long c, long i) const {",
             "      (void)c;",
             "      (void)i;",
             *_body(w, g, stages, out_shape, tensors, lanes=False),
             "      return v;",
             "   }"]
    if _in_vectors(stages):   # whole vectors where the compiler has them (detail::run_epilogue)
        lines += ["#if defined(__GNUC__)",
                  "   static constexpr bool kVectors = true;",
                  "   // the same on channels [c, c + n) of element i onward (n < kLanes at a row's end)",
                  "   VecF lanes(VecF v, long c, long i, int n) const {",
                  "      (void)c;",
                  "      (void)i;",
                  "      (void)n;",
                  *_body(w, g, stages, out_shape, tensors, lanes=True),
                  "      return v;",
                  "   }",
                  "#else",
                  "   static constexpr bool kVectors = false;",
                  "#endif"]
    else:
        lines.append("   static constexpr bool kVectors = false;")
    text = "\n".join([*lines, "};"])
    return w.define("Epilogue", text), tensors


def epilogue_stages(w, g, stages, out_shape) -> str:
    """Declare the generated functor applying `stages` (non-empty); its C++ name. Kernels that take
    it as a template argument (detail::conv_depthwise) apply it to values still in registers."""
    w.need("epilogue")
    if any(s.kind in VECTOR_KINDS for s in stages):
        w.need("vmath")   # their vector forms (vmath.py)
    struct, tensors = _functor(w, g, stages, out_shape)
    name = w.fresh("stages")
    w.line(f"const detail::{struct} {name}{{{', '.join(w.ref(t) for t in tensors)}}};")
    return name


_BIAS_CLAMP = ["bias", "residual", "relu", "clamp"]   # its steps, in their order


def bias_clamp(w, g, stages, out_shape):
    """Declare `stages` as a detail::BiasClamp (simd.py: + bias per channel, + residual, relu, min
    with a literal, each optional, in that order; none at all is one); its C++ name, or None when
    they are something else."""
    bias = residual = None
    lo = hi = None
    order = []
    for s in stages:
        operands = [a for a in s.args if a is not None]
        if s.kind == "add" and len(operands) == 1 and isinstance(operands[0], str):
            kind = operand_kind(g, operands[0], out_shape)
            step = {"channel": "bias", "full": "residual"}.get(kind)
        elif s.kind == "relu":
            step = "relu"
        elif s.kind == "min" and s.literal_bound() and s.literal_bound()[1] == ">":
            step = "clamp"
        else:
            return None
        if step is None or order and _BIAS_CLAMP.index(step) <= _BIAS_CLAMP.index(order[-1]):
            return None
        order.append(step)
        if step == "bias":
            bias = w.ref(operands[0])
        elif step == "residual":
            residual = w.ref(operands[0])
        elif step == "relu":
            lo = "0.f"
        else:
            hi = w.literal(operands[0].value, "float32")
    name = w.fresh("epi")
    inf = "std::numeric_limits<float>::infinity()"
    w.line(f"const detail::BiasClamp {name}{{{bias or 'nullptr'}, {residual or 'nullptr'}, {lo or '-' + inf}, "
           f"{hi or inf}}};")
    return name


def epilogue_object(w, g, stages, out_shape) -> str:
    """Declare the detail::Epilogue (conv_kernels.py) applying `stages`; its C++ name."""
    w.need("epilogue")
    name = w.fresh("epi")
    if not stages:
        w.line(f"const detail::Epilogue {name}{{}};")
        return name
    w.line(f"const detail::Epilogue {name} = detail::epilogue_of({epilogue_stages(w, g, stages, out_shape)});")
    return name


def emit_epilogue(w, g, stages, y: str, offset: str, rows, cout, out_shape) -> None:
    """Apply `stages` in place to the `rows` x `cout` block at `y`, which is the output tensor's
    element `offset` onward (full-shape operands are read at the same offset)."""
    if not stages:
        return
    epi = epilogue_object(w, g, stages, out_shape)
    w.line(f"{epi}({y}, {offset}, {rows}, {cout});")
