"""jaxpr2sofie: trace JAX-family models and emit SOFIE-compatible C++ inference code."""
from .errors import (BuildError, InputError, Jaxpr2SofieError, KerasBackendError, TraceError, UnsupportedDtypeError,
                     UnsupportedPrimitiveError, WeightFileError)
from .flax_bridge import from_flax, from_nnx
from .keras_bridge import from_keras
from .model import SofieModel, Validation, convert

__version__ = "0.1.0"

__all__ = ["convert", "from_flax", "from_nnx", "from_keras", "SofieModel", "Validation", "Jaxpr2SofieError",
           "UnsupportedPrimitiveError", "TraceError", "UnsupportedDtypeError", "BuildError", "InputError",
           "WeightFileError", "KerasBackendError", "__version__"]
