"""Tensors of the operator graph: one table, each entry with a kind."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from ..errors import UnsupportedDtypeError

# A dimension is an int, or a dims.Sym: a polynomial in the batch size chosen at run time.
Dim = Union[int, "Sym"]
Shape = tuple

# "slice": a per-step view a loop points into its sequence input (no buffer of its own)
# "fused": a value a fused elementwise loop keeps in a register (ops/fused.py), never stored
KINDS = ("input", "weight", "intermediate", "slice", "fused")

# numpy dtype name -> C++ element type. bool is stored one byte per element. float64 is converted to
# float32 at the door (trace.py): the generated code computes in single precision, as SOFIE's does.
CTYPES = {
    "float32": "float",
    "int8": "int8_t",
    "int16": "int16_t",
    "int32": "int32_t",
    "int64": "int64_t",
    "uint8": "uint8_t",
    "uint32": "uint32_t",
    "bool": "uint8_t",
}


def ctype(dtype) -> str:
    name = np.dtype(dtype).name
    try:
        return CTYPES[name]
    except KeyError:
        raise UnsupportedDtypeError(
            f"dtype {name} has no C++ mapping; supported dtypes: {', '.join(CTYPES)}. "
            "Cast the model to float32 (e.g. jax.tree.map(lambda a: a.astype('float32'), params))."
        ) from None


def check_dtype(dtype) -> str:
    ctype(dtype)
    return np.dtype(dtype).name


def numel(shape) -> int:
    n = 1
    for d in shape:
        n = n * d   # an int, or a Sym when a dimension is the run-time batch
    return n


def strides_of(shape) -> tuple:
    """Row-major element strides of a contiguous tensor."""
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc = acc * d
    return tuple(reversed(out))


_IDENT = re.compile(r"[^0-9A-Za-z_]+")


def c_identifier(label: str) -> str:
    """`params/Dense_0/kernel` or `['Dense_0']['kernel']` -> `Dense_0_kernel`."""
    s = _IDENT.sub("_", label).strip("_") or "t"
    return s if not s[0].isdigit() else "t" + s


def fresh_name(hint: str, taken: set) -> str:
    """`hint` made an identifier and unique among `taken` (a backend's own value names), then taken."""
    base = c_identifier(hint)
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def broadcast_shapes(shapes) -> tuple:
    """NumPy broadcasting of shapes whose dimensions may be the run-time batch."""
    rank = max(len(s) for s in shapes)
    out = [1] * rank
    for s in shapes:
        for k, d in enumerate(s, start=rank - len(s)):
            if d != 1:
                out[k] = d
    return tuple(out)


@dataclass
class Tensor:
    name: str               # C identifier, unique in the graph
    shape: Shape
    dtype: str              # numpy dtype name
    kind: str               # one of KINDS
    data: Optional[np.ndarray] = None   # weights only: values known at conversion time
    label: str = ""         # where it came from (weight key path), for humans
    # (K, N, transposed): a weight the C++ backend stores packed in panels of columns, an annotation
    # of its preparation (cpp/prepare.py); `data` keeps the logical layout every backend reads.
    # (K, N, False, "winograd2x3"): a 3x3 kernel stored as its 16 Winograd transforms (cpp/winograd.py)
    packed: tuple = ()

    @property
    def size(self) -> int:
        return numel(self.shape)

    @property
    def ctype(self) -> str:
        return ctype(self.dtype)
