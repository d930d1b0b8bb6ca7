"""Real SOFIE as a backend and a test oracle: the `sofie` package from PyPI (standalone SOFIE, CERN
ML4EP), or ROOT's TMVA SOFIE where that is what is installed.

`SofieModel.to_rmodel()` hands the model to SOFIE as SOFIE's own `RModel`; `generate(dir,
backend="sofie")` has SOFIE write `<Name>.hxx` and its weight file (SOFIE's header, unmodified:
`namespace SOFIE_<Name>`); `SofieModel.compile_sofie()` (sofie_oracle.py) wraps that header in the
project's C entry points, builds it and calls SOFIE's code exactly as ours. Two routes, both
in-process (the `sofie` package is plain C++ with pybind11, no LLVM): SOFIE's bound operators built
from the IR (rmodel/), or SOFIE's own ONNX parser (`RModelParser_ONNX`) on the project's ONNX export.
ROOT's TMVA runs in a separate Python process: PyROOT's LLVM and jaxlib's do not share a process well.
"""
from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from .errors import BuildError

BACKENDS = ("jaxpr2sofie", "sofie", "auto")
ROUTES = ("auto", "operators", "onnx")
# weights= for SOFIE's header -> SOFIE's generation options (sofie.Options values, combined as an int)
SOFIE_WEIGHTS = {"text": 0, "safetensors": 256, "none": 2}
_NO_SESSION = 1   # sofie.Options.kNoSession: only with kNoWeightFile


def package_status() -> str:
    """"" when the `sofie` package can be imported here, else why not."""
    try:
        import sofie  # noqa: F401
    except ImportError as e:
        return f"the `sofie` package is not installed ({e}): pip install 'jaxpr2sofie[sofie]' (or pip install sofie)"
    return ""

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
    """"" when a SOFIE can be used here (the `sofie` package, else ROOT's TMVA), else why not."""
    if not package_status():
        return ""
    return root_status()


def root_status() -> str:
    """"" when ROOT's TMVA SOFIE can be used here, else why not."""
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


def to_rmodel(model, route: str = "auto"):
    """SOFIE's own model (`sofie.RModel`) of a converted model, by one of two routes:
    "operators" builds it operator by operator through SOFIE's bound `ROperator_*` classes
    (rmodel/); "onnx" parses the project's ONNX export for SOFIE (`to_onnx(target="sofie")`: SOFIE's
    traps avoided) with SOFIE's `RModelParser_ONNX`. "auto" takes "operators" when every operator
    has a rule there, else "onnx". The route taken and why is kept for `SofieModel.summary()`."""
    if route not in ROUTES:
        raise ValueError(f"route={route!r}: choose one of {', '.join(ROUTES)}")
    why = package_status()
    if why:
        raise BuildError(f"to_rmodel() needs the `sofie` package: {why}")
    from . import rmodel
    from .errors import SofieOperatorsError
    if route in ("auto", "operators"):
        try:
            rm = rmodel.build(model.graph)
            model.sofie_route = ("operators", "every operator has a rule on SOFIE's bound operators"
                                 if route == "auto" else "asked for")
            return rm
        except SofieOperatorsError as e:
            if route == "operators":
                raise
            reason = "; ".join(f"{t}: {r}" for t, _, r in e.problems[:3]) + (" ..." if len(e.problems) > 3 else "")
            model.sofie_route = ("onnx", f"the operators route cannot take {reason}")
        except Exception as e:   # SOFIE refused an operator the rule built (its constructors check)
            if route == "operators":
                raise
            model.sofie_route = ("onnx", f"building the operators route's model failed: {type(e).__name__}: {e}")
    else:
        model.sofie_route = ("onnx", "asked for")
    import sofie
    with tempfile.TemporaryDirectory(prefix="j2s-sofie-") as d:
        path = Path(d) / f"{model.name}.onnx"
        model.to_onnx(path, target="sofie")
        try:
            return sofie.onnx.parse(str(path))
        except Exception as e:
            raise BuildError(f"SOFIE's ONNX parser refused the export of {model.name}: {e}") from e


def generate_with_sofie(model, directory: Path, weights: str = "text", session: bool = True,
                        route: str = "auto") -> tuple:
    """SOFIE writes `<Name>.hxx` (and `<Name>.dat`, or `.safetensors`) into `directory`: the
    `sofie` package where installed, else ROOT's TMVA SOFIE in a separate process."""
    if weights not in SOFIE_WEIGHTS:
        raise ValueError(f"weights={weights!r} with backend='sofie': choose one of {', '.join(SOFIE_WEIGHTS)}")
    if not session and weights != "none":
        raise ValueError("session=False (SOFIE's kNoSession) needs weights='none': SOFIE generates no weight "
                         "loading without a Session")
    directory = Path(directory)
    if package_status():
        if weights != "text" or not session or route == "operators":
            raise BuildError(f"weights={weights!r}/session={session}/route={route!r} need the `sofie` package: {package_status()}")
        return generate_with_root(model, directory)
    rm = to_rmodel(model, route)
    directory.mkdir(parents=True, exist_ok=True)
    import sofie
    options = sofie.Options(SOFIE_WEIGHTS[weights] | (0 if session else _NO_SESSION))
    try:
        rm.generate(options)
    except Exception as e:   # an operator SOFIE reads but cannot generate (a 3-D ConvTranspose)
        if route != "auto" or model.sofie_route[0] != "operators":
            raise BuildError(f"SOFIE could not generate {model.name}: {e}") from e
        # "auto": SOFIE refused to generate the operators route's model; its ONNX parser may read it
        rm = to_rmodel(model, "onnx")
        model.sofie_route = ("onnx", f"SOFIE could not generate the operators route's model: {e}")
        try:
            rm.generate(options)
        except Exception as e2:
            raise BuildError(f"SOFIE could not generate {model.name}: {e2}") from e2
    hxx = directory / f"{model.name}.hxx"
    rm.output_generated(str(hxx))
    data = {"text": ".dat", "safetensors": ".safetensors", "none": None}[weights]
    return hxx, (directory / f"{model.name}{data}" if data else None)


def generate_with_root(model, directory: Path) -> tuple:
    """Export `model` to ONNX and have ROOT's TMVA SOFIE generate the header from it, in a separate process."""
    why = root_status()
    if why:
        raise BuildError(f"backend='sofie' needs the `sofie` package or ROOT with TMVA SOFIE: "
                         f"{package_status()}; and {why}. Use backend='jaxpr2sofie' (the default), whose header has "
                         "the same Session/infer interface")
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / f"{model.name}.onnx"
    model.to_onnx(onnx_path, target="sofie")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(_GENERATE), str(onnx_path), str(directory),
                          model.name], capture_output=True, text=True, timeout=900)
    if "generated" not in res.stdout:
        raise BuildError(f"ROOT's SOFIE could not generate code from {onnx_path}:\n{res.stderr[-4000:]}")
    return directory / f"{model.name}.hxx", directory / f"{model.name}.dat"


def sofie_can_parse(model) -> bool:
    """Whether every operator of the model's ONNX export is one SOFIE's parser reads."""
    from .onnx import SOFIE_OPS, model_op_types
    try:
        return model_op_types(model.to_onnx(target="sofie")) <= SOFIE_OPS
    except Exception:   # an operator without an export rule: SOFIE cannot have it either
        return False
