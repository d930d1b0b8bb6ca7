"""Reading a header real SOFIE generated (`namespace SOFIE_<Name>`, or ROOT's `TMVA_SOFIE_<Name>`)
without the Python model: for jaxpr2sofie.root, which declares it in ROOT and scores RDataFrame
columns with it. Imports no JAX.

SOFIE's header carries no I/O signature line of ours. `SofieModel.generate(backend="sofie")` writes
one beside it (`<Name>.io.json`: the same JSON as our header's line); for a folder SOFIE wrote by
other means the signature is read off SOFIE's own declarations: `doInfer(Session const&, [size_t N,]
const T* tensor_<input>..., T* tensor_<output>...)` and the `dim_<tensor>` arrays of each.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from .ir.tensor import CTYPES

SIDE_FILE = ".io.json"
_NAMESPACE = re.compile(r"^namespace\s+((?:TMVA_)?SOFIE_(\w+))\s*\{", re.M)
_DO_INFER = re.compile(r"inline void doInfer\(\s*Session const\s*&\s*\w+\s*,([^)]*)\)")
_DIMS = re.compile(r"std::array<SingleDim,\s*\d+>\s+dim_(\w+)\{(.*)\};")
_DTYPES = {c: d for d, c in reversed(list(CTYPES.items()))}


class SofieHeaderError(ValueError):
    """A SOFIE header whose inputs and outputs cannot be read."""


def namespace(header: str):
    """(namespace, model name) of a header SOFIE generated, or None for any other header."""
    m = _NAMESPACE.search(header)
    return (m.group(1), m.group(2)) if m else None


def signature(hxx: Path, header: str) -> dict | None:
    """The I/O signature (our format, plus "namespace" and "generator": "sofie") of a header SOFIE
    generated; None when `header` is not SOFIE's."""
    ns = namespace(header)
    if ns is None:
        return None
    side = Path(hxx).with_suffix(SIDE_FILE)
    sig = json.loads(side.read_text()) if side.exists() else _from_declarations(header, ns[1])
    sig.update(namespace=ns[0], generator="sofie")
    return sig


def _from_declarations(header: str, model: str) -> dict:
    m = _DO_INFER.search(header)
    dims = {name: re.findall(r'SingleDim\{\s*("?)([\w*+ ]+)\1\s*\}', body) for name, body in _DIMS.findall(header)}
    if m is None or not dims:
        raise SofieHeaderError(f"the SOFIE header of {model} declares no doInfer with dim_<tensor> arrays (an older "
                               f"SOFIE): write it again with SofieModel.generate(dir, backend='sofie'), which adds "
                               f"{model}{SIDE_FILE} with its inputs and outputs")
    sig = {"model": model, "inputs": [], "outputs": []}
    for param in (p.strip() for p in m.group(1).split(",") if p.strip()):
        if re.fullmatch(r"size_t\s+\w+", param):
            sig["max_batch"] = 1   # a run-time batch N: the Session is sized where it is made
            continue
        pm = re.fullmatch(r"([\w:]+)\s*(const)?\s*\*\s*tensor_(\w+)", param)
        if pm is None:
            raise SofieHeaderError(f"doInfer parameter {param!r} of {model} is not understood")
        ctype, const, name = pm.groups()
        if ctype not in _DTYPES or name not in dims:
            raise SofieHeaderError(f"tensor {name} of {model}: type {ctype} or its dim_{name} array is not known")
        shape = [int(v) if not quoted else v for quoted, v in dims[name]]
        sig["inputs" if const else "outputs"].append({"name": name, "shape": shape, "dtype": _DTYPES[ctype]})
    return sig


def blas_macros(header: str, sgemm_symbol: str) -> str:
    """#define lines mapping the Fortran BLAS names SOFIE's header calls (sgemm_) to the symbols of
    the BLAS found (scipy-openblas32 prefixes them); "" when the header calls none."""
    prefix = sgemm_symbol[:-len("sgemm_")]
    routines = sorted(set(re.findall(r'extern "C" void (\w+_)\(', header)))
    return "".join(f"#define {r} {prefix}{r}\n" for r in routines if prefix)


def calls_blas(header: str) -> bool:
    return bool(re.search(r'extern "C" void \w+_\(', header))
