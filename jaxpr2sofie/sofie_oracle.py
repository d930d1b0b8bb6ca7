"""SOFIE's own header for a converted model, built with the project's build service and loaded like
ours: the test oracle (`SofieModel.compile_sofie()`) and the benchmark peer (bench/sofie_peer.py).

The SOFIE backend (sofie_backend.py) writes SOFIE's header and the C entry points around it; the
C++ backend's build service compiles them. SOFIE's products call the Fortran BLAS by its plain
names (sgemm_); scipy-openblas32's symbols carry a prefix, mapped with -D at compile time.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from . import sofie_backend
from .cpp import sanitize as san
from .cpp.abi import c_entry_points
from .cpp.build import DEFAULT_FLAGS, CompiledModel, compile_cached, find_blas, find_compiler
from .ir.tensor import ctype


def c_api_source(model) -> str:
    """The project's C entry points (cpp/abi.py) around SOFIE's own Session and doInfer for
    `model`'s header (`SOFIE_<Name>`): a Session per call of j2s_create, one thread."""
    g = model.graph
    ns = f"SOFIE_{model.name}"
    args = (["batch"] if g.dynamic else []) + \
        [f"static_cast<const {ctype(g.tensors[n].dtype)}*>(in[{k}])" for k, n in enumerate(g.inputs)] + \
        [f"static_cast<{ctype(g.tensors[n].dtype)}*>(out[{k}])" for k, n in enumerate(g.outputs)]
    create = (f"(void)max_batch;\n      (void)n_threads;\n      "
              f"return new {ns}::Session(weight_file{', max_batch' if g.dynamic else ''});")
    run = f"(void)batch;\n   {ns}::doInfer(*static_cast<{ns}::Session*>(s){''.join(', ' + a for a in args)});"
    return c_entry_points(f"{model.name}.hxx", f"{ns}::Session", create, run)


def sofie_build(model, extra_sources: dict, target: str, flags=None, cxx=None, blas=None, shared=False,
                route: str = "auto") -> tuple:
    """Generate SOFIE's header for `model` and build it with `extra_sources` ({file: text}: a C API,
    a timing or sanitizer program): (the built file, SOFIE's weight file)."""
    work = Path(tempfile.mkdtemp(prefix=f"j2s-sofie-{model.name}-"))
    hxx, dat = sofie_backend.generate_with_sofie(model, work, route=route)
    header = hxx.read_text()
    cmd, link = list(flags or DEFAULT_FLAGS), []
    routines = sorted(set(re.findall(r'extern "C" void (\w+_)\(', header)))
    if routines:
        b = find_blas(blas)
        prefix = b.sgemm[:-len("sgemm_")]
        cmd += [f"-D{r}={prefix}{r}" for r in routines if prefix]
        link = list(b.link)
    if shared:
        cmd += ["-fPIC", "-shared"]
    files = {hxx.name: header, **extra_sources}
    built = compile_cached(files, [n for n in extra_sources if n.endswith(".cpp")], target, find_compiler(cxx), cmd,
                           link, what="SOFIE's generated code", tag="sofie-")
    return built, dat


def compile_sofie(model, cxx=None, blas=None, flags=None, sanitize: bool = False, route: str = "auto"):
    """SOFIE's header for `model`, compiled and loaded behind the project's C entry points: a
    callable like `SofieModel.compile()`'s. `sanitize` builds it as a program under AddressSanitizer
    and UndefinedBehaviorSanitizer (as SOFIE's own tests do), run once per call. `route`: how SOFIE's
    model is made (`to_rmodel`)."""
    capi = c_api_source(model)
    if sanitize:
        exe, dat = sofie_build(model, {"capi.cpp": capi, "main.cpp": san.runner_source()}, "runner", cxx=cxx, blas=blas,
                               flags=[f for f in san.FLAGS if f not in ("-Wall", "-Wextra")], route=route)
        return san.SanitizedModel(model.graph, exe, weight_file=dat)
    lib, dat = sofie_build(model, {"capi.cpp": capi}, f"lib{model.name}.so", flags, cxx, blas, shared=True,
                           route=route)
    return CompiledModel(model.graph, lib, weight_file=dat)
