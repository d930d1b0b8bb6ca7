"""The C++ emitter: a SOFIE-compatible header, its weight file, and a C entry point for ctypes."""
from __future__ import annotations

import json

from ..errors import UnsupportedPrimitiveError
from ..ir.dims import DynamicDimError
from ..ir.tensor import ctype
from . import conv_implicit, conv_kernels, kernels, memory, ops, threads, winograd  # noqa: F401  (ops: registers the emission rules)
from .kernels import BLAS_DECL, BLAS_HELPERS
from .abi import SessionABI, c_entry_points
from .rules import emit_op, emit_ops
from .simd import ELEMENTWISE_DISPATCH_MIN, dispatch_call, dispatched
from .weight_readers import BINARY_READER, TEXT_READER
from .weights import stored_size, table_hash
from .writer import Writer

# every helper a header may need, in the order they are written: later ones use earlier ones
HELPERS = {**kernels.HELPERS, **conv_kernels.HELPERS, **conv_implicit.HELPERS, **winograd.HELPERS,
           **threads.HELPERS}

INCLUDES = ["algorithm", "atomic", "charconv", "cmath", "cstdint", "cstdlib", "cstring", "fstream", "limits", "stdexcept",
            "string", "string_view", "tuple", "type_traits", "vector"]
# only in headers whose Session can split a batch over threads
THREAD_INCLUDES = ["chrono", "condition_variable", "exception", "memory", "mutex", "system_error", "thread"]

# The floating-point environment of XLA's CPU code, which JAX's results come from: denormal inputs
# read as zero and denormal results flush to zero. run() sets it for its own duration and restores
# the caller's mode on return, so nothing leaks into the calling program.
_FLUSH_DENORMALS = """\
struct FlushDenormals {
#if defined(__SSE2__) || defined(_M_X64)
   unsigned int saved = _mm_getcsr();
   FlushDenormals() { _mm_setcsr(saved | 0x8040u); }   // FTZ | DAZ
   ~FlushDenormals() { _mm_setcsr(saved); }
#elif defined(__aarch64__)
   std::uint64_t saved = 0;
   FlushDenormals() {
      __asm__ __volatile__("mrs %0, fpcr" : "=r"(saved));
      const std::uint64_t fz = saved | (std::uint64_t(1) << 24);
      __asm__ __volatile__("msr fpcr, %0" : : "r"(fz));
   }
   ~FlushDenormals() { __asm__ __volatile__("msr fpcr, %0" : : "r"(saved)); }
#endif
   FlushDenormals(const FlushDenormals&) = delete;
   FlushDenormals& operator=(const FlushDenormals&) = delete;
};
"""

def _sig_type(t, const: bool) -> str:
    return f"{'const ' if const else ''}{ctype(t.dtype)}*"


def result_type(g) -> str:
    outs = [g.tensors[o] for o in g.outputs]
    types = [f"std::vector<{ctype(t.dtype)}>" for t in outs]
    if len(types) == 1:
        return types[0]
    if len(set(types)) == 1:
        return f"std::vector<{types[0]}>"
    return f"std::tuple<{', '.join(types)}>"


IO_TAG = "jaxpr2sofie-io:"


def io_signature(g) -> dict:
    """Names, shapes and dtypes of the inputs and outputs, as one comment line of the header: tools
    (jaxpr2sofie.root) read a generated directory without the Python model. A dimension that is
    the run-time batch is written as text ("N", "2*N")."""
    def spec(n):
        t = g.tensors[n]
        return {"name": n, "shape": [d if isinstance(d, int) else repr(d) for d in t.shape], "dtype": t.dtype}
    sig = {"model": g.name, "inputs": [spec(n) for n in g.inputs], "outputs": [spec(n) for n in g.outputs]}
    if g.dynamic:
        sig["max_batch"] = g.max_batch
    return sig


def read_io_signature(header_text: str) -> dict | None:
    for line in header_text.splitlines()[:6]:
        if line.startswith("// " + IO_TAG):
            return json.loads(line[len("// " + IO_TAG):])
    return None


def emit_header(g) -> str:
    return render(g)[0]


def check_emittable(g) -> None:
    """With a run-time batch, every operator must write its code with sizes that are C++ expressions:
    emit each once now, so one that needs a fixed size is reported with its primitive and source
    line (all at once), at conversion time rather than in generate()."""
    problems = []
    for op in g.walk():
        if op.subgraphs():
            continue   # its sub-graphs' operators are visited themselves
        try:
            emit_op(Writer(), g, op)
            op.flops(g)
        except DynamicDimError as e:
            prim, _, line = op.origin.partition(" @ ")
            problems.append((prim or op.op_type, f"{op.op_type} cannot take a batch size chosen at run time: {e}; "
                             "convert with a fixed batch (drop batch=\"dynamic\")", line or "unknown source line"))
    if problems:
        raise UnsupportedPrimitiveError(problems)
    try:
        emit_header(g)
    except DynamicDimError as e:   # the Session itself (sizes, loops around sub-graphs)
        raise UnsupportedPrimitiveError([("graph", f"cannot take a batch size chosen at run time: {e}", "")]) from e


def render(g) -> tuple:
    """The header text and the set of helpers its code calls."""
    name = g.name
    base = memory.plan(g)
    outs = set(g.outputs)
    # The Session first: emitting the operators tells which helpers the header must carry.
    w = Writer({n: "tensor_" + b for n, b in base.items()})
    w.blas = g.blas != "none"
    w.depth = 1
    assign = _emit_session(w, g, base)
    assert not (outs & set(assign))
    needs = set(w.needs)
    if needs & {"gemm_packed", "conv"}:
        needs.add("epilogue")   # PanelGemm carries one; both take a BiasClamp
    if needs & kernels.SIMD_HELPERS:
        needs.add("simd")   # the portability layer they are written with

    h = Writer()
    guard = f"TMVA_SOFIE_{name.upper()}"
    h.line("// Code generated by jaxpr2sofie. Do not edit.")
    h.line(f"// Inference with: TMVA_SOFIE_{name}::Session s(\"{name}.dat\"); auto y = s.infer(x);")
    h.line(f"// {IO_TAG} {json.dumps(io_signature(g), separators=(',', ':'))}")
    split = threads.splittable(g)
    if split:
        h.line("// Session(weight_file, max_batch, n_threads) splits a batch over n_threads std::threads:")
        h.line("// build with -pthread (see the README, \"Threads\").")
    h.line(f"#ifndef {guard}")
    h.line(f"#define {guard}")
    h.line()
    for inc in sorted(INCLUDES + (THREAD_INCLUDES if split else [])):
        h.line(f"#include <{inc}>")
    h.line("#if defined(__SSE2__) || defined(_M_X64)")
    h.line("#include <xmmintrin.h>")
    h.line("#endif")
    h.line()
    if needs & BLAS_HELPERS:
        h.lines.extend(BLAS_DECL.splitlines())
        h.line()
    with h.block(f"namespace TMVA_SOFIE_{name}", tail=f" // namespace TMVA_SOFIE_{name}"):
        with h.block("namespace detail", tail=" // namespace detail"):
            texts = [HELPERS[k] for k in HELPERS if k in needs]   # in HELPERS order: later ones use earlier ones
            texts += [text.replace("@NAME@", def_name) for text, def_name in w.defs.items()]
            if w.tiered:
                texts.append(_dispatched_functions(w.tiered))
            texts += [_FLUSH_DENORMALS] + ([TEXT_READER.strip("\n"), BINARY_READER] if g.weights() else [])
            for text in texts:
                h.verbatim(text)
        h.line()
        h.lines.extend(w.lines)
    h.line()
    h.line(f"#endif // {guard}")
    return h.text(), needs


def _dispatched_functions(tiered: dict) -> str:
    """The functions of Writer.define_dispatched: each NAME_v compiled for the baseline ISA (in
    namespace base) and for each wider vector tier, and NAME, which runs the widest the CPU has."""
    bodies = "".join(text.replace("@NAME@", name) for (_, _, text), name in tiered.items())
    entries = "".join(f"inline void {name}({params}) {{\n" + dispatch_call(f"{name}_v({args})", when=f"n >= {ELEMENTWISE_DISPATCH_MIN}") + "}\n"
                      for (params, args, _), name in tiered.items())
    return ("// The header's own vector functions (fused elementwise chains), for each vector tier (simd.py)\n"
            "#if defined(__GNUC__)\n" "namespace base {\n" + bodies + "}  // namespace base\n"
            + dispatched(bodies) + entries + "#endif\n")


def _size_expr(sizes) -> str:
    """C++ for the largest of several byte sizes (ints, or dims.Sym over `batch`)."""
    fixed = [x for x in sizes if isinstance(x, int)]
    exprs = list(dict.fromkeys(str(x) for x in sizes if not isinstance(x, int)))
    if fixed:
        exprs.append(str(max(fixed)))
    return exprs[0] if len(exprs) == 1 else f"std::max<size_t>({{{', '.join(exprs)}}})"


def _emit_allocate(w, g, slots, assign) -> None:
    """One arena for every intermediate: each buffer a 64-byte aligned region of it, sized for
    the largest batch the Session takes."""
    dynamic = g.dynamic
    sig = "void allocate(size_t max_batch)" if dynamic else "void allocate()"
    w.comment("Places every intermediate buffer in the arena (one allocation).")
    with w.block(sig):
        if not slots:
            if dynamic:
                w.line("(void)max_batch;")
            return
        if dynamic:
            w.line("const size_t batch = max_batch;   // sizes below are for the largest batch")
            w.line("(void)batch;")
        sizes = [[g.nbytes(n) for n in names] for names in slots]
        if all(isinstance(b, int) for bs in sizes for b in bs):   # offsets known now: written as numbers
            align, offsets, at = memory.ARENA_ALIGN, [], 0
            for bs in sizes:
                offsets.append(at)
                at += -(-max(bs) // align) * align
            w.line(f"fArena.assign({at // 8 + 1}, 0);   // {at} bytes, {len(slots)} buffers of {align}-byte aligned sizes")
            w.line("unsigned char* base = reinterpret_cast<unsigned char*>(fArena.data());")
            for tname, k in assign.items():
                w.line(f"tensor_{tname} = reinterpret_cast<{ctype(g.tensors[tname].dtype)}*>(base + {offsets[k]});")
            return
        w.line("size_t at = 0;")
        for k, names in enumerate(slots):
            w.line(f"const size_t off{k} = at;")
            w.line(f"at += ({_size_expr([g.nbytes(n) for n in names])} + {memory.ARENA_ALIGN - 1}) / {memory.ARENA_ALIGN} * {memory.ARENA_ALIGN};")
        w.line("fArena.assign(at / sizeof(std::uint64_t) + 1, 0);")
        w.line("unsigned char* base = reinterpret_cast<unsigned char*>(fArena.data());")
        for tname, k in assign.items():
            w.line(f"tensor_{tname} = reinterpret_cast<{ctype(g.tensors[tname].dtype)}*>(base + off{k});")


def retyped(g, slots) -> set:
    """Tensors placed in arena memory that tensors of another dtype also use (before or after them,
    also across the iterations of a loop body): their writes are fenced."""
    out = set()
    for names in slots:
        if len({g.tensors[n].dtype for n in names}) > 1:
            out.update(names)
    return out


def _emit_session(w, g, base) -> dict:
    name = g.name
    dynamic = g.dynamic
    w.comment("One Session per thread: run() and infer() write the Session's intermediate buffers, so a")
    w.comment("Session is not shared between threads; any number of Sessions may run side by side.")
    if dynamic:
        w.comment(f"The batch is chosen per call: run(batch, ...) and infer(batch, ...) take 1 <= batch <= max_batch,")
        w.comment("the size the Session's buffers were allocated for by its constructor.")
    with w.block("struct Session", tail=";"):
        weights = g.weights()
        if weights:
            w.comment("weights, read from the weight file")
        for t in weights:
            ct = ctype(t.dtype)
            w.line(f"std::vector<{ct}> fTensor_{t.name} = std::vector<{ct}>({max(stored_size(t), 1)});")
            w.line(f"{ct}* tensor_{t.name} = fTensor_{t.name}.data();")
        slots, assign = memory.buffer_plan(g)
        w.fence_before = retyped(g, slots) if g.reuse_buffers else set()
        if slots:
            w.comment(f"intermediates: one arena, {'buffers shared by tensors whose lifetimes do not overlap' if g.reuse_buffers else 'one buffer per tensor'}")
        split = threads.splittable(g)
        if split:
            threads.emit_members(w, g, assign, lambda: _emit_allocate(w, g, slots, assign))
        else:
            w.line("std::vector<std::uint64_t> fArena;")
            for tname in assign:
                w.line(f"{ctype(g.tensors[tname].dtype)}* tensor_{tname} = nullptr;")
            if dynamic:
                w.line("size_t fMaxBatch = 0;")
        w.line()
        default = g.max_batch or 1
        extra, alloc = (f", size_t max_batch = {default}, size_t n_threads = 1", "allocate(max_batch);") if dynamic \
            else ("", "allocate();")
        init = " : fMaxBatch(max_batch)" if dynamic else ""
        if split:
            init += ", fThreads(n_threads ? n_threads : 1)"
        elif dynamic:   # rows depend on each other (rows.split_refusal): one thread whatever is asked
            alloc += " (void)n_threads;"
        with w.block(f"Session(std::string weight_file = \"{name}.dat\"{extra}){init}"):
            w.line(alloc)
            if weights:
                w.line("std::ifstream f(weight_file, std::ios::binary);")
                w.line("if (!f)")
                w.line(f"   throw std::runtime_error(\"TMVA_SOFIE_{name}: cannot open weight file '\" + weight_file + \"'\");")
                w.line("load_weights(f, weight_file);")
            else:
                w.line("(void)weight_file;")
        w.comment("Weights from a stream in the weight-file format (e.g. held in memory, or shipped with code).")
        with w.block(f"explicit Session(std::istream& weights, const std::string& source = \"<stream>\"{extra}){init}"):
            w.line(alloc)
            w.line("load_weights(weights, source);")
        if split:
            threads.emit_allocate(w)
        else:
            _emit_allocate(w, g, slots, assign)
        w.comment("Reads every weight tensor; throws std::runtime_error on missing, foreign or extra data.")
        with w.block("void load_weights(std::istream& f, const std::string& source)"):
            if weights:
                with w.block("if (f.peek() == 'J')"):   # binary ("J2SW..."); text begins with "tensor_"
                    w.line(f"detail::BinaryReader r(f, source, \"{name}\", {table_hash(g):#x}ull, {len(weights)});")
                    for t in weights:
                        w.line(f"r.tensor(\"{t.name}\", tensor_{t.name}, {stored_size(t)});")
                    w.line("r.finish();")
                    w.line("return;")
                w.line(f"detail::TextReader r(f, source, \"{name}\");")
                for t in weights:
                    w.line(f"r.tensor(\"{t.name}\", tensor_{t.name}, {stored_size(t)});")
                w.line("r.finish();")
            else:
                w.line("(void)f;")
                w.line("(void)source;")
        w.line("// Buffers point into this object's vectors: copying would alias them, moving is safe.")
        w.line("Session(const Session&) = delete;")
        w.line("Session& operator=(const Session&) = delete;")
        w.line("Session(Session&&) = default;")
        w.line("Session& operator=(Session&&) = default;")
        w.line()
        if dynamic:
            w.line("size_t max_batch() const { return fMaxBatch; }")
            if split:
                threads.emit_accessors(w)
            else:
                w.comment("This model's rows depend on each other: run() always uses the calling thread alone.")
                w.line("size_t threads_used() const { return 1; }")
                w.line()
        lead = ["size_t batch"] if dynamic else []
        io = [f"{_sig_type(g.tensors[i], True)} tensor_{i}" for i in g.inputs]
        io += [f"{_sig_type(g.tensors[o], False)} tensor_{o}" for o in g.outputs]
        check = (lambda: _emit_batch_check(w, name)) if dynamic else (lambda: None)
        if split:
            args = ", ".join(f"tensor_{n}" for n in g.inputs + g.outputs)
            threads.emit_run(w, g, assign, io, args, check, lambda: _emit_body(w, g, base))
        else:
            w.comment("Writes every output into caller-owned memory; allocates nothing.")
            with w.block(f"void run({', '.join(lead + io)})"):
                check()
                _emit_body(w, g, base)
        w.line()
        in_params = ", ".join(lead + [f"{_sig_type(g.tensors[i], True)} tensor_{i}" for i in g.inputs])
        call_lead = ["batch"] if dynamic else []
        with w.block(f"{result_type(g)} infer({in_params})"):
            for o in g.outputs:
                t = g.tensors[o]
                w.line(f"std::vector<{ctype(t.dtype)}> out_{o}({t.size});")
            call = ", ".join(call_lead + [f"tensor_{i}" for i in g.inputs] + [f"out_{o}.data()" for o in g.outputs])
            w.line(f"run({call});")
            if len(g.outputs) == 1:
                w.line(f"return out_{g.outputs[0]};")
            else:
                w.line(f"return {{{', '.join(f'std::move(out_{o})' for o in g.outputs)}}};")
        w.comment("As infer, into the caller's vectors: no allocation once they have held a result this large.")
        out_params = [f"std::vector<{ctype(g.tensors[o].dtype)}>& out_{o}" for o in g.outputs]
        with w.block(f"void doInfer({', '.join([in_params] + out_params if in_params else out_params)})"):
            for o in g.outputs:
                w.line(f"out_{o}.resize({g.tensors[o].size});")
            w.line(f"run({call});")
    return assign


def _emit_batch_check(w, name) -> None:
    w.line("if (batch == 0 || batch > fMaxBatch)")
    w.line(f"   throw std::invalid_argument(\"TMVA_SOFIE_{name}: batch \" + std::to_string(batch) + "
           "\" is outside 1..\" + std::to_string(fMaxBatch) + \" (this Session's max_batch): construct the "
           "Session with a larger max_batch\");")


def _emit_body(w, g, base) -> None:
    """The generated computation of run(): every operator, for `batch` rows."""
    w.line("const detail::FlushDenormals fp_mode;   // as XLA computes: see detail::FlushDenormals")
    w.line("(void)fp_mode;")
    # operators with only empty outputs emit nothing (emit_ops), so they read nothing
    # (a view emits nothing either: what it reads is read by the operators reading the view)
    read = {base[i] for op in g.ops if not (op.outputs and all(g.tensors[o].size == 0 for o in op.outputs))
            and not op.aliases_input for i in op.inputs}
    for i in g.inputs + g.outputs:
        # an input the function ignores, or an empty tensor nothing reads or writes:
        # the signature stays uniform
        if (i in g.inputs and i not in read) or g.tensors[i].size == 0:
            w.line(f"(void)tensor_{i};")
    emit_ops(w, g, g.ops)


def c_api_source(g, header: str) -> str:
    """A C entry point around the Session so Python (ctypes) can drive the generated code."""
    abi = SessionABI.of(g)
    ns = abi.namespace
    run = abi.run_call(f"static_cast<{ns}::Session*>(s)", "batch", abi.pointer_casts("in", abi.inputs, const=True),
                       abi.pointer_casts("out", abi.outputs, const=False), pointer=True)
    ctor = abi.constructor_args("weight_file", "max_batch", "n_threads")
    create = (f"return new {ns}::Session({ctor});" if g.dynamic
              else f"(void)max_batch;\n      (void)n_threads;\n      return new {ns}::Session({ctor});")
    used = f"static_cast<{ns}::Session*>(s)->threads_used()" if g.dynamic else "1"
    min_rows = (f"static_cast<{ns}::Session*>(s)->set_min_rows_per_thread(rows);" if threads.splittable(g)
                else "(void)s;\n   (void)rows;")
    return c_entry_points(header, f"{ns}::Session", create, f"{'' if g.dynamic else '(void)batch;'}\n   {run};",
                          f"{'' if g.dynamic else '(void)s;'}\n   return {used};", min_rows)
