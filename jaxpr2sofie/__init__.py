"""jaxpr2sofie: trace JAX-family models and emit SOFIE-compatible C++ inference code."""
from .errors import (BuildError, InputError, Jaxpr2SofieError, TraceError, UnsupportedDtypeError,
                     UnsupportedPrimitiveError, WeightFileError)
from .model import SofieModel, Validation, convert

__version__ = "0.1.0"

__all__ = ["convert", "SofieModel", "Validation", "Jaxpr2SofieError", "UnsupportedPrimitiveError", "TraceError",
           "UnsupportedDtypeError", "BuildError", "InputError", "WeightFileError", "__version__"]
