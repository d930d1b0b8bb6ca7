"""Generated models inside ROOT: declare them to cling, score RDataFrame columns with them.

    import jaxpr2sofie.root as j2s_root, ROOT
    df = ROOT.RDataFrame("events", "events.root")
    df = j2s_root.define(df, "score", "out/", ["pt", "eta", "phi"])   # a SofieModel works too
    h = df.Histo1D(("score", "score", 50, 0, 1), "score")

`define` works unchanged on a multithreaded RDataFrame (`ROOT.EnableImplicitMT()`: one Session
per processing slot, no locks) and on a distributed one (`ROOT.RDataFrame(..., executor=client)`
with a Dask client): the model, weights inside, is built into a shared library by the project's
compiler (cling optimises declared code at -O1 only) and travels to every worker as BLAS does,
so workers need no shared file system; each worker process loads and declares it once.

This module imports no JAX (PyROOT's LLVM and jaxlib's are best kept in separate processes):
convert and compute JAX references before importing ROOT, or in another process.
Needs the `root` extra: pip install 'jaxpr2sofie[root]'.
"""
from __future__ import annotations

import hashlib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import sofie_header
from .errors import Jaxpr2SofieError
from .cpp.abi import SessionABI
from .cpp.emit import read_io_signature
from .ir.tensor import numel

# The PyPI `root` package warns, in seven lines, on every import of ROOT that it is an alpha-stage
# distribution. Imported before ROOT (as the README does), this module filters exactly that warning,
# so a script's log shows its own output; every other warning of ROOT still shows.
warnings.filterwarnings("ignore", message=r"\s*This distribution of ROOT is in alpha stage", category=UserWarning)


def _per_event_shape(shape) -> tuple:
    """A signature shape for one event: a run-time batch dimension ("N", "2*N") taken at N = 1."""
    out = []
    for d in shape:
        if isinstance(d, str):
            if not re.fullmatch(r"[0-9N*+\- ]+", d):
                raise RootWorkflowError(f"dimension {d!r} in the model's I/O signature is not understood")
            d = eval(d.replace("N", "1"), {"__builtins__": {}})   # digits, N and + - * only
        out.append(int(d))
    return tuple(out)


def _numel(shape) -> int:
    return numel(_per_event_shape(shape))


class RootWorkflowError(Jaxpr2SofieError, ValueError):
    """A model and RDataFrame columns that do not fit together, or a missing ROOT."""


def _root():
    try:
        import ROOT
    except ImportError as e:
        raise ImportError("jaxpr2sofie.root needs PyROOT: pip install 'jaxpr2sofie[root]' "
                          f"(the PyPI `root` package, with dask and distributed for clusters) ({e})") from e
    return ROOT


# Column types a model input accepts, by the C++ spelling RDataFrame reports.
_SCALARS = {"float", "double", "int", "unsigned int", "long", "unsigned long", "long long", "unsigned long long",
            "short", "unsigned short", "bool", "char", "unsigned char", "signed char", "Float_t", "Double_t",
            "Int_t", "UInt_t", "Long_t", "ULong_t", "Long64_t", "ULong64_t", "Short_t", "UShort_t", "Bool_t",
            "Char_t", "UChar_t", "Float16_t", "Double32_t", "int8_t", "uint8_t", "int16_t", "uint16_t", "int32_t",
            "uint32_t", "int64_t", "uint64_t", "std::int32_t", "std::int64_t", "std::uint32_t", "std::uint64_t"}
_VECTOR = re.compile(r"^(?:ROOT::VecOps::RVec|ROOT::RVec|RVec|std::vector|vector)<\s*(.+?)\s*>$")

@dataclass(frozen=True)
class DeclaredModel:
    """A model cling knows: its namespace, the function `define` calls, and its signature."""
    name: str
    namespace: str            # TMVA_SOFIE_<name> (SOFIE_<name> for a header real SOFIE generated)
    scorer: str               # jaxpr2sofie_root::<name>_<hash>
    inputs: tuple             # ((name, shape, dtype), ...)
    outputs: tuple
    code: str                 # what cling compiles: the library's entry points and the scorers

    def input_sizes(self) -> list:
        return [_numel(s) for _, s, _ in self.inputs]


def _model_files(model) -> tuple:
    """(header text, weight file bytes, I/O signature) of a SofieModel (its weights in the binary
    format: nothing to format or parse) or of a directory holding <Name>.hxx + <Name>.dat (either
    format), written by SofieModel.generate() or by real SOFIE (sofie_header.py)."""
    if hasattr(model, "graph") and hasattr(model, "header"):   # a SofieModel (no import: keeps JAX out)
        from .cpp.weights import weights_binary
        header = model.header()
        return header, weights_binary(model.graph), read_io_signature(header)
    d = Path(model)
    if d.is_file() and d.suffix == ".hxx":
        hxx = d
    elif d.is_dir():
        found = sorted(d.glob("*.hxx"))
        if len(found) != 1:
            raise RootWorkflowError(f"{d} holds {len(found)} headers ({', '.join(p.name for p in found) or 'none'}): "
                                    "pass the .hxx file itself, or a folder with exactly one generated model")
        hxx = found[0]
    else:
        raise RootWorkflowError(f"no generated model at {d}: pass a SofieModel, a folder written by "
                                "SofieModel.generate(), or its .hxx file")
    dat = hxx.with_suffix(".dat")
    header = hxx.read_text()
    try:
        sig = read_io_signature(header) or sofie_header.signature(hxx, header)
    except sofie_header.SofieHeaderError as e:
        raise RootWorkflowError(str(e)) from None
    if sig is None:
        raise RootWorkflowError(f"{hxx} was not generated by this version of jaxpr2sofie (no I/O signature line) "
                                "nor by SOFIE: generate it again with SofieModel.generate()")
    if not dat.exists():
        raise RootWorkflowError(f"{hxx.name} has no weight file beside it: {dat} is missing")
    return header, dat.read_bytes(), sig


def _weights_function(weights: bytes) -> str:
    """C++ `weights()` returning the weight file's bytes, from inside the code: a binary file as hex
    digits (cling takes text only; two characters a byte is still half of the text format), a text
    file as a raw string."""
    if weights[:4] == b"J2SW":
        return ("inline std::string weights() {\n"
                f"   static const char hex[] = \"{weights.hex()}\";\n"
                "   auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };\n"
                "   std::string bytes(sizeof hex / 2, '\\0');\n"
                "   for (std::size_t i = 0; i < bytes.size(); ++i)\n"
                "      bytes[i] = static_cast<char>(nibble(hex[2 * i]) << 4 | nibble(hex[2 * i + 1]));\n"
                "   return bytes;\n}")
    text = weights.decode("ascii", errors="replace")
    delim = "J2SW"
    while f"){delim}\"" in text:
        delim += "X"
    return f'inline std::string weights() {{ return R"{delim}({text}){delim}"; }}'


def _library_code(name: str, ns: str, fn: str, sig: dict, weights: bytes, blas_macros: str = "") -> str:
    """C++ compiled by the project's build into a shared library (not by cling, which optimises at
    -O1: the model ran 8x slower there): one Session per processing slot, and C entry points that
    give a slot's input buffers and run it. Each slot's Session is made by the thread running that
    slot, the first time it runs, so no two threads ever touch the same Session and no lock is
    needed. The weights travel inside the library (weights()), so a distributed worker needs no
    file of ours; SOFIE's own Session (a header real SOFIE generated) reads them from a file written
    once per process."""
    abi = SessionABI.from_signature(sig)
    ins, outs = sig["inputs"], sig["outputs"]
    in_sizes = [_numel(i["shape"]) for i in ins]
    out_sizes = [_numel(o["shape"]) for o in outs]
    buffers = "\n".join(f"   std::vector<{p.ctype}> in{k} = std::vector<{p.ctype}>({n});"
                        for k, (p, n) in enumerate(zip(abi.inputs, in_sizes)))
    buffers += "\n" + "\n".join(f"   std::vector<{p.ctype}> out{k} = std::vector<{p.ctype}>({n});"
                                for k, (p, n) in enumerate(zip(abi.outputs, out_sizes)))
    # a model whose batch is chosen at run time scores one event per call: batch 1, a Session sized for it
    ptrs = [f"s.in{k}.data()" for k in range(len(ins))] + [f"s.out{k}.data()" for k in range(len(outs))]
    if sig.get("generator") == "sofie":   # SOFIE's Session reads a weight file: written once per process
        load = f"return {ns}::Session({', '.join(['weight_file()'] + (['1'] if abi.dynamic else []))});"
        run = f"{ns}::doInfer({', '.join(['s.session'] + (['1'] if abi.dynamic else []) + ptrs)})"
    else:
        ctor = abi.constructor_args(f'f, "{name} weights"', "1")
        load = f"std::istringstream f(weights());\n      return {ns}::Session({ctor});"
        run = abi.run_call("s.session", "1", ptrs[:len(ins)], ptrs[len(ins):])
    inputs = "\n".join(f"{p.ctype}* {fn}_input{k}(unsigned slot) {{ return {fn}_detail::slot(slot).in{k}.data(); }}"
                       for k, p in enumerate(abi.inputs))
    return f"""
{blas_macros}#include "{name}.hxx"
#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <unistd.h>
namespace {fn}_detail {{
{_weights_function(weights)}
inline std::string weight_file() {{
   static const std::string path = [] {{
      auto p = std::filesystem::temp_directory_path() / ("{fn}_" + std::to_string(::getpid()) + ".dat");
      std::ofstream(p, std::ios::binary) << weights();
      return p.string();
   }}();
   return path;
}}
struct Slot {{
   {ns}::Session session;
{buffers}
   Slot() : session(load()) {{}}
   static {ns}::Session load() {{
      {load}
   }}
}};
// One Slot per RDataFrame processing slot, created by the thread that owns the slot.
Slot& slot(unsigned i) {{
   static std::array<std::unique_ptr<Slot>, 1024> slots;
   if (i >= slots.size())
      throw std::runtime_error("jaxpr2sofie: more than 1024 RDataFrame slots");
   if (!slots[i])
      slots[i] = std::make_unique<Slot>();
   return *slots[i];
}}
}} // namespace {fn}_detail
extern "C" {{
// The input buffers of a slot's Session (filled by the scorer cling compiles), and its run: the
// first output's values.
{inputs}
const {abi.outputs[0].ctype}* {fn}_run(unsigned slot) {{
   {fn}_detail::Slot& s = {fn}_detail::slot(slot);
   {run};
   return s.out0.data();
}}
}}
"""


def _scorer_code(name: str, fn: str, sig: dict) -> str:
    """What cling compiles: the library's entry points and the small templates RDataFrame calls,
    which copy an event's columns into the slot's input buffers (no allocation per event but the
    RVec a model with several output values returns)."""
    abi = SessionABI.from_signature(sig)
    ins, outs = sig["inputs"], sig["outputs"]
    in_sizes = [_numel(i["shape"]) for i in ins]
    n_out = _numel(outs[0]["shape"])
    out_ct = abi.outputs[0].ctype
    ret = out_ct if n_out == 1 else f"ROOT::RVec<{out_ct}>"
    result = "return y[0];" if n_out == 1 else f"return ROOT::RVec<{out_ct}>(y, y + {n_out});"
    decls = "\n".join(f"{p.ctype}* {fn}_input{k}(unsigned slot);" for k, p in enumerate(abi.inputs))
    vec_params = ", ".join(f"const ROOT::RVec<T{k}>& x{k}" for k in range(len(ins)))
    vec_tparams = ", ".join(f"typename T{k}" for k in range(len(ins)))
    vec_fill = "\n".join(
        f"   if (x{k}.size() != {n})\n"
        f"      throw std::runtime_error(\"jaxpr2sofie: input {ins[k]['name']} of {name} needs {n} values, the column has \" "
        f"+ std::to_string(x{k}.size()));\n"
        f"   std::copy(x{k}.begin(), x{k}.end(), {fn}_input{k}(slot));" for k, n in enumerate(in_sizes))
    # guarded: a process may declare one model twice (a local and a distributed RDataFrame in one
    # script: the client declares what it distributes), and cling refuses a second definition
    return f"""
#ifndef JAXPR2SOFIE_ROOT_{fn.upper()}
#define JAXPR2SOFIE_ROOT_{fn.upper()}
#include <ROOT/RVec.hxx>
#include <algorithm>
#include <stdexcept>
#include <string>
extern "C" {{
{decls}
const {out_ct}* {fn}_run(unsigned slot);
}}
namespace jaxpr2sofie_root {{
// One value per model input feature, in order (scalar columns).
template <typename... T>
{ret} {fn}(unsigned slot, T... x) {{
   static_assert(sizeof...(T) == {in_sizes[0]}, "number of columns != model input size");
   {abi.inputs[0].ctype}* in = {fn}_input0(slot);
   std::size_t k = 0;
   ((in[k++] = static_cast<{abi.inputs[0].ctype}>(x)), ...);
   const {out_ct}* y = {fn}_run(slot);
   {result}
}}
// One RVec column per model input.
template <{vec_tparams}>
{ret} {fn}_vec(unsigned slot, {vec_params}) {{
{vec_fill}
   const {out_ct}* y = {fn}_run(slot);
   {result}
}}
}} // namespace jaxpr2sofie_root
#endif
"""


# The library's flags: the fastest build of this machine, and for a distributed dataframe (shipped to
# workers that may be other machines) -O2 for the documented baseline ISA, which runs as fast (simd.py).
LOCAL_FLAGS = ["-O3", "-march=native", "-std=c++17"]
SHIPPED_FLAGS = ["-O2", "-std=c++17"] + (["-march=x86-64-v3"] if __import__("platform").machine() in ("x86_64", "AMD64")
                                         else [])


def _build_library(name: str, fn: str, header: str, library_code: str, shipped: bool, link_blas: bool) -> str:
    """The model's shared library (cached by content hash, as every build of the project); the
    library code defines the BLAS names the header calls (_blas)."""
    from .cpp.build import WARNINGS, compile_cached, find_blas, find_compiler
    flags = (SHIPPED_FLAGS if shipped else LOCAL_FLAGS) + WARNINGS + ["-pthread", "-fPIC", "-shared"]
    link = list(find_blas().link) if link_blas else []
    lib = compile_cached({f"{name}.hxx": header, "scorer.cpp": library_code}, ["scorer.cpp"], f"lib{fn}.so",
                         find_compiler(), flags, link, what=f"the RDataFrame library of {name}", tag="root-")
    return str(lib)


_DECLARED: dict = {}


def _blas(header: str, sofie: bool) -> tuple:
    """(#define lines naming the BLAS routines the header calls, shared BLAS library), or ("", None)
    for a header without products: ours calls J2S_SGEMM, a header real SOFIE generated sgemm_ and co."""
    if not (sofie_header.calls_blas(header) if sofie else "J2S_SGEMM(" in header):
        return "", None
    from .cpp.build import find_blas, shared_blas_library
    b = find_blas()
    macros = sofie_header.blas_macros(header, b.sgemm) if sofie else f"#define J2S_SGEMM {b.sgemm}\n"
    return macros, shared_blas_library(b)


def _code(model, shipped: bool = False) -> tuple:
    """The declared model, the shared libraries cling must load (the model's, and BLAS if it calls
    it), in order."""
    header, weights, sig = _model_files(model)
    key = hashlib.sha256(header.encode() + b"\0" + weights).hexdigest()[:12]
    name = sig["model"]
    ns = sig.get("namespace") or SessionABI.from_signature(sig).namespace
    fn = f"{name}_{key}"
    macros, blas = _blas(header, sig.get("generator") == "sofie")
    lib = _build_library(name, fn, header, _library_code(name, ns, fn, sig, weights, macros), shipped,
                         link_blas=blas is not None)
    dm = DeclaredModel(name, ns, f"jaxpr2sofie_root::{fn}",
                       tuple((i["name"], _per_event_shape(i["shape"]), i["dtype"]) for i in sig["inputs"]),
                       tuple((o["name"], _per_event_shape(o["shape"]), o["dtype"]) for o in sig["outputs"]),
                       _scorer_code(name, fn, sig))
    return dm, [*([blas] if blas else []), lib]


def declare(model) -> DeclaredModel:
    """Declare a generated model to ROOT's interpreter, once per process: builds the model into a
    shared library with the project's compiler and flags (cached), loads it (and the BLAS library
    the header calls, if any), and declares the scorer functions `define` calls. `model` is a
    SofieModel, a folder written by `SofieModel.generate()`, or its `.hxx`. Returns the declared model."""
    ROOT = _root()
    dm, libs = _code(model)
    if dm.scorer in _DECLARED:
        return _DECLARED[dm.scorer]
    for lib in libs:
        if ROOT.gSystem.Load(lib) < 0:
            raise RootWorkflowError(f"ROOT could not load {lib}, a library {dm.name} needs")
    if not ROOT.gInterpreter.Declare(dm.code):
        raise RootWorkflowError(f"cling rejected the generated code of {dm.name} (see the messages above)")
    _DECLARED[dm.scorer] = dm
    return dm


def _is_distributed(df) -> bool:
    return type(df).__module__.startswith("ROOT._distrdf")


def _check_columns(df, dm: DeclaredModel, inputs) -> str:
    """'scalar' (one column per feature of a single input) or 'vector' (one RVec column per input);
    every mismatch is reported here, before the event loop."""
    if isinstance(inputs, str):
        inputs = [inputs]
    inputs = list(inputs)
    sizes = dm.input_sizes()
    types = {}
    for c in inputs:
        try:
            types[c] = str(df.GetColumnType(c))
        except Exception as e:   # cppyy raises a std::runtime_error for an unknown column
            raise RootWorkflowError(f"column {c!r} is not in the dataframe ({str(e).splitlines()[0]})") from None
    kinds = {c: ("vector" if _VECTOR.match(t) else "scalar" if t in _SCALARS else "bad") for c, t in types.items()}
    bad = [f"{c!r} ({types[c]})" for c, k in kinds.items() if k == "bad"]
    if bad:
        raise RootWorkflowError(f"column(s) {', '.join(bad)} cannot feed {dm.name}: use numeric columns "
                                "(float, double, integers, bool) or RVec/std::vector of them")
    vec = [c for c in inputs if kinds[c] == "vector"]
    if vec and len(vec) != len(inputs):
        raise RootWorkflowError(f"mix of scalar and vector columns {inputs} for {dm.name}: pass either one scalar "
                                "column per input feature, or one RVec column per model input")
    for c in vec:
        inner = _VECTOR.match(types[c]).group(1)
        if inner not in _SCALARS:
            raise RootWorkflowError(f"column {c!r} ({types[c]}) holds {inner}, not numbers")
    described = ", ".join(f"{n} {list(s)}" for n, s, _ in dm.inputs)
    if vec:
        if len(vec) != len(dm.inputs):
            raise RootWorkflowError(f"{dm.name} takes {len(dm.inputs)} input(s) ({described}): pass one RVec column "
                                    f"per input, got {len(vec)}")
        return "vector"
    if len(dm.inputs) != 1:
        raise RootWorkflowError(f"{dm.name} takes {len(dm.inputs)} inputs ({described}): scalar columns can feed "
                                "a model with one input only; pass one RVec column per input")
    if len(inputs) != sizes[0]:
        raise RootWorkflowError(f"{dm.name} takes {sizes[0]} values per event ({described}), got {len(inputs)} "
                                f"column(s) {inputs}")
    return "scalar"


def define(df, column: str, model, inputs):
    """Add `column`, computed by the model from the `inputs` columns, to an RDataFrame.

    `inputs`: one scalar column per feature of the model's single input (float, double, integer or
    bool columns, converted to the model's type), or one RVec/std::vector column per model input.
    The new column is a `float` when the model gives one value per event, an `RVec<float>`
    otherwise (the first output). Works on local (also multithreaded) and distributed dataframes."""
    ROOT = _root()
    if not isinstance(column, str) or not column:
        raise RootWorkflowError(f"column must be a non-empty string, got {column!r}")
    distributed = _is_distributed(df)
    dm, libs = _code(model, shipped=distributed)
    if distributed:
        # Every worker task loads the registered libraries and declares the registered code
        # (guarded: once per process); the client does too.
        from ROOT.RDF.Distributed import DistributeCppCode, DistributeSharedLibs
        DistributeSharedLibs(libs)
        DistributeCppCode(dm.code)
        _DECLARED.setdefault(dm.scorer, dm)
    else:
        declare(model)
    kind = _check_columns(df, dm, inputs)
    cols = [inputs] if isinstance(inputs, str) else list(inputs)
    call = dm.scorer + ("_vec" if kind == "vector" else "")
    return df.Define(column, f"{call}(rdfslot_, {', '.join(cols)})")
