"""A direct convolution with few input channels (a network's first layer: 1 or 3 channels, where an
im2col row is only 9 or 27 long) as loops specialised to its sizes, unlike the run-time-sized kernels
of conv_kernels.py. A model has one or two such layers, so the specialisation costs little build
time, and it pays: with constant tap and channel loops g++ unrolls the whole window (the run-time
kernel was 3x slower on the 28x28x1 CNN's first layer).

Channels last makes the innermost loop a contiguous run of output channels, held in a small
accumulator block the compiler keeps in vector registers. Per output position, each spatial
dimension's range of taps that land inside the input is computed once (two integer expressions),
so the tap loops carry no bounds checks, and dimensions that never reach the padding get constant
tap loops the compiler unrolls.
"""
from __future__ import annotations

from ...ir.tensor import strides_of
from .epilogue import emit_epilogue

LANES = 8    # floats per f8 (one AVX register)
BLOCK = 4    # f8 accumulators per channel block: 32 channels, a quarter of the vector registers



def interior(win):
    """[first, end) of the output positions whose every tap is inside the input."""
    reach = (win.window - 1) * win.window_dilation
    first = -(-win.lo // win.stride) if win.lo > 0 else 0
    end = (win.size - 1 + win.lo - reach) // win.stride + 1 if win.size - 1 + win.lo - reach >= 0 else 0
    return min(first, win.out), max(min(end, win.out), min(first, win.out))


def _tap_range(w, win, o, inside=False):
    """(base, first tap, end tap) C++ expressions for output index `o` along one dimension: input
    position = base + tap * dilation, real for taps in [first, end); `inside`: all of them are.
    A constant `o` (a border pixel) gives constants, computed here rather than in the C++."""
    d = win.window_dilation
    if o.isdigit():
        base = int(o) * win.stride - win.lo
        first = 0 if base >= 0 or not win.low_check or inside else (-base + d - 1) // d
        end = win.window
        if win.high_check and not inside:
            end = 0 if base > win.size - 1 else min(win.window, (win.size - 1 - base) // d + 1)
        return str(base), str(first), str(end)
    base = w.fresh("base")
    pos = f"static_cast<std::int64_t>({o})" + (f" * {win.stride}" if win.stride != 1 else "")
    w.line(f"const std::int64_t {base} = {pos} - {win.lo};" if win.lo else f"const std::int64_t {base} = {pos};")
    first, end = "0", str(win.window)
    if win.low_check and not inside:
        first = w.fresh("tlo")
        w.line(f"const std::int64_t {first} = {base} >= 0 ? 0 : {f'(-{base} + {d - 1}) / {d}' if d > 1 else f'-{base}'};")
    if win.high_check and not inside:
        end = w.fresh("thi")
        # taps t with base + t * d <= size - 1
        last = f"{win.size} - {base}" if d == 1 else f"({win.size - 1} - {base}) / {d} + 1"
        w.line(f"const std::int64_t {end} = {base} > {win.size - 1} ? 0 : std::min<std::int64_t>({win.window}, {last});")
    return base, first, end


def _plus(pointer: str, offset: int) -> str:
    return f"{pointer} + {offset}" if offset else pointer


def _tap_loops(w, ranges):
    """Nested loops over every real tap; yields the tap variables (one per spatial dimension)."""
    names = []
    for base, first, end in ranges:
        t = w.fresh("tap")
        names.append(t)
        w.line(f"for (std::int64_t {t} = {first}; {t} < {end}; ++{t}) {{")
        w.depth += 1
    return names


def _close(w, count):
    for _ in range(count):
        w.depth -= 1
        w.line("}")


def _blocks(cout):
    """(first channel, f8 vectors, scalar channels) of each channel block: full blocks of BLOCK
    vectors, then the vectors left, then the channels left past the last whole vector."""
    out, c = [], 0
    while cout - c >= LANES:
        nv = min(BLOCK, (cout - c) // LANES)
        out.append((c, nv, 0))
        c += nv * LANES
    if cout > c:
        out.append((c, 0, cout - c))
    return out


def emit_direct(op, w, g, depthwise: bool) -> None:
    """out[n, o, oc] = sum over real taps t (and input channels ci) of x[n, o*s + t*d - lo, ci] *
    k[t, ci, oc]; `depthwise`: ci = oc and the kernel is [K..., 1, C]. Along the last spatial
    dimension the positions whose window is all inside the input run apart from the border ones,
    with constant tap loops the compiler unrolls."""
    n, spatial, cin, ksizes, cg, cout = op.dims(g)
    wins = op.windows(g)
    outs = [win.out for win in wins]
    out = g.tensors[op.outputs[0]]
    y = w.ref(op.outputs[0])
    w.need("simd")   # the f8 vectors
    w.need("conv")
    with w.loops([n], stem="b") as (b,):
        ranges, opened = [], 0
        for win, extent in zip(wins[:-1], outs[:-1]):    # one loop per output dimension but the last
            o = "0"
            if extent != 1:
                o = w.fresh("o")
                w.line(f"for (size_t {o} = 0; {o} < {extent}; ++{o}) {{")
                w.depth += 1
                opened += 1
            ranges.append((o, _tap_range(w, win, o)))
        row = w.fresh("row")   # first output pixel of this row: the epilogue runs per row
        w.line(f"const size_t {row} = {w.index([b] + [o for o, _ in ranges], strides_of([n, *outs])[:-1])};")
        last, extent = wins[-1], outs[-1]
        lo, hi = interior(last)
        pixels = 1 if depthwise else _pixels_per_block(cout)
        for start, end, inside in ((0, lo, False), (lo, hi, True), (hi, extent, False)):
            if end <= start:
                continue
            if inside and end - start >= pixels > 1:   # interior pixels in blocks sharing their weights
                o = w.fresh("o")
                stop = start + (end - start) // pixels * pixels
                w.line(f"for (size_t {o} = {start}; {o} < {stop}; {o} += {pixels}) {{")
                w.depth += 1
                _pixel(op, w, g, depthwise, b, row, ranges + [(o, _tap_range(w, last, o, inside=True))], pixels)
                _close(w, 1)
                start = stop
                if end <= start:
                    continue
            o = w.fresh("o") if end - start > 1 else str(start)
            if end - start > 1:
                w.line(f"for (size_t {o} = {start}; {o} < {end}; ++{o}) {{")
                w.depth += 1
            _pixel(op, w, g, depthwise, b, row, ranges + [(o, _tap_range(w, last, o, inside=inside))])
            _close(w, 1 if end - start > 1 else 0)
        if op.epilogue:
            at = f"{row} * {cout}"
            emit_epilogue(w, g, op.epilogue, f"({y} + {at})", at, extent, cout, out.shape)
        _close(w, opened)


def _pixels_per_block(cout):
    """Neighbouring output pixels computed together: each weight vector loaded once feeds all of
    them, and 8 accumulators give enough independent FMA chains (4 pixels of 16 channels, 2 of 32)."""
    widest = max(nv for _, nv, _ in _blocks(cout))
    return max(1, min(4, 8 // max(1, widest)))


def _pixel(op, w, g, depthwise, b, row, ranges, count=1):
    """Every output channel of `count` neighbouring output pixels along the last dimension (all of
    their taps inside the input when count > 1; not depthwise)."""
    n, spatial, cin, ksizes, cg, cout = op.dims(g)
    wins = op.windows(g)
    x, kern, y = w.ref(op.inputs[0]), w.ref(op.inputs[1]), w.ref(op.outputs[0])
    xst = strides_of(g.tensors[op.inputs[0]].shape)
    kst = strides_of(ksizes)
    tap_cols = 1 if depthwise else cin                 # kernel rows per tap
    pix = w.fresh("pix")
    w.line(f"const size_t {pix} = {row} + {ranges[-1][0]};" if ranges[-1][0] != "0" else f"const size_t {pix} = {row};")
    ypix = w.fresh("yp")
    w.line(f"float* {ypix} = {y} + {pix} * {cout};")
    step = wins[-1].stride * xst[-2]   # input floats from one pixel's window to the next one's
    for c0, nv, ns in _blocks(cout):
        accs = [[w.fresh("acc") for _ in range(nv)] for _ in range(count)]
        for a in (a for row_accs in accs for a in row_accs):
            w.line(f"detail::f8 {a} = {{}};")
        saccs = [w.fresh("sacc") for _ in range(count)] if ns else []
        for sacc in saccs:
            w.line(f"float {sacc}[{ns}] = {{}};")
        taps = _tap_loops(w, [r for _, r in ranges])
        # the input element of this tap: base + tap * dilation along every dimension
        terms = [f"{b} * {xst[0]}"] if b != "0" else []
        for (_, (base, _, _)), t, win, st in zip(ranges, taps, wins, xst[1:-1]):
            tap = f"{t} * {win.window_dilation}" if win.window_dilation != 1 else t
            pos = tap if base == "0" else f"{base} + {tap}"
            terms.append((f"({pos}) * {st}" if pos != t else f"{t} * {st}") if st != 1 else f"({pos})")
        xp, kp = w.fresh("xp"), w.fresh("kp")
        w.line(f"const float* {xp} = {x} + {' + '.join(terms)};")
        ktap = " + ".join(f"{t} * {s * tap_cols * cout}" for t, s in zip(taps, kst))
        w.line(f"const float* {kp} = {kern} + {ktap}{f' + {c0}' if c0 else ''};")
        kvs = [w.fresh("kv") for _ in range(nv)]
        if nv:
            xv = w.fresh("xv")
            w.line(f"detail::f8 {xv}, {', '.join(kvs)};")
        for ci in range(tap_cols):
            krow = ci * cout
            for v, kv in enumerate(kvs):
                w.line(f"detail::f8_load({kv}, {_plus(kp, krow + v * LANES)});")
            for p in range(count):
                if nv and not depthwise:
                    w.line(f"detail::f8_splat({xv}, {xp}[{p * step + ci}]);")
                for v, (a, kv) in enumerate(zip(accs[p], kvs)):
                    if depthwise:
                        w.line(f"detail::f8_load({xv}, {_plus(xp, c0 + v * LANES)});")
                    w.line(f"{a} += {xv} * {kv};")
                for j in range(ns):
                    xe = f"{xp}[{c0 + nv * LANES + j}]" if depthwise else f"{xp}[{p * step + ci}]"
                    w.line(f"{saccs[p]}[{j}] += {xe} * {kp}[{krow + nv * LANES + j}];")
        _close(w, len(taps))
        for p in range(count):
            for v, a in enumerate(accs[p]):
                w.line(f"detail::f8_store({_plus(ypix, p * cout + c0 + v * LANES)}, {a});")
            if ns:
                w.line(f"std::copy_n({saccs[p]}, {ns}, {_plus(ypix, p * cout + c0 + nv * LANES)});")
