"""ROOT's own SOFIE as a code generator, where the ROOT build has it.

`SofieModel.generate(dir, backend="sofie")` writes our ONNX export and lets SOFIE's
`RModelParser_ONNX` generate `<Name>.hxx` (+ its weight file) from it; `backend="auto"` does so when
SOFIE is present and the export uses only operators SOFIE parses, and uses our own emitter
otherwise. SOFIE runs in a separate Python process: PyROOT's LLVM and jaxlib's do not share a
process well. The PyPI `root` package has no TMVA/SOFIE; conda-forge's ROOT and LCG views do.
"""
from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from pathlib import Path

from .errors import BuildError

BACKENDS = ("jaxpr2sofie", "sofie", "auto")

_PROBE = """
import ROOT
print("version", ROOT.gROOT.GetVersion())
try:
    ROOT.TMVA.Experimental.SOFIE.RModelParser_ONNX
    print("sofie ok")
except Exception:
    pass
"""
NO_SOFIE = "no TMVA SOFIE"


@functools.lru_cache(maxsize=1)
def probe_root() -> tuple:
    """(why ROOT's SOFIE cannot be used here, or "" when it can; ROOT's version, or "" without ROOT),
    asked in a separate process: PyROOT's LLVM and jaxlib's do not share a process well."""
    try:
        res = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"could not start Python to look for ROOT ({e})", ""
    version = next((ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("version ")), "")
    if "sofie ok" in res.stdout:
        return "", version
    if "No module named 'ROOT'" in res.stderr:
        return "PyROOT is not installed", ""
    return NO_SOFIE, version


def sofie_status() -> str:
    """"" when ROOT's TMVA SOFIE can be used here, else why not (for messages and test skips)."""
    why, _ = probe_root()
    if why == NO_SOFIE:
        return ("this ROOT has no TMVA SOFIE (the PyPI `root` package is built without it; ROOT from conda-forge "
                "or an LCG view has it)")
    return why


_GENERATE = """
import sys
import ROOT
onnx_path, out_dir, name = sys.argv[1:4]
parser = ROOT.TMVA.Experimental.SOFIE.RModelParser_ONNX()
model = parser.Parse(onnx_path)
model.Generate()
model.OutputGenerated(out_dir + "/" + name + ".hxx")
print("generated")
"""


def generate_with_sofie(model, directory: Path) -> tuple:
    """Export `model` to ONNX and have ROOT's SOFIE generate the header from it."""
    why = sofie_status()
    if why:
        raise BuildError(f"backend='sofie' needs ROOT with TMVA SOFIE: {why}. Use backend='jaxpr2sofie' "
                         "(the default), whose header has the same Session/infer interface")
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / f"{model.name}.onnx"
    model.to_onnx(onnx_path)
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(_GENERATE), str(onnx_path), str(directory),
                          model.name], capture_output=True, text=True, timeout=900)
    if "generated" not in res.stdout:
        raise BuildError(f"ROOT's SOFIE could not generate code from {onnx_path}:\n{res.stderr[-4000:]}")
    return directory / f"{model.name}.hxx", directory / f"{model.name}.dat"


def sofie_can_parse(model) -> bool:
    """Whether every operator of the model's ONNX export is one SOFIE's parser reads."""
    from .onnx import SOFIE_OPS, model_op_types
    try:
        return model_op_types(model.to_onnx()) <= SOFIE_OPS
    except Exception:   # an operator without an export rule: SOFIE cannot have it either
        return False
