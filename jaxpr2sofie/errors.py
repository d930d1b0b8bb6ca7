"""Error types. Each message names the problem and what to do about it."""
from __future__ import annotations


class Jaxpr2SofieError(Exception):
    """Base class of every error jaxpr2sofie raises on purpose."""


def _listing(head: str, items, tail: str) -> str:
    """A message listing every problem at once: a head line, one bullet per item, what to do."""
    return "\n".join([head, *(f"  - {item}" for item in items), tail])


def _what_to_do(problems) -> str:
    """The advice under a problem list: an issue is worth opening only for a primitive without a rule."""
    advice = ("Run `jaxpr2sofie inspect` on the function for the full primitive inventory; rewrite the listed "
              "lines with supported operations")
    if any(reason.startswith("no conversion rule") for _, reason, _ in problems):
        return advice + " or open an issue for a primitive without a conversion rule."
    return advice + "."


class UnsupportedPrimitiveError(Jaxpr2SofieError):
    """The function uses primitives (or primitive parameters) the converter cannot map.

    ``problems`` lists ``(primitive, reason, source_line)`` for *every* problem found,
    so a user sees the whole gap at once instead of one primitive per attempt.
    """

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = list(problems)
        super().__init__(_listing(
            f"{len(self.problems)} unsupported primitive use(s) in the traced function:",
            (f"{prim}: {reason}  [at {where}]" for prim, reason, where in self.problems),
            _what_to_do(self.problems)))

    @property
    def primitives(self) -> list[str]:
        return sorted({p for p, _, _ in self.problems})


class TraceError(Jaxpr2SofieError):
    """The function cannot be traced to a static graph (data-dependent shape, Python control flow on a value)."""


class UnsupportedDtypeError(Jaxpr2SofieError):
    """A tensor has a dtype the C++ emitter cannot represent."""


class BuildError(Jaxpr2SofieError):
    """Compiling the generated C++ failed, or no compiler/BLAS could be found."""


class InputError(Jaxpr2SofieError):
    """Inputs given to a compiled model do not match the shapes/dtypes it was converted for."""


class WeightFileError(Jaxpr2SofieError):
    """The weight file could not be loaded by the generated Session."""


class ModelFileError(Jaxpr2SofieError, ValueError):
    """A model file (.keras, .h5) is missing, truncated, corrupt or not a model; the message names
    the file and what to do."""


class KerasBackendError(Jaxpr2SofieError):
    """Keras was imported with a backend other than JAX; tracing needs the JAX backend."""


class _OperatorProblems(Jaxpr2SofieError):
    """Operators a backend cannot take, every one at once: ``problems`` holds ``(operator type,
    origin, reason)`` per problem; the origin is the primitive and source line the operator came from."""
    head = ""
    fix = ""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__(_listing(
            f"{len(self.problems)} operator(s) {self.head}:",
            (f"{op_type} ({origin or 'unknown origin'}): {reason}" for op_type, origin, reason in self.problems),
            self.fix))


class OnnxExportError(_OperatorProblems):
    """Some operators of the graph have no ONNX form (in this opset)."""
    head = "cannot be exported to ONNX"
    fix = ("The C++ export (SofieModel.generate) still works for this model; rewrite the listed lines "
           "with other operations, or try another opset (to_onnx(opset=...)).")


class SofieOperatorsError(_OperatorProblems):
    """Some operators of the graph have no rule on SOFIE's "operators" route (its bound
    ``ROperator_*`` classes)."""
    head = "cannot be handed to SOFIE operator by operator"
    fix = ("Use to_rmodel(route=\"onnx\") (SOFIE's ONNX parser reads more), or route=\"auto\", which picks "
           "it by itself; generate(backend=\"jaxpr2sofie\") takes every operator.")
