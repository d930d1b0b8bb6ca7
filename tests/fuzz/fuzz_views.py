"""Random programs over run-time views and writes into them (issue 21): chains of dynamic slices
whose starts get clamped, scatters and dynamic updates into slices, argmax / argsort / sort results
feeding indices -- in straight-line code and inside scan, while and cond bodies.

Indices computed from float sums (`argmax(sum(z))`) can sit on a tie that a 1-ulp difference in
the sum flips; the runner's tie detector (a perturbation of the continuous inputs) tells those
apart from real mismatches, so the generator does not have to avoid them.
"""
from __future__ import annotations

from fuzz_programs import Builder, apply_unary, size


def _base(b: Builder, max_rest=12):
    """A float run-time input with a leading axis of 4..8 rows, scaled so it is not exact."""
    n = b.integer(4, 8)
    rest = b.shape(min_rank=0, max_rank=2, max_size=max_rest)
    x = b.fresh((n, *rest), "float32", weight=False)
    return b.emit(f"{x.name} * {b.choice([1.3, 0.7, -1.1])}", bound=2.6)


def _index(b: Builder, v, axis=0, lo_hi=None):
    """A scalar int32 start for axis `axis` of v: an argmax/argmin/argsort of row sums (computed at
    run time from floats) or a run-time int input that may lie outside the axis (clamped)."""
    n = v.shape[axis]
    how = b.choice(["argmax", "argmin", "argsort", "input"])
    if how == "input":
        lo, hi = lo_hi or (-2, n + 3)
        return b.fresh((), "int32", kind=("i", lo, hi), weight=False, view=False)
    rows = f"jnp.sum(jnp.moveaxis({v.name}, {axis}, 0).reshape({n}, -1), axis=1)"
    if how == "argsort":
        expr = f"jnp.argsort({rows})[{b.integer(0, n - 1)}].astype(jnp.int32)"
    else:
        expr = f"jnp.{how}({rows}).astype(jnp.int32)"
    return b.emit(expr, bound=n, exact=True, keep=False)


def _axis(b: Builder, v):
    axes = [d for d, n in enumerate(v.shape) if n >= 2]
    return b.choice(axes) if axes and b.coin(0.8) else (axes[0] if axes else None)


def _dyn_slice(b: Builder, v):
    ax = _axis(b, v)
    if ax is None:
        return None
    i = _index(b, v, ax)
    m = b.integer(1, v.shape[ax] - 1)
    return b.emit(f"lax.dynamic_slice_in_dim({v.name}, {i.name}, {m}, axis={ax})", bound=v.bound)


def _static_view(b: Builder, v):
    """A view of a view: a static slice, a reversal, a transpose or a reshape."""
    r = len(v.shape)
    kind = b.choice(["slice", "rev", "transpose", "reshape"])
    if kind == "slice":
        starts = [b.integer(0, max(0, n - 2)) for n in v.shape]
        return b.emit(f"lax.slice({v.name}, {tuple(starts)}, {tuple(v.shape)}, "
                      f"{tuple(b.choice([1, 1, 2]) for _ in v.shape)})", bound=v.bound)
    if kind == "rev" and r:
        return b.emit(f"lax.rev({v.name}, {b.subset(r)})", bound=v.bound)
    if kind == "transpose" and r >= 2:
        return b.emit(f"jnp.transpose({v.name}, {tuple(b.permutation(range(r)))})", bound=v.bound)
    return b.emit(f"{v.name}.reshape({(v.shape[0], -1) if r else (1,)})", bound=v.bound)


def _write(b: Builder, v):
    """A write into a (view) value: dynamic_update_slice, .at[j].op(...) (a scatter), or a scatter at
    a vector of run-time indices."""
    ax = _axis(b, v)
    if ax is None:
        return None
    kind = b.choice(["dus", "at", "at", "scatter_vec"])
    if kind == "dus":
        m = b.integer(1, v.shape[ax])
        upd = b.fresh(v.shape[:ax] + (m,) + v.shape[ax + 1:], "float32", weight=b.coin(0.3), view=False)
        j = _index(b, v, ax)
        return b.emit(f"lax.dynamic_update_slice_in_dim({v.name}, {upd.name}, {j.name}, axis={ax})",
                      bound=v.bound + 2)
    op = b.choice(["add(1.0)", "set(0.5)", "mul(-2.0)", "max(1.5)", "min(-0.25)"])
    if kind == "at":
        j = _index(b, v, 0, lo_hi=(-v.shape[0], v.shape[0]))
        return b.emit(f"{v.name}.at[{j.name}].{op}", bound=2 * v.bound + 1.5)
    k = b.integer(1, 4)
    idx = b.fresh((k,), "int32", kind=("i", -v.shape[0], v.shape[0]), weight=False, view=False)
    return b.emit(f"{v.name}.at[{idx.name}].{op}", bound=2 ** k * (v.bound + 1.5))


def _loop(b: Builder, v):
    """The same views and writes in loop and branch bodies, with carries read through slices."""
    if not v.shape or v.shape[0] < 2:
        return None
    n, m = v.shape[0], b.integer(1, v.shape[0] - 1)
    kind = b.choice(["fori_shift", "scan_pick", "while_add", "cond_slices"])
    if kind == "fori_shift":   # reads a window of the carry and writes it back one row over
        return b.emit(f"lax.fori_loop(0, {b.integer(1, 5)}, lambda i, c: lax.dynamic_update_slice_in_dim("
                      f"c, lax.dynamic_slice_in_dim(c, i + 1, {m}) * 0.5, i, 0), {v.name})", bound=v.bound)
    if kind == "scan_pick" and len(v.shape) >= 2:
        # carry: a row; each step adds at the argmax of (carry + row) and emits a sorted window
        k = b.integer(1, v.shape[1])
        return b.emit(f"lax.scan(lambda c, r: (jnp.tanh(c.at[jnp.argmax(c + r)].add(r[jnp.argmin(r)])), "
                      f"lax.dynamic_slice_in_dim(jnp.sort(r), jnp.argmax(c), {k})), {v.name}[0] * 0.5, "
                      f"{v.name}, reverse={b.coin()})[{b.integer(0, 1)}]", bound=v.bound + 1)
    if kind == "while_add":
        return b.emit(f"lax.while_loop(lambda s: s[0] < {b.integer(1, 6)}, lambda s: (s[0] + 1, "
                      f"s[1].at[s[0] % {n}].add(jnp.max(lax.dynamic_slice_in_dim(s[1], s[0], {m})))), "
                      f"(0, {v.name}))[1]", bound=v.bound * 2 ** 6)
    k = b.fresh((), "int32", kind=("i", -1, 2), weight=False, view=False)
    j = _index(b, v, 0)
    return b.emit(f"lax.cond({k.name} > 0, lambda t: lax.dynamic_slice_in_dim(t, {j.name}, {m}), "
                  f"lambda t: lax.dynamic_slice_in_dim(jnp.sort(t, axis=0), {j.name} + 1, {m}), {v.name})",
                  bound=v.bound)


def slice_programs(rng):
    """A run-time slice, then views of it, writes into it and slices of those, sometimes in a loop;
    several of the intermediate views are outputs too (a write must not change what they show)."""
    b = Builder(rng, "slices")
    z = _base(b)
    v = _dyn_slice(b, z) or z
    steps = [_dyn_slice, _dyn_slice, _write, _write, _static_view, _loop]
    views = [v]
    for _ in range(b.integer(1, 4)):
        w = b.choice(steps)(b, v)
        if w is not None and size(w.shape):
            v = w
            views.append(w)
    outs = [v] + ([b.choice(views[:-1])] if len(views) > 1 and b.coin(0.6) else []) + ([z] if b.coin(0.2) else [])
    return b.program(outs)


def sort_programs(rng):
    """sort, argsort, top_k and argmax/argmin, their results feeding gathers and slices."""
    b = Builder(rng, "sort")
    dtype = "float32" if b.coin(0.8) else "int32"
    n = b.integer(2, 8)
    x = b.fresh((n, *b.shape(min_rank=0, max_rank=2, max_size=10)), dtype, weight=False)
    r, ax = len(x.shape), b.integer(0, len(x.shape) - 1)
    kind = b.choice(["sort", "sort_desc", "argsort_take", "sort_pair", "top_k", "argmax_take", "rows_by_key"])
    outs = []
    if kind == "sort":
        v = b.emit(f"jnp.sort({x.name}, axis={ax})", bound=x.bound, exact=x.exact)
    elif kind == "sort_desc":
        v = b.emit(f"-jnp.sort(-{x.name}, axis={ax})", bound=x.bound, exact=x.exact)
    elif kind == "argsort_take":
        i = b.emit(f"jnp.argsort({x.name}, axis={ax})", bound=n, exact=True)
        y = b.fresh(x.shape, "float32", weight=b.coin(0.3))
        v = b.emit(f"jnp.take_along_axis({y.name}, {i.name}, axis={ax})", bound=y.bound)
        outs = [i] if b.coin(0.5) else []
    elif kind == "sort_pair":
        y = b.fresh(x.shape, "float32", weight=b.coin(0.3))
        v = b.emit(f"lax.sort(({x.name}, {y.name}), dimension={ax}, num_keys=1)[{b.integer(0, 1)}]", bound=2.0)
    elif kind == "top_k":
        k = b.integer(1, x.shape[-1])
        v = b.emit(f"lax.top_k({x.name}, {k})[{b.integer(0, 1)}]", bound=x.bound, exact=True)
    elif kind == "argmax_take":
        i = b.emit(f"jnp.{b.choice(['argmax', 'argmin'])}({x.name}, axis={ax}, keepdims=True)", bound=n, exact=True)
        y = b.fresh(x.shape, "float32", weight=b.coin(0.3))
        v = b.emit(f"jnp.take_along_axis({y.name}, {i.name}, axis={ax})", bound=y.bound)
    else:   # permute the rows by the order of one column (an event's objects sorted by pT)
        key = f"{x.name}.reshape({n}, -1)[:, {b.integer(0, max(0, size(x.shape[1:]) - 1))}]"
        v = b.emit(f"{x.name}[jnp.argsort({key})]", bound=x.bound, exact=x.exact)
    if v is not None and v.dtype == "float32" and b.coin(0.3):
        v = apply_unary(b, v) or v
    return b.program([v, *outs])
