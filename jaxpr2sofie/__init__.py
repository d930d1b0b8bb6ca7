"""jaxpr2sofie: trace JAX-family models and emit SOFIE-compatible C++ inference code.

The public names load on first use, so `import jaxpr2sofie.root` (or `.cpp.build`) in a ROOT
process pulls in no JAX: PyROOT's LLVM and jaxlib's are best kept apart.
"""
from .errors import (BuildError, InputError, Jaxpr2SofieError, KerasBackendError, ModelFileError, OnnxExportError,
                     TraceError, UnsupportedDtypeError, UnsupportedPrimitiveError, WeightFileError)

__version__ = "0.1.0"

_LAZY = {"convert": "model", "SofieModel": "model", "Validation": "model",
         "from_flax": "flax_bridge", "from_nnx": "flax_bridge", "from_keras": "keras_bridge"}

__all__ = ["convert", "from_flax", "from_nnx", "from_keras", "SofieModel", "Validation", "Jaxpr2SofieError",
           "UnsupportedPrimitiveError", "TraceError", "UnsupportedDtypeError", "BuildError", "InputError",
           "WeightFileError", "KerasBackendError", "ModelFileError", "OnnxExportError", "__version__"]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jaxpr2sofie' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
