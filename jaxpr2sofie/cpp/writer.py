"""The one code writer every operator emits through.

It owns indentation, loop nests, index arithmetic and literals, and resolves a tensor
name to the C++ expression of its buffer (decided by the graph's memory plan), so an
operator never formats buffer names or indentation itself.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np

from ..ir.tensor import ctype


class Writer:
    def __init__(self, buffers: dict | None = None, indent: str = "   "):
        self.lines: list[str] = []
        self.depth = 0
        self.indent = indent
        self.buffers = buffers or {}
        self._counter = 0
        self.needs: set = set()   # helper functions the emitted code calls (see emit.HELPERS)
        self.defs: dict = {}      # generated helper text (with @NAME@) -> its name, see `define`
        self.tiered: dict = {}    # (parameters, arguments, body) -> name of a dispatched function, see `define_dispatched`
        self.fence_before: set = set()   # tensors whose arena memory held another dtype before them
        self.blas = True   # False: products never call BLAS (convert(..., blas="none"))

    # -- text ---------------------------------------------------------------
    def line(self, text: str = "") -> None:
        self.lines.append((self.indent * self.depth + text) if text else "")

    def verbatim(self, text: str) -> None:
        """Lines of fixed C++ (a helper function), indented to the current depth."""
        self.lines.extend(self.line_prefix() + l if l else l for l in text.splitlines())

    def line_prefix(self) -> str:
        return self.indent * self.depth

    def comment(self, text: str) -> None:
        self.line("// " + text)

    @contextmanager
    def block(self, header: str, tail: str = ""):
        self.line(header + " {")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            self.line("}" + tail)

    def need(self, helper: str) -> None:
        """Record that the code calls `detail::<helper>`: the header then carries it, once."""
        self.needs.add(helper)

    def define(self, stem: str, text: str) -> str:
        """A helper generated for this header (e.g. an epilogue's stages), written once however
        many operators define the same text: its name (`text` says @NAME@ where it goes)."""
        if text not in self.defs:
            self.defs[text] = f"{stem}{len(self.defs)}"
        return self.defs[text]

    def define_dispatched(self, stem: str, params: str, args: str, text: str) -> str:
        """Functions generated for this header, written with the portability layer's vectors and
        compiled for the baseline and each wider vector tier (simd.py): `text` defines
        `void @NAME@_v(params)` (and may define other @NAME@_ functions before it); NAME runs the
        widest tier the CPU has. `args` names the parameters in order. Written once however many
        operators define the same text: its name."""
        key = (params, args, text)
        if key not in self.tiered:
            self.tiered[key] = f"{stem}{len(self.tiered)}"
        return self.tiered[key]

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def fresh(self, stem: str) -> str:
        """A local variable name unused so far in this file."""
        self._counter += 1
        return f"{stem}{self._counter}"

    # -- buffers ------------------------------------------------------------
    def ref(self, tensor: str) -> str:
        """C++ expression of the first element pointer of `tensor`'s buffer."""
        return self.buffers.get(tensor, "tensor_" + tensor)

    # -- loops and indices --------------------------------------------------
    @contextmanager
    def loops(self, extents, stem: str = "i", independent: bool = False):
        """Nested `for` loops over `extents`; yields the index variable names.

        Extents of 1 get no loop; their index is the literal 0. `independent`: every iteration
        writes its own elements and reads no element another one writes (an elementwise operator,
        even in place, or a copy), said to the compiler by J2S_IVDEP (simd.py) on the innermost
        loop, which g++ then vectorises at -O2 without run-time alias checks.
        """
        names = []
        opened = 0
        last = max((k for k, e in enumerate(extents) if e != 1), default=-1) if independent else -1
        if last >= 0:
            self.need("simd")
        for k, e in enumerate(extents):
            if e == 1:
                names.append("0")
                continue
            v = self.fresh(stem)
            names.append(v)
            if k == last:
                self.line("J2S_IVDEP")
            if e == 0:   # a zero-size dimension: `v < 0` on a size_t is a -Wtype-limits warning
                self.line(f"for (size_t {v} = 0; {v} != 0; ++{v}) {{  // empty")
            else:
                self.line(f"for (size_t {v} = 0; {v} < {e}; ++{v}) {{")   # a Sym extent prints as C++
            self.depth += 1
            opened += 1
        try:
            yield names
        finally:
            for _ in range(opened):
                self.depth -= 1
                self.line("}")

    @staticmethod
    def index(names, strides, offset: int = 0) -> str:
        """`i0*12 + i1*4 + 3` with zero terms dropped."""
        terms = []
        for n, s in zip(names, strides):
            if s == 0 or n == "0":
                continue
            terms.append(n if s == 1 else f"{n} * {s}")
        if offset != 0:
            terms.append(str(offset))
        return " + ".join(terms) if terms else "0"

    # -- literals -----------------------------------------------------------
    @staticmethod
    def literal(value, dtype) -> str:
        name = np.dtype(dtype).name
        if name == "bool":
            return "1" if bool(value) else "0"
        if name.startswith(("int", "uint")):
            v = int(value)
            if name == "int64":
                return f"INT64_C({v})"
            if name == "int32" and v == -2**31:
                return "INT32_MIN"
            return str(v)
        v = float(value)
        t = ctype(dtype)
        if math.isnan(v):
            return f"std::numeric_limits<{t}>::quiet_NaN()"
        if math.isinf(v):
            return ("" if v > 0 else "-") + f"std::numeric_limits<{t}>::infinity()"
        if name == "float32":
            s = str(np.float32(v))
            if "." not in s and "e" not in s:
                s += ".0"
            return s + "f"
        return repr(v)
