"""Convolution (SOFIE's ROperator_Conv) in one canonical channels-last layout.

input  [N, S1..Sd, Cin]
kernel [K1..Kd, Cg, Cout]       (Cg = Cin / groups), or, for a grouped convolution with Cg > 1,
       [G, K1..Kd, Cg, Og]      (Og = Cout / G) so that every group's GEMM operand is contiguous
output [N, O1..Od, Cout]

Channels last makes an im2col row a run of contiguous channel copies, and makes the GEMM
output land directly in the output layout. The primitive rule transposes to and from it.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from ..dims import Sym
from ..tensor import numel, strides_of
from .base import Op
from ..conv_kernels import SPATIAL
from .conv_direct import emit_direct, emit_im2col
from .epilogue import describe as describe_epilogue, emit_epilogue
from .linalg import emit_gemm, emit_packed_gemm
from .movement import copy_view
from .pool import Window, window_access

# Up to this many input channels per group a convolution runs as direct loops: an im2col row would
# be only K * Cin long, too short a GEMM depth to pay for building the matrix.
DIRECT_MAX_CIN = 4

# im2col buffer budget (floats): whole images are batched into one GEMM while they fit, so small
# images at large batch do not pay one BLAS call each, and the buffer stays cache-sized.
IM2COL_BUDGET = 1 << 16


def _at(pointer: str, offset: str) -> str:
    return pointer if offset == "0" else f"{pointer} + {offset}"


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
    # a pointwise kernel packed in 16-column strips (kernels.py): its canonical shape
    packed: tuple = ()

    # -- geometry -------------------------------------------------------------
    def dims(self, g):
        """(N, spatial sizes, Cin, kernel sizes, Cg, Cout)."""
        xs = g.tensors[self.inputs[0]].shape
        ks = self.packed or g.tensors[self.inputs[1]].shape
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
        if (not self.packed and (len(k.shape) != len(want) or k.shape != want) or cin != cg * self.groups or cout % self.groups
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
        "depthwise" (direct loops, see conv_direct.py), "im2col" (+ GEMM), or "depthwise_loops"
        (the general depthwise loop: channel multipliers, input dilation)."""
        # the direct kernels take up to three spatial dimensions; more go through im2col loops
        plain = all(d == 1 for d in self.lhs_dilation) and len(self.strides) <= SPATIAL
        if self.is_pointwise(g):
            return "pointwise"
        if self.is_depthwise(g):
            _, _, cin, _, _, cout = self.dims(g)
            return "depthwise" if plain and cin == cout else "depthwise_loops"
        if plain and self.groups == 1 and self.dims(g)[2] <= DIRECT_MAX_CIN:
            return "direct"
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
        if self.algorithm(g) != "im2col":
            return {}
        _, _, _, ksizes, cg, cout = self.dims(g)
        rows = self.chunk(g) * numel(win.out for win in self.windows(g))
        need = {"col": ((rows, numel(ksizes) * cg), "float32")}
        if self.groups > 1:
            need["gemm_out"] = ((rows, cout // self.groups), "float32")
        return need

    # -- code -------------------------------------------------------------------
    def emit(self, w, g):
        w.comment(f"Conv {self.describe()}")
        if g.tensors[self.outputs[0]].size == 0:
            return
        if g.tensors[self.inputs[0]].size == 0:
            out = g.tensors[self.outputs[0]]
            w.line(f"std::fill_n({w.ref(out.name)}, {out.size}, 0.f);")
            self.finish(w, g, w.ref(out.name), "0", out.size // out.shape[-1])
            return
        algorithm = self.algorithm(g)
        if algorithm == "pointwise":
            self._emit_pointwise(w, g)
        elif algorithm in ("direct", "depthwise"):
            emit_direct(self, w, g, depthwise=algorithm == "depthwise")
        elif algorithm == "depthwise_loops":
            self._emit_depthwise(w, g)
        else:
            self._emit_im2col(w, g)

    def finish(self, w, g, y, offset, rows):
        """The epilogue over `rows` output pixels at `y` (element `offset` of the output)."""
        out = g.tensors[self.outputs[0]]
        emit_epilogue(w, g, self.epilogue, y, offset, rows, out.shape[-1], out.shape)

    def _emit_pointwise(self, w, g):
        """The input already is the im2col matrix: one GEMM over every pixel of every image, in row
        blocks when an epilogue follows, so each block is finished while still in cache."""
        n, spatial, cin, _, _, cout = self.dims(g)
        x, kern, y = w.ref(self.inputs[0]), w.ref(self.inputs[1]), w.ref(self.outputs[0])
        pixels = numel(spatial)
        if isinstance(n, Sym):   # whole images per block: the row count is a multiple of the batch
            outer, rows = n, pixels
        else:
            outer, rows = 1, n * pixels
        block = rows if not self.epilogue else max(1, min(rows, IM2COL_BUDGET // max(1, cout)))
        if self.packed and self.epilogue:   # whole 6-row tiles per block, the block's output kept in L2
            block = min(rows, max(6, IM2COL_BUDGET // 4 // max(1, cout) // 6 * 6))
        with w.loops([outer], stem="b") as (b,):
            for start, m, count in ((0, block, rows // block), (rows // block * block, rows % block, 1)):
                if m == 0 or count == 0:
                    continue
                with w.loops([count], stem="r") as (r,):
                    at = w.index([b, r], [rows, m], start)     # first row of this block
                    yo = at if cout == 1 or at == "0" else f"({at}) * {cout}"
                    xo = at if cin == 1 or at == "0" else f"({at}) * {cin}"
                    if self.packed:
                        emit_packed_gemm(w, m, cout, cin, _at(x, xo), kern, _at(y, yo))
                    else:
                        emit_gemm(w, False, False, m, cout, cin, _at(x, xo), kern, "0.f", _at(y, yo))
                    self.finish(w, g, f"({_at(y, yo)})", yo, m)

    def _emit_im2col(self, w, g):
        n, spatial, cin, ksizes, cg, cout = self.dims(g)
        wins = self.windows(g)
        outs = [win.out for win in wins]
        nb, groups = self.chunk(g), self.groups
        og, kc = cout // groups, numel(ksizes) * cg
        rows = nb * numel(outs)
        kern, y = w.ref(self.inputs[1]), w.ref(self.outputs[0])
        col = w.ref(self.scratch_names["col"])
        with w.loops([n // nb], stem="c") as (c,):
            y_chunk = _at(y, w.index([c], [rows * cout]))
            with w.loops([groups], stem="g") as (grp,):
                if len(spatial) <= SPATIAL:
                    emit_im2col(self, w, g, col, w.index([c], [nb]), nb, w.index([grp], [cg]), cg)
                else:
                    self._fill_col(w, g, col, c, grp)
                if self.packed:   # the kernel in panels (conv_passes.pack_conv_kernels)
                    emit_packed_gemm(w, rows, cout, kc, col, kern, y_chunk)
                elif groups == 1:
                    emit_gemm(w, False, False, rows, cout, kc, col, kern, "0.f", y_chunk)
                else:
                    # The BLAS helper has no output leading dimension: multiply into a per-group
                    # buffer, then scatter its columns into this group's channels.
                    tmp = w.ref(self.scratch_names["gemm_out"])
                    emit_gemm(w, False, False, rows, og, kc, col, _at(kern, w.index([grp], [kc * og])), "0.f", tmp)
                    copy_view(w, f"({_at(y_chunk, w.index([grp], [og]))})", [cout, 1], 0, tmp, [og, 1], 0, [rows, og])
            self.finish(w, g, f"({y_chunk})", w.index([c], [rows * cout]), rows)

    def _fill_col(self, w, g, col, c, grp):
        """im2col as loops of this convolution's own rank (the kernel of conv_kernels.py takes up to
        three spatial dimensions): row (image, output pixel), column (tap, channel of this group);
        zero where the window sits on padding or a dilation hole."""
        _, _, _, ksizes, cg, _ = self.dims(g)
        wins = self.windows(g)
        outs = [win.out for win in wins]
        nb = self.chunk(g)
        xst = strides_of(g.tensors[self.inputs[0]].shape)
        x = w.ref(self.inputs[0])
        with w.loops([nb, *outs, *ksizes], stem="i") as idx:
            b, o, k = idx[0], idx[1:1 + len(outs)], idx[1 + len(outs):]
            src, conds = window_access(w, wins, o, k, xst[1:-1], [c, b, grp], [nb * xst[0], xst[0], cg])
            dst = w.index(idx, [s * cg for s in strides_of([nb, *outs, *ksizes])])
            if conds:
                w.line(f"if ({' && '.join(conds)}) std::copy_n({_at(x, src)}, {cg}, {_at(col, dst)});")
                w.line(f"else std::fill_n({_at(col, dst)}, {cg}, 0.f);")
            else:
                w.line(f"std::copy_n({_at(x, src)}, {cg}, {_at(col, dst)});")

    def _emit_depthwise(self, w, g):
        """One input channel per group: a direct loop, vectorised over output channels."""
        n, spatial, cin, ksizes, _, cout = self.dims(g)
        wins = self.windows(g)
        outs = [win.out for win in wins]
        mult = cout // self.groups
        xst = strides_of(g.tensors[self.inputs[0]].shape)
        x, kern, y = w.ref(self.inputs[0]), w.ref(self.inputs[1]), w.ref(self.outputs[0])
        with w.loops([n, *outs], stem="i") as idx:
            b, o = idx[0], idx[1:]
            yrow = w.fresh("yrow")
            w.line(f"float* {yrow} = {_at(y, w.index(idx, [s * cout for s in strides_of([n, *outs])]))};")
            w.line(f"std::fill_n({yrow}, {cout}, 0.f);")
            with w.loops(ksizes, stem="k") as k:
                src, conds = window_access(w, wins, o, k, xst[1:-1], [b], [xst[0]])
                xrow, wrow = w.fresh("xrow"), w.fresh("wrow")
                body = [f"const float* {xrow} = {_at(x, src)};",
                        f"const float* {wrow} = {_at(kern, w.index(k, [s * cout for s in strides_of(ksizes)]))};"]
                with w.block(f"if ({' && '.join(conds)})") if conds else nullcontext():
                    for line in body:
                        w.line(line)
                    with w.loops([self.groups, mult], stem="c") as (ci, j):
                        oc = w.index([ci, j], [mult, 1])
                        w.line(f"{yrow}[{oc}] += {xrow}[{ci}] * {wrow}[{oc}];")
            self.finish(w, g, yrow, w.index(idx, [s * cout for s in strides_of([n, *outs])]), 1)

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
        if self.packed:
            parts.append("packed")
        return " ".join(parts)

