"""Convolution in C++: one GEMM (pointwise), im2col + GEMM, or direct loops, implicit GEMM and Winograd
(conv_direct.py)."""
from __future__ import annotations

from contextlib import nullcontext

from ...ir.dims import Sym
from ...ir.ops.conv import IM2COL_BUDGET, SPATIAL, Conv
from ...ir.tensor import numel, strides_of
from ..rules import emits
from .conv_direct import emit_direct, emit_im2col, emit_implicit, emit_winograd
from .epilogue import bias_clamp, emit_epilogue, epilogue_object
from .linalg import emit_gemm, emit_packed_gemm
from .movement import copy_view
from .pool import window_access


def _at(pointer: str, offset: str) -> str:
    return pointer if offset == "0" else f"{pointer} + {offset}"


@emits(Conv)
def _conv(op, w, g):
    w.comment(f"Conv {op.describe()}")
    if g.tensors[op.outputs[0]].size == 0:
        return
    if g.tensors[op.inputs[0]].size == 0:
        out = g.tensors[op.outputs[0]]
        w.line(f"std::fill_n({w.ref(out.name)}, {out.size}, 0.f);")
        _finish(op, w, g, w.ref(out.name), "0", out.size // out.shape[-1])
        return
    algorithm = op.algorithm(g)
    if algorithm == "pointwise":
        _emit_pointwise(op, w, g)
    elif algorithm in ("direct", "depthwise"):
        emit_direct(op, w, g, depthwise=algorithm == "depthwise")
    elif algorithm == "winograd":
        emit_winograd(op, w, g)
    elif algorithm == "implicit":
        emit_implicit(op, w, g)
    elif algorithm == "depthwise_loops":
        _emit_depthwise(op, w, g)
    else:
        _emit_im2col(op, w, g)


def _finish(op, w, g, y, offset, rows):
    """The epilogue over `rows` output pixels at `y` (element `offset` of the output)."""
    out = g.tensors[op.outputs[0]]
    emit_epilogue(w, g, op.epilogue, y, offset, rows, out.shape[-1], out.shape)


def _emit_pointwise(op, w, g):
    """The input already is the im2col matrix: one GEMM over every pixel of every image. A packed
    kernel's product applies the epilogue to each register tile: in registers when it is a
    BiasClamp, else right after storing the tile (in L1); the others run in row blocks when an
    epilogue follows, so each is finished while in cache."""
    n, spatial, cin, _, _, cout = op.dims(g)
    x, kern, y = w.ref(op.inputs[0]), w.ref(op.inputs[1]), w.ref(op.outputs[0])
    pixels = numel(spatial)
    if isinstance(n, Sym):   # whole images per block: the row count is a multiple of the batch
        outer, rows = n, pixels
    else:
        outer, rows = 1, n * pixels
    if op.packed and op.epilogue:
        out_shape = g.tensors[op.outputs[0]].shape
        epi = bias_clamp(w, g, op.epilogue, out_shape) or epilogue_object(w, g, op.epilogue, out_shape)
        w.need("gemm_packed")
        with w.loops([outer], stem="b") as (b,):
            at = w.index([b], [rows * cout])   # first output element of this image
            xo = w.index([b], [rows * cin])
            w.line(f"detail::gemm_packed_with({rows}, {cout}, {cin}, {_at(x, xo)}, {kern}, {_at(y, at)}, {at}, {epi});")
        return
    block = rows if not op.epilogue else max(1, min(rows, IM2COL_BUDGET // max(1, cout)))
    with w.loops([outer], stem="b") as (b,):
        for start, m, count in ((0, block, rows // block), (rows // block * block, rows % block, 1)):
            if m == 0 or count == 0:
                continue
            with w.loops([count], stem="r") as (r,):
                at = w.index([b, r], [rows, m], start)     # first row of this block
                yo = at if cout == 1 or at == "0" else f"({at}) * {cout}"
                xo = at if cin == 1 or at == "0" else f"({at}) * {cin}"
                if op.packed:
                    emit_packed_gemm(w, m, cout, cin, _at(x, xo), kern, _at(y, yo))
                else:
                    emit_gemm(w, False, False, m, cout, cin, _at(x, xo), kern, "0.f", _at(y, yo))
                _finish(op, w, g, f"({_at(y, yo)})", yo, m)


def _emit_im2col(op, w, g):
    n, spatial, cin, ksizes, cg, cout = op.dims(g)
    wins = op.windows(g)
    outs = [win.out for win in wins]
    nb, groups = op.chunk(g), op.groups
    og, kc = cout // groups, numel(ksizes) * cg
    rows = nb * numel(outs)
    kern, y = w.ref(op.inputs[1]), w.ref(op.outputs[0])
    col = w.ref(op.scratch_names["col"])
    with w.loops([n // nb], stem="c") as (c,):
        y_chunk = _at(y, w.index([c], [rows * cout]))
        with w.loops([groups], stem="g") as (grp,):
            if len(spatial) <= SPATIAL:
                emit_im2col(op, w, g, col, w.index([c], [nb]), nb, w.index([grp], [cg]), cg)
            else:
                _fill_col(op, w, g, col, c, grp)
            if op.packed:   # the kernel in panels (prepare.pack_conv_kernels)
                emit_packed_gemm(w, rows, cout, kc, col, kern, y_chunk)
            elif groups == 1:
                emit_gemm(w, False, False, rows, cout, kc, col, kern, "0.f", y_chunk)
            else:
                # The BLAS helper has no output leading dimension: multiply into a per-group
                # buffer, then scatter its columns into this group's channels.
                tmp = w.ref(op.scratch_names["gemm_out"])
                emit_gemm(w, False, False, rows, og, kc, col, _at(kern, w.index([grp], [kc * og])), "0.f", tmp)
                copy_view(w, f"({_at(y_chunk, w.index([grp], [og]))})", [cout, 1], 0, tmp, [og, 1], 0, [rows, og])
        _finish(op, w, g, f"({y_chunk})", w.index([c], [rows * cout]), rows)


def _fill_col(op, w, g, col, c, grp):
    """im2col as loops of this convolution's own rank (the kernel of conv_kernels.py takes up to
    three spatial dimensions): row (image, output pixel), column (tap, channel of this group);
    zero where the window sits on padding or a dilation hole."""
    _, _, _, ksizes, cg, _ = op.dims(g)
    wins = op.windows(g)
    outs = [win.out for win in wins]
    nb = op.chunk(g)
    xst = strides_of(g.tensors[op.inputs[0]].shape)
    x = w.ref(op.inputs[0])
    with w.loops([nb, *outs, *ksizes], stem="i") as idx:
        b, o, k = idx[0], idx[1:1 + len(outs)], idx[1 + len(outs):]
        src, conds = window_access(w, wins, o, k, xst[1:-1], [c, b, grp], [nb * xst[0], xst[0], cg])
        dst = w.index(idx, [s * cg for s in strides_of([nb, *outs, *ksizes])])
        if conds:
            w.line(f"if ({' && '.join(conds)}) std::copy_n({_at(x, src)}, {cg}, {_at(col, dst)});")
            w.line(f"else std::fill_n({_at(col, dst)}, {cg}, 0.f);")
        else:
            w.line(f"std::copy_n({_at(x, src)}, {cg}, {_at(col, dst)});")


def _emit_depthwise(op, w, g):
    """One input channel per group: a direct loop, vectorised over output channels."""
    n, spatial, cin, ksizes, _, cout = op.dims(g)
    wins = op.windows(g)
    outs = [win.out for win in wins]
    mult = cout // op.groups
    xst = strides_of(g.tensors[op.inputs[0]].shape)
    x, kern, y = w.ref(op.inputs[0]), w.ref(op.inputs[1]), w.ref(op.outputs[0])
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
                with w.loops([op.groups, mult], stem="c") as (ci, j):
                    oc = w.index([ci, j], [mult, 1])
                    w.line(f"{yrow}[{oc}] += {xrow}[{ci}] * {wrow}[{oc}];")
        _finish(op, w, g, yrow, w.index(idx, [s * cout for s in strides_of([n, *outs])]), 1)
