"""Generated models inside ROOT: declare them to cling, score RDataFrame columns with them.

    import jaxpr2sofie.root as j2s_root, ROOT
    df = ROOT.RDataFrame("events", "events.root")
    df = j2s_root.define(df, "score", "out/", ["pt", "eta", "phi"])   # a SofieModel works too
    h = df.Histo1D(("score", "score", 50, 0, 1), "score")

`define` works unchanged on a multithreaded RDataFrame (`ROOT.EnableImplicitMT()`: one Session
per processing slot, no locks) and on a distributed one (`ROOT.RDataFrame(..., executor=client)`
with a Dask client): the model's code travels to every worker as C++ source, with its weights
inside it, so workers need no shared file system; each worker process declares it once.

This module imports no JAX (PyROOT's LLVM and jaxlib's are best kept in separate processes):
convert and compute JAX references before importing ROOT, or in another process.
Needs the `root` extra: pip install 'jaxpr2sofie[root]'.
"""
from __future__ import annotations

import hashlib
import json
import os
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
    code: str                 # everything declared: the header, its weights, the scorer

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


def _scorer_code(name: str, ns: str, key: str, sig: dict, weights: bytes) -> str:
    """C++ that owns one Session per processing slot and turns columns into model inputs.

    Each slot's Session is made by the thread running that slot, the first time it runs, so no two
    threads ever touch the same Session and no lock is needed. The weights travel inside the code
    (a raw string), so a distributed worker needs no file of ours."""
    fn = f"{name}_{key}"
    abi = SessionABI.from_signature(sig)
    ins, outs = sig["inputs"], sig["outputs"]
    in_sizes = [_numel(i["shape"]) for i in ins]
    out_sizes = [_numel(o["shape"]) for o in outs]
    out_ct = abi.outputs[0].ctype
    ret = out_ct if out_sizes[0] == 1 else f"ROOT::RVec<{out_ct}>"
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
    result = (f"return static_cast<{out_ct}>(s.out0[0]);" if out_sizes[0] == 1
              else f"return ROOT::RVec<{out_ct}>(s.out0.begin(), s.out0.end());")
    vec_params = ", ".join(f"const ROOT::RVec<T{k}>& x{k}" for k in range(len(ins)))
    vec_tparams = ", ".join(f"typename T{k}" for k in range(len(ins)))
    vec_fill = "\n".join(
        f"   if (x{k}.size() != {n})\n"
        f"      throw std::runtime_error(\"jaxpr2sofie: input {ins[k]['name']} of {name} needs {n} values, the column has \" "
        f"+ std::to_string(x{k}.size()));\n"
        f"   std::copy(x{k}.begin(), x{k}.end(), s.in{k}.begin());" for k, n in enumerate(in_sizes))
    # guarded like the header: a process may declare one model twice (a local and a distributed
    # RDataFrame in one script: the client declares what it distributes), and cling refuses a
    # second definition
    return f"""
#ifndef JAXPR2SOFIE_ROOT_{fn.upper()}
#define JAXPR2SOFIE_ROOT_{fn.upper()}
#include <ROOT/RVec.hxx>
#include <array>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <unistd.h>
namespace jaxpr2sofie_root {{
namespace {fn}_detail {{
{_weights_function(weights)}
inline std::string weight_file() {{
   static const std::string path = [] {{
      auto p = std::filesystem::temp_directory_path() / ("{fn}_" + std::to_string(::getpid()) + ".dat");
      std::ofstream(p) << weights();
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
inline Slot& slot(unsigned i) {{
   static std::array<std::unique_ptr<Slot>, 1024> slots;
   if (i >= slots.size())
      throw std::runtime_error("jaxpr2sofie: more than 1024 RDataFrame slots");
   if (!slots[i])
      slots[i] = std::make_unique<Slot>();
   return *slots[i];
}}
inline {ret} run(Slot& s) {{
   {run};
   {result}
}}
}} // namespace {fn}_detail
// One value per model input feature, in order (scalar columns).
template <typename... T>
{ret} {fn}(unsigned slot, T... x) {{
   auto& s = {fn}_detail::slot(slot);
   static_assert(sizeof...(T) == {in_sizes[0]}, "number of columns != model input size");
   std::size_t k = 0;
   ((s.in0[k++] = static_cast<{abi.inputs[0].ctype}>(x)), ...);
   return {fn}_detail::run(s);
}}
// One RVec column per model input.
template <{vec_tparams}>
{ret} {fn}_vec(unsigned slot, {vec_params}) {{
   auto& s = {fn}_detail::slot(slot);
{vec_fill}
   return {fn}_detail::run(s);
}}
}} // namespace jaxpr2sofie_root
#endif
"""


_DECLARED: dict = {}


def _blas_prefix(header: str) -> tuple:
    """(#define line, shared library path) when the header calls BLAS; ("", None) otherwise."""
    if "J2S_SGEMM(" not in header:
        return "", None
    from .cpp.build import find_blas, shared_blas_library
    b = find_blas()
    return f"#define J2S_SGEMM {b.sgemm}\n", shared_blas_library(b)


def _sofie_blas(header: str) -> tuple:
    """The #define lines and shared BLAS library for a header real SOFIE generated (sgemm_ and co)."""
    if not sofie_header.calls_blas(header):
        return "", None
    from .cpp.build import find_blas, shared_blas_library
    b = find_blas()
    return sofie_header.blas_macros(header, b.sgemm), shared_blas_library(b)


def _code(model) -> tuple:
    header, weights, sig = _model_files(model)
    key = hashlib.sha256(header.encode() + b"\0" + weights).hexdigest()[:12]
    name = sig["model"]
    ns = sig.get("namespace") or SessionABI.from_signature(sig).namespace
    define, lib = _sofie_blas(header) if sig.get("generator") == "sofie" else _blas_prefix(header)
    # cling optimises declared code only when asked
    code = "#pragma cling optimize(2)\n" + define + header + _scorer_code(name, ns, key, sig, weights)
    dm = DeclaredModel(name, ns, f"jaxpr2sofie_root::{name}_{key}",
                       tuple((i["name"], _per_event_shape(i["shape"]), i["dtype"]) for i in sig["inputs"]),
                       tuple((o["name"], _per_event_shape(o["shape"]), o["dtype"]) for o in sig["outputs"]), code)
    return dm, lib


def declare(model) -> DeclaredModel:
    """Declare a generated model to ROOT's interpreter, once per process: includes the header (with
    its weights), loads the BLAS library the header calls, if any. `model` is a SofieModel, a folder
    written by `SofieModel.generate()`, or its `.hxx`. Returns the declared model; its `namespace`
    (`TMVA_SOFIE_<Name>`) holds the Session, usable from PyROOT and C++ macros."""
    ROOT = _root()
    dm, lib = _code(model)
    if dm.scorer in _DECLARED:
        return _DECLARED[dm.scorer]
    if lib and ROOT.gSystem.Load(lib) < 0:
        raise RootWorkflowError(f"ROOT could not load the BLAS library {lib} that {dm.name}.hxx calls")
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
    dm, lib = _code(model)
    if _is_distributed(df):
        # Every worker task declares the registered code (guarded: once per process) and loads the
        # registered libraries; the client declares it too.
        from ROOT.RDF.Distributed import DistributeCppCode, DistributeSharedLibs
        if lib:
            DistributeSharedLibs([lib])
        DistributeCppCode(dm.code)
        _DECLARED.setdefault(dm.scorer, dm)
    else:
        declare(model)
    kind = _check_columns(df, dm, inputs)
    cols = [inputs] if isinstance(inputs, str) else list(inputs)
    call = dm.scorer + ("_vec" if kind == "vector" else "")
    return df.Define(column, f"{call}(rdfslot_, {', '.join(cols)})")
