"""Convolution (SOFIE's ROperator_Conv) in one canonical channels-last layout.

input  [N, S1..Sd, Cin]
kernel [K1..Kd, Cg, Cout]       (Cg = Cin / groups), or, for a grouped convolution with Cg > 1,
       [G, K1..Kd, Cg, Og]      (Og = Cout / G) so that every group's GEMM operand is contiguous
output [N, O1..Od, Cout]

Channels last makes an im2col row a run of contiguous channel copies, and makes the GEMM
output land directly in the output layout. The primitive rule transposes to and from it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..dims import Sym
from ..tensor import numel
from .base import Op
from .epilogue import describe as describe_epilogue
from .pool import Window
from ..rows import same_rows, unbatched

# The direct kernels take up to this many spatial dimensions (more go through im2col loops).
SPATIAL = 3
# The implicit-GEMM kernel takes kernels of up to this many rows (taps of the spatial dimensions
# before the last): cpp/conv_kernels.py's kTapRows.
TAP_ROWS = 16
# ... and beats im2col + GEMM (benchmarks/conv_algorithms.py, AVX-512 and AVX2: 0.5-0.8x) with up to
# this many input channels, whose im2col copies cost most for their arithmetic, or with output rows
# at least this wide; narrower rows of many channels (7x7x128, 5x5x64) are mostly border pixels,
# which it does one at a time (up to 1.6x slower there).
IMPLICIT_MAX_CIN = 16
IMPLICIT_MIN_WIDTH = 8

# Up to this many input channels per group a convolution runs as direct loops: an im2col row would
# be only K * Cin long, too short a GEMM depth to pay for building the matrix.
DIRECT_MAX_CIN = 4

# im2col buffer budget (floats): whole images are batched into one GEMM while they fit, so small
# images at large batch do not pay one BLAS call each, and the buffer stays cache-sized.
IM2COL_BUDGET = 1 << 16


@dataclass(eq=False)
class Conv(Op):
    strides: tuple = ()
    padding: tuple = ()          # ((lo, hi), ...) per spatial dimension; negative crops
    lhs_dilation: tuple = ()     # input dilation: a transposed convolution
    rhs_dilation: tuple = ()     # kernel dilation: an atrous convolution
    groups: int = 1
    # elementwise stages applied to the output block by block (see epilogue.py); their tensor
    # operands follow the kernel in `inputs`
    epilogue: tuple = ()
    # set by the C++ backend's preparation (cpp/prepare.py) when it stores the kernel in panels: the
    # kernel's shape (an annotation: the kernel tensor keeps this logical layout for every backend)
    packed: tuple = ()
    # set with `packed` when the C++ backend runs it as Winograd's F(2x2, 3x3) (cpp/winograd.py): its
    # output tiles per pass (0: not Winograd); the weight file then holds the transformed kernel
    winograd: int = 0

    # -- geometry -------------------------------------------------------------
    def dims(self, g):
        """(N, spatial sizes, Cin, kernel sizes, Cg, Cout)."""
        xs = g.tensors[self.inputs[0]].shape
        ks = g.tensors[self.inputs[1]].shape
        if self.grouped_kernel(g):
            ks = ks[1:-1] + (ks[-1] * self.groups,)
        return xs[0], tuple(xs[1:-1]), xs[-1], tuple(ks[:-2]), ks[-2], ks[-1]

    def grouped_kernel(self, g) -> bool:
        xs = g.tensors[self.inputs[0]].shape
        return self.groups > 1 and xs[-1] // self.groups > 1

    def windows(self, g):
        _, spatial, _, ksizes, _, _ = self.dims(g)
        return [Window(n, int(k), int(s), int(lo), int(hi), int(ld), int(rd))
                for n, k, s, (lo, hi), ld, rd in zip(spatial, ksizes, self.strides, self.padding,
                                                     self.lhs_dilation, self.rhs_dilation)]

    def infer(self, g):
        x, k = g.tensors[self.inputs[0]], g.tensors[self.inputs[1]]
        n, spatial, cin, ksizes, cg, cout = self.dims(g)
        d = len(spatial)
        want = ((self.groups,) + ksizes + (cg, cout // self.groups)) if self.grouped_kernel(g) else ksizes + (cg, cout)
        if (len(k.shape) != len(want) or k.shape != want or cin != cg * self.groups or cout % self.groups
                or not d == len(self.strides) == len(self.padding) == len(self.lhs_dilation) == len(self.rhs_dilation)):
            raise ValueError(f"Conv: input {x.shape}, kernel {k.shape} and groups={self.groups} do not match "
                             f"the canonical layout (kernel expected {want})")
        return [((n,) + tuple(win.out for win in self.windows(g)) + (cout,), x.dtype)]

    def is_pointwise(self, g) -> bool:
        """A 1x1 kernel on every input pixel: the input already is the im2col matrix."""
        return self.groups == 1 and not any(
            win.window != 1 or win.stride != 1 or win.lo or win.hi or win.base_dilation != 1
            for win in self.windows(g))

    def is_depthwise(self, g) -> bool:
        _, _, _, _, cg, _ = self.dims(g)
        return self.groups > 1 and cg == 1

    def algorithm(self, g) -> str:
        """How this convolution runs: "pointwise" (one GEMM on the input as it is), "direct" or
        "depthwise" (direct loops, see cpp/ops/conv_direct.py), "winograd" (F(2x2, 3x3), chosen by
        the C++ backend's preparation: cpp/winograd.py), "implicit" (a GEMM read from the input in place,
        on the kernel the C++ preparation packs: cpp/conv_implicit.py), "im2col" (+ GEMM), or "depthwise_loops"
        (the general depthwise loop: channel multipliers, input dilation)."""
        if self.winograd:
            return "winograd"
        # the direct kernels take up to three spatial dimensions; more go through im2col loops
        plain = all(d == 1 for d in self.lhs_dilation) and len(self.strides) <= SPATIAL
        if self.is_pointwise(g):
            return "pointwise"
        if self.is_depthwise(g):
            _, _, cin, _, _, cout = self.dims(g)
            return "depthwise" if plain and cin == cout else "depthwise_loops"
        if plain and self.groups == 1 and self.dims(g)[2] <= DIRECT_MAX_CIN:
            return "direct"
        if self.packed and plain and self.groups == 1 and numel(self.dims(g)[3][:-1]) <= TAP_ROWS and (
                self.dims(g)[2] <= IMPLICIT_MAX_CIN or self.windows(g)[-1].out >= IMPLICIT_MIN_WIDTH):
            return "implicit"
        return "im2col"

    def chunk(self, g) -> int:
        """Images per im2col pass: the largest divisor of N whose columns fit the budget."""
        n, _, _, ksizes, cg, _ = self.dims(g)
        per_image = numel(win.out for win in self.windows(g)) * numel(ksizes) * cg
        best = 1
        if isinstance(n, Sym):   # a batch chosen at run time: one image per pass
            return best
        for b in range(1, n + 1):
            if n % b == 0 and b * per_image <= IM2COL_BUDGET:
                best = b
        return best

    def scratch(self, g):
        if self.algorithm(g) == "winograd":
            _, _, cin, _, _, cout = self.dims(g)
            return {"wino_in": ((16, self.winograd, cin), "float32"), "wino_out": ((16, self.winograd, cout), "float32")}
        if self.algorithm(g) != "im2col":
            return {}
        _, _, _, ksizes, cg, cout = self.dims(g)
        rows = self.chunk(g) * numel(win.out for win in self.windows(g))
        need = {"col": ((rows, numel(ksizes) * cg), "float32")}
        if self.groups > 1:
            need["gemm_out"] = ((rows, cout // self.groups), "float32")
        return need

    # -- code -------------------------------------------------------------------

    def flops(self, g):
        _, _, _, ksizes, cg, _ = self.dims(g)
        return g.tensors[self.outputs[0]].size * (2 * numel(ksizes) * cg + len(self.epilogue))

    def describe(self):
        parts = [f"strides={tuple(self.strides)}"]
        if any(p != (0, 0) for p in self.padding):
            parts.append(f"pads={tuple(self.padding)}")
        if any(d != 1 for d in self.lhs_dilation):
            parts.append(f"lhs_dilation={tuple(self.lhs_dilation)}")
        if any(d != 1 for d in self.rhs_dilation):
            parts.append(f"dilations={tuple(self.rhs_dilation)}")
        if self.groups != 1:
            parts.append(f"group={self.groups}")
        if self.epilogue:
            parts.append(f"epilogue={describe_epilogue(self.epilogue)}")
        if self.winograd:
            parts.append("winograd")
        elif self.packed:
            parts.append("packed")
        return " ".join(parts)

    def rows(self, g) -> str:
        if not unbatched(g.tensors[self.inputs[1]].shape):
            return "has a kernel that depends on the batch"
        return same_rows(g, self, [self.inputs[0], *self.inputs[2:]])

