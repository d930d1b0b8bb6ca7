"""The ONNX emitter: the operator graph as a standard ONNX model, for ROOT's SOFIE parser (which reads
only ONNX), ONNX Runtime and Netron.

Opset: ONNX default domain, opset 18 by default (``opset=`` accepts 17 to 21). 18 is the first
with bitwise operators on integers; SOFIE's parser reads both the opset-17 and the opset-18 forms
of the reductions. ONNX Runtime 1.32 runs all of 17-21. The IR version is the lowest that opset
allows, so older runtimes open the file too.

Layout: one rule per operator class (`RULES`, registered with `@exports`), one module per operator
family; a rule appends nodes through the `Builder`. Weights are initializers named by their key
paths (`params_Dense_0_kernel`); graph inputs and outputs keep the names the C++ Session uses.
A dimension that is the run-time batch (a dims.Sym) becomes a `dim_param` ("N", "2*N").

The operators SOFIE's ONNX parser registers are listed in `SOFIE_OPS`; rules prefer them and fall
back to other standard ONNX operators only where none fits (`model_op_types` tells which a model
uses). Two traps of that parser are avoided in every export: asymmetric convolution padding is an
explicit Pad node (the parser would average it), and a Gemm without bias has no C input. Others
cost something in other runtimes, so only `to_onnx(..., target="sofie")` (what `to_rmodel` and
`generate(backend="sofie")` read) avoids them: `SOFIE_TRAPS` lists them all.

Run-time control flow: an operator that owns sub-graphs exports them as ONNX graph attributes
through a child Builder (`Builder.child`: names unique model-wide, outer values captured by name;
`_live` keeps what a body captures). Loop (scan, fori_loop, while) is an ONNX Loop (control.py);
ONNX Loop is not in SOFIE_OPS, so such models are for onnxruntime, not SOFIE's parser, except a
scan whose body is a verified LSTM, GRU or simple-RNN cell (Keras LSTM/GRU/SimpleRNN, Flax
nn.RNN cells): that is one ONNX LSTM/GRU/RNN node, which SOFIE reads (rnn.py). Branch is
an ONNX If (a switch: nested Ifs on the clamped index). DynamicSlice is a Slice and
DynamicUpdateSlice a ScatterND, at run-time starts clamped as XLA does (dynamic.py); TopK is a
TopK and Sort successive stable ascending TopKs (sort.py). Scatter is one ScatterND on the flattened
operand (gather.py): dropped windows write to scratch slots sliced off after, and a plain set with
repeated indices keeps the last write as the C++ does (a max-reduction ScatterND finds it: opset
18, refused at 17 with the reason). SelectAndScatterAdd (the max-pool gradient) picks per window
tap by tap as the C++ loop does, then one ScatterND add (conv.py). ScatterND is not in SOFIE_OPS:
models with these operators are for onnxruntime. An operator whose outputs hold no element
becomes empty constants (ONNX Runtime refuses some operators on zero-size tensors).
"""
from __future__ import annotations

import numpy as np

from ..ir.ops.fused import expand
from ..errors import OnnxExportError
from .builder import RULES, TARGETS, Builder, NotExportable, dim_param, exports, onnx_dtype, symbolic
from . import control, conv, dynamic, elementwise, gather, linalg, movement, reduce, sort   # noqa: F401  (registers the rules)

DEFAULT_OPSET = 18
OPSETS = range(17, 22)

# Operators ROOT TMVA SOFIE's ONNX parser reads (issue 12's list, and Shape, which its parser also
# registers (ROperator_Shape, with start/end): a run-time batch N is read with it).
SOFIE_OPS = frozenset({
    "Gemm", "MatMul", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization",
    "LayerNormalization", "Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softmax", "Softplus", "Erf",
    "Exp", "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Sin", "Cos", "Floor", "Add", "Sub", "Mul", "Div", "Pow",
    "Max", "Min", "Mean", "Sum", "Where", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Cast",
    "Reshape", "Transpose", "Concat", "Slice", "Split", "Squeeze", "Unsqueeze", "Expand", "Tile", "Pad",
    "Gather", "GatherND", "ReduceMean", "ReduceSum", "ReduceProd", "ReduceSumSquare", "Einsum", "TopK",
    "Range", "LSTM", "GRU", "RNN", "If", "Identity", "Shape",
})

# SOFIE's misreadings of standard ONNX (sofie 0.1.0) and the form the export takes instead; "*" marks
# those avoided only with target="sofie". Each has a test in tests/test_real_sofie.py.
SOFIE_TRAPS = {
    "asymmetric conv padding": "averaged by SOFIE's Conv: an explicit Pad node, the symmetric rest in Conv",
    "Gemm with a zero scalar bias": "refused: a Gemm without bias has no C input",
    "Gemm 1-D bias at a run-time batch": "the parser broadcasts a bias it reads from ONNX: none needed",
    "* dilated Conv": "SOFIE dilates the kernel into a buffer whose holes it never zeroes (wrong when the "
                      "memory pool reuses it): the kernel is dilated at export, dilations=1",
    "* dilated ConvTranspose": "wrong numbers, or a write past its buffer (a heap overflow under ASan): the kernel is "
                               "dilated at export, dilations=1",
    "* LSTM/GRU/RNN direction reverse": "rejected (LSTM, RNN): a forward node over the sequence reversed by Slice",
    "* Where on int32": "refused (\"input type 6\"): the choice is made in int64 between two Casts",
    "* GRU linear_before_reset=0": "wrong: SOFIE multiplies (r*h) by R in place (an sgemm with the same "
                                   "buffer in and out): the cell's equations step by step (unrolled.py)",
    "* LSTM/GRU/RNN at a run-time batch": "refused (\"is a dynamic tensor\"): the cell's equations step by "
                                          "step (unrolled.py)",
    "* strided Slice whose step does not divide its span": "SOFIE sizes the output floor(span / step) and "
                                                           "writes ceil(span / step) elements (a heap overflow): "
                                                           "the span made a multiple of the step, zero-padded",
    "3-D ConvTranspose": "not in SOFIE: refused by its parser",
    "Pad with -inf": "SOFIE writes the fill value as `-inf`, which does not compile: an asymmetrically padded "
                     "max/min pool pads with copies of its edge (exact: each window holds the edge element); "
                     "other -inf fills (input-dilated max pooling) still meet it",
    "* broadcasting Bitwise* at a run-time batch": "wrong values past the first event (BitwiseAnd/Or/Xor of "
                                                    "[N,1,1,4] with a [1,1,4] weight): the operands are Expanded "
                                                    "to the output's shape first",
    "* Expand at a run-time batch": "wrong values when the target keeps a size-1 axis ([N,1,3,1] to [N,2,3,1]): "
                                    "those axes are reshaped away around the Expand",
}

__all__ = ["to_onnx", "TARGETS", "SOFIE_TRAPS", "build_graph", "model_op_types", "OnnxExportError", "SOFIE_OPS", "DEFAULT_OPSET", "OPSETS", "RULES",
           "exports", "NotExportable"]


def _onnx():
    try:
        import onnx
    except ImportError:   # pragma: no cover - depends on the environment
        raise ImportError("ONNX export needs the `onnx` package: pip install onnx") from None
    return onnx


def to_onnx(graph, opset: int = DEFAULT_OPSET, doc: str = "", target: str = "onnx"):
    """The graph as an onnx.ModelProto (checked by the caller with onnx.checker if wanted).
    `target="sofie"` writes the forms SOFIE's parser reads correctly (SOFIE_TRAPS)."""
    _onnx()
    from onnx import helper

    if target not in TARGETS:
        raise ValueError(f"target={target!r}: choose one of {', '.join(TARGETS)}")
    if opset not in OPSETS:
        raise ValueError(f"opset {opset} is not supported by the ONNX export; choose one of "
                         f"{OPSETS.start}..{OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    missing = [(op.op_type, op.origin, f"no ONNX export rule for operator class {type(op).__name__}")
               for op in expand(graph.ops) if type(op) not in RULES]
    if missing:
        raise OnnxExportError(missing)
    problems = []
    g = build_graph(Builder(graph, opset, target), problems)
    if problems:
        raise OnnxExportError(problems)
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(g, opset_imports=opsets, producer_name="jaxpr2sofie",
                             ir_version=helper.find_min_ir_version_for(opsets), doc_string=doc)


def build_graph(b, problems: list):
    """Every operator of `b.g` through its rule, into an onnx GraphProto; rule failures are appended to
    `problems` and the walk goes on, so all of them are reported at once. A rule for an operator
    that owns sub-graphs (a Loop or If body) calls this again on a Builder for the sub-graph."""
    import onnx
    from onnx import helper

    graph = b.g
    for name in graph.inputs:
        t = graph.tensors[name]
        b.env[name] = name
        b.meta[name] = (tuple(t.shape), t.dtype)
    walk_ops(b, graph.ops, problems)
    for name in graph.outputs:
        if b.env[name] != name:
            b.nodes.append(helper.make_node("Identity", [b.env[name]], [name], name=b.fresh("n_output")))
    nodes, inits = _live(b, graph.outputs)
    return helper.make_graph(
        nodes, graph.name,
        inputs=[_value_info(graph.tensors[n]) for n in graph.inputs],
        outputs=[_value_info(graph.tensors[n]) for n in graph.outputs],
        initializer=[onnx.numpy_helper.from_array(arr, name) for name, arr in inits.items()])


def walk_ops(b, ops, problems: list):
    """Every operator of `ops` through its rule into `b` (also used for sub-graph bodies). A fused
    elementwise loop exports as its steps, each reported on its own if it has no ONNX form."""
    for op in expand(ops):
        first, b.origin = len(b.nodes), op.origin
        empty = _empty_outputs(b, op)
        if empty is not None:
            for tensor, v in zip(op.outputs, empty):
                b.bind(tensor, v, first)
            continue
        try:
            rule = RULES.get(type(op))
            if rule is None:
                raise NotExportable(f"no ONNX export rule for operator class {type(op).__name__}")
            values = rule(b, op)
        except NotExportable as e:
            problems.append((op.op_type, op.origin, str(e)))
            values = [b.fresh("unexported") for _ in op.outputs]
        for tensor, v in zip(op.outputs, values):
            b.bind(tensor, v, first)


def _empty_outputs(b, op):
    """Constants for an operator whose outputs all hold no element (x[:, :0] and what follows
    from it): there is nothing to compute, and ONNX Runtime refuses some operators on zero-size
    tensors (MaxPool with zero channels). None if some output has elements or a symbolic size."""
    ts = [b.g.tensors[n] for n in op.outputs]
    if not ts or any(symbolic(d) for t in ts for d in t.shape) or any(t.size for t in ts):
        return None
    return [b.const(np.zeros(t.shape, t.dtype), "empty") for t in ts]


def _subgraph_reads(node) -> set:
    """Values the graph attributes of `node` (Loop/If bodies) read, at any depth: they capture
    them from the enclosing scope by name, so those values must stay live there."""
    reads = set()
    for a in node.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            for n in g.node:
                reads.update(i for i in n.input if i)
                reads |= _subgraph_reads(n)
            reads.update(o.name for o in g.output)
    return reads


def _value_info(t):
    from onnx import helper
    return helper.make_tensor_value_info(t.name, onnx_dtype(t.dtype), [dim_param(d) for d in t.shape])


def _live(b, outputs):
    """Nodes and initializers some graph output depends on (folded transposes leave dead nodes)."""
    need, keep = set(outputs), []
    for n in reversed(b.nodes):
        if any(o in need for o in n.output):
            keep.append(n)
            need.update(i for i in n.input if i)
            need |= _subgraph_reads(n)
    return keep[::-1], {k: v for k, v in b.inits.items() if k in need}


def model_op_types(model) -> set:
    """The ONNX operator types a model uses (to compare with SOFIE_OPS)."""
    return {n.op_type for n in model.graph.node}
