"""Pooling in C++: one loop nest over output positions and window taps."""
from __future__ import annotations

from contextlib import nullcontext

from ...ir.ops.pool import Pool, SelectAndScatterAdd
from ...ir.tensor import ctype, strides_of
from ..rules import emits
from .reduce import accumulate, init_value


def window_access(w, windows, outs, taps, strides, base_names=(), base_strides=()):
    """Index expression of the element tap `taps` of output `outs` reads, and the C++ conditions
    under which that element is real (empty: always).

    Dimensions that never leave the input fold into one linear index (no branch in the loop);
    the others get a position variable and bounds checks.
    """
    names, steps, offset = list(base_names), list(base_strides), 0
    extra, conds = [], []
    for win, o, k, st in zip(windows, outs, taps, strides):
        if not win.checked:
            names += [o, k]
            steps += [win.stride * st, win.window_dilation * st]
            offset -= win.lo * st
            continue
        p = w.fresh("p")
        shift = f" - {win.lo}" if win.lo > 0 else (f" + {-win.lo}" if win.lo < 0 else "")
        w.line(f"const std::int64_t {p} = static_cast<std::int64_t>({w.index([o, k], [win.stride, win.window_dilation])}){shift};")
        if win.low_check:
            conds.append(f"{p} >= 0")
        if win.high_check:
            conds.append(f"{p} < {win.dilated}")
        pos = p
        if win.base_dilation > 1:
            conds.append(f"{p} % {win.base_dilation} == 0")
            pos = f"({p} / {win.base_dilation})"
        if st:
            extra.append(pos if st == 1 else f"{pos} * {st}")
    index = w.index(names, steps, offset)
    if extra:
        index = " + ".join(([] if index == "0" else [index]) + extra)
    return index, conds


# How a vector of channels accumulates one tap (the portability layer's functions, simd.py).
_VECTOR_STEP = {"max": "{acc} = detail::vec_max({acc}, {x});", "min": "{acc} = detail::vec_min({acc}, {x});",
                "sum": "{acc} += {x};"}


def _channels_in_vectors(op, x, wins) -> bool:
    """Whether the last dimension (channels, NHWC) is untouched by the window, so that whole vectors
    of channels pool together: without this, g++ vectorises the loops only at -O3."""
    last = wins[-1]
    return (x.dtype == "float32" and op.kind in _VECTOR_STEP and len(x.shape) >= 2 and isinstance(x.shape[-1], int)
            and x.shape[-1] >= 4 and last.window == 1 and last.stride == 1 and not last.checked)


@emits(Pool)
def _pool(op, w, g):
    x = g.tensors[op.inputs[0]]
    out = g.tensors[op.outputs[0]]
    wins = op.windows(g)
    w.comment(f"{op.op_type} {op.describe()}")
    if out.size == 0:
        return
    init = init_value(op.kind, x.dtype) if op.init is None else w.literal(op.init, x.dtype)
    if _channels_in_vectors(op, x, wins):
        _pool_vectors(op, w, x, out, wins, init)
        return
    with w.loops(out.shape, stem="o") as o:
        acc = w.fresh("acc")
        w.line(f"{ctype(x.dtype)} {acc} = {init};")
        with w.loops([win.window for win in wins], stem="k") as k:
            index, conds = window_access(w, wins, o, k, strides_of(x.shape))
            v = w.fresh("v")
            with w.block(f"if ({' && '.join(conds)})") if conds else nullcontext():
                w.line(f"const {ctype(x.dtype)} {v} = {w.ref(x.name)}[{index}];")
                w.line(accumulate(op.kind, acc, v, x.dtype))
        w.line(f"{w.ref(out.name)}[{w.index(o, strides_of(out.shape))}] = {acc};")


def _pool_vectors(op, w, x, out, wins, init) -> None:
    """The pool with the channels of each output position in whole vectors (the last one in part)."""
    w.need("simd")
    channels = x.shape[-1]
    with w.loops(out.shape[:-1], stem="o") as o:
        c = w.fresh("c")
        with w.block(f"for (long {c} = 0; {c} < {channels}; {c} += detail::kLanes)"):
            acc = w.fresh("acc")
            w.line(f"detail::VecF {acc} = detail::vec_splat({init});")
            with w.loops([win.window for win in wins[:-1]], stem="k") as k:
                index, conds = window_access(w, wins, [*o, c], [*k, "0"], strides_of(x.shape))
                v = w.fresh("v")
                with w.block(f"if ({' && '.join(conds)})") if conds else nullcontext():
                    w.line(f"const detail::VecF {v} = detail::vec_load_part({w.ref(x.name)} + {index}, {channels} - {c});")
                    w.line(_VECTOR_STEP[op.kind].format(acc=acc, x=v))
            at = w.index([*o, c], strides_of(out.shape))
            w.line(f"detail::vec_store_part({w.ref(out.name)} + {at}, {acc}, {channels} - {c});")


@emits(SelectAndScatterAdd)
def _selectandscatteradd(op, w, g):
    src, x = (g.tensors[n] for n in op.inputs)
    out = w.ref(op.outputs[0])
    wins = op.windows(g)
    T = ctype(x.dtype)
    w.comment(f"SelectAndScatterAdd select={op.select} window={tuple(op.window)}")
    w.line(f"std::fill_n({out}, {x.size}, ({ctype(src.dtype)})0);")
    if src.size == 0:
        return
    with w.loops(src.shape, stem="o") as o:
        best, at = w.fresh("best"), w.fresh("at")
        w.line(f"{T} {best} = 0;")
        w.line(f"std::int64_t {at} = -1;")
        with w.loops([win.window for win in wins], stem="k") as k:
            index, conds = window_access(w, wins, o, k, strides_of(x.shape))
            with w.block(f"if ({' && '.join(conds)})") if conds else nullcontext():
                v = w.fresh("v")
                w.line(f"const {T} {v} = {w.ref(x.name)}[{index}];")
                # XLA keeps the current pick while select(current, candidate) holds
                keep = f"{best} >= {v}" if op.select == "ge" else f"{best} <= {v}"
                with w.block(f"if ({at} < 0 || !({keep}))"):
                    w.line(f"{best} = {v};")
                    w.line(f"{at} = static_cast<std::int64_t>({index});")
        w.line(f"if ({at} >= 0)")
        w.line(f"   {out}[{at}] += {w.ref(src.name)}[{w.index(o, strides_of(src.shape))}];")
