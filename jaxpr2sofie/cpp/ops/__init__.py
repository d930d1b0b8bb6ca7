"""The C++ emission rules, one module per operator family (registered in cpp/rules.py on import)."""
from . import control, conv, elementwise, fused, gather, linalg, movement, pool, reduce, sort   # noqa: F401
