"""Gather with XLA's general semantics (covers ONNX Gather, GatherElements and GatherND).

inputs[0] is the operand, inputs[1] the start indices whose last dimension is the index vector.
Every output position splits into *batch* dimensions (one per index vector) and *offset*
dimensions (a position inside the slice that index vector starts). The emitted code loops over
the batch positions, reads one index vector, turns it into a slice start in the operand and
copies the slice; the copy is a strided view, so an embedding row becomes one `std::copy_n`.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from ..tensor import ctype, numel, strides_of
from .base import Op
from .movement import copy_view


def _c_int64(n) -> str:
    """A size as a signed C++ value: a literal, or a run-time expression of the batch, cast."""
    return str(n) if isinstance(n, int) else f"static_cast<int64_t>({n})"


def start_terms(w, indices, b, idx_st, dim_map, operand_shape, sizes, operand_st, checked, batching):
    """Read the start index of each mapped operand dimension at batch position `b`: a gather's
    slice start or a scatter's update start. Unchecked starts are clamped as XLA clamps them (the
    whole slice stays inside the operand); checked ones give in-range conditions instead (fill /
    drop modes). Returns the (index names, operand strides) of the start offset and the conditions."""
    names, strides, conds = [], [], []
    for k, d in enumerate(dim_map):
        s = w.fresh("s")
        w.line(f"int64_t {s} = static_cast<int64_t>({indices}[{w.index(b, idx_st[:-1], k)}]);")
        hi = _c_int64(operand_shape[d] - sizes[d])
        if checked:
            conds.append(f"{s} >= 0 && {s} <= {hi}")
        else:
            w.line(f"{s} = {s} < 0 ? 0 : ({s} > {hi} ? {hi} : {s});")
        names.append(s)
        strides.append(operand_st[d])
    for od, idim in batching:
        names.append(b[idim])
        strides.append(operand_st[od])
    return names, strides, conds


@dataclass(eq=False)
class Gather(Op):
    offset_dims: tuple = ()              # output dims that walk inside a slice
    collapsed_slice_dims: tuple = ()     # operand dims of slice size 1 left out of the output
    start_index_map: tuple = ()          # operand dim that component k of an index vector starts
    operand_batching_dims: tuple = ()    # operand dims indexed by the batch position itself ...
    start_indices_batching_dims: tuple = ()  # ... of these index dimensions (vmap of x[i])
    slice_sizes: tuple = ()
    mode: str = "clip"                   # "clip": clamp the start; "fill": out of range -> fill
    fill_value: object = None            # fill mode only; a Python scalar of the operand dtype

    # -- shapes -----------------------------------------------------------------
    def window_dims(self, rank: int) -> list:
        """Operand dims that appear in the output, in the order of `offset_dims`."""
        dropped = set(self.collapsed_slice_dims) | set(self.operand_batching_dims)
        return [d for d in range(rank) if d not in dropped]

    def batch_dims(self, out_rank: int) -> list:
        return [d for d in range(out_rank) if d not in self.offset_dims]

    def infer(self, g):
        operand, indices = (g.tensors[n] for n in self.inputs[:2])
        batch = list(indices.shape[:-1])
        window = [self.slice_sizes[d] for d in self.window_dims(len(operand.shape))]
        shape = [window.pop(0) if d in self.offset_dims else batch.pop(0)
                 for d in range(len(batch) + len(window))]
        return [(tuple(shape), operand.dtype)]

    # -- code -------------------------------------------------------------------
    def emit(self, w, g):
        operand, indices = (g.tensors[n] for n in self.inputs[:2])
        out = g.tensors[self.outputs[0]]
        T, oper_st, out_st = ctype(operand.dtype), strides_of(operand.shape), strides_of(out.shape)
        idx_st = strides_of(indices.shape)
        batch_dims = self.batch_dims(len(out.shape))
        window = self.window_dims(len(operand.shape))
        w.comment(f"Gather {self.describe()}")
        if out.size == 0:
            return
        with w.loops([out.shape[d] for d in batch_dims], stem="b") as b:
            # Batch position b (in index-dimension order) -> slice start, one term per operand dim.
            names, strides, in_range = start_terms(
                w, w.ref(indices.name), b, idx_st, self.start_index_map, operand.shape, self.slice_sizes, oper_st,
                self.mode == "fill", zip(self.operand_batching_dims, self.start_indices_batching_dims))
            dst = w.fresh("dst")
            w.line(f"{T}* {dst} = {w.ref(out.name)} + {w.index(b, [out_st[d] for d in batch_dims])};")
            shape = [out.shape[d] for d in self.offset_dims]
            dst_st = [out_st[d] for d in self.offset_dims]

            def copy_slice():
                src = w.fresh("src")
                w.line(f"const {T}* {src} = {w.ref(operand.name)} + {w.index(names, strides)};")
                copy_view(w, dst, dst_st, 0, src, [oper_st[d] for d in window], 0, shape)

            if in_range:   # the start is only turned into a pointer once known to be in bounds
                with w.block(f"if ({' && '.join(in_range)})"):
                    copy_slice()
                with w.block("else"):
                    self._fill(w, dst, dst_st, shape, w.literal(self.fill_value, operand.dtype))
            else:
                copy_slice()

    @staticmethod
    def _fill(w, dst, dst_strides, shape, value):
        if numel(shape) > 1 and tuple(s for s, n in zip(dst_strides, shape) if n != 1) == \
                tuple(s for s, n in zip(strides_of(shape), shape) if n != 1):
            w.line(f"std::fill_n({dst}, {numel(shape)}, {value});")
            return
        with w.loops(shape, stem="f") as f:
            w.line(f"{dst}[{w.index(f, dst_strides)}] = {value};")

    def describe(self):
        parts = [f"start_index_map={tuple(self.start_index_map)}", f"slice={tuple(self.slice_sizes)}",
                 f"offset_dims={tuple(self.offset_dims)}"]
        if self.collapsed_slice_dims:
            parts.append(f"collapsed={tuple(self.collapsed_slice_dims)}")
        if self.operand_batching_dims:
            parts.append(f"batching={tuple(self.operand_batching_dims)}<-{tuple(self.start_indices_batching_dims)}")
        parts.append(f"mode={self.mode}" + (f" fill={self.fill_value}" if self.mode == "fill" else ""))
        return " ".join(parts)


def _clamped_offset(w, g, dims, starts, sizes, shape) -> str:
    """C++ element offset of a window whose start per dimension is a literal or the first element
    of a run-time tensor, each clamped so the window stays inside `shape` (as XLA clamps)."""
    st = strides_of(shape)
    terms = []
    for d, s in enumerate(starts):
        hi = shape[d] - sizes[d]
        if isinstance(s, str):
            v, top = w.fresh("start"), _c_int64(hi)
            w.line(f"int64_t {v} = static_cast<int64_t>({w.ref(s)}[0]);")
            w.line(f"{v} = {v} < 0 ? 0 : ({v} > {top} ? {top} : {v});")
            terms.append(f"{v} * {st[d]}")
        elif min(max(int(s), 0), hi) * st[d]:
            terms.append(str(min(max(int(s), 0), hi) * st[d]))
    return " + ".join(terms) or "0"


@dataclass(eq=False)
class DynamicSlice(Op):
    """lax.dynamic_slice: inputs [operand, run-time start tensors...]; `starts` holds per
    dimension an int or the name of a scalar tensor (one of the inputs)."""
    starts: tuple = ()
    sizes: tuple = ()

    def infer(self, g):
        return [(tuple(self.sizes), g.tensors[self.inputs[0]].dtype)]

    def emit(self, w, g):
        src = g.tensors[self.inputs[0]]
        w.comment(f"DynamicSlice {self.describe()}")
        if numel(self.sizes) == 0:
            return
        off = _clamped_offset(w, g, range(len(self.sizes)), self.starts, self.sizes, src.shape)
        copy_view(w, w.ref(self.outputs[0]), strides_of(self.sizes), 0, f"({w.ref(src.name)} + {off})",
                  strides_of(src.shape), 0, self.sizes)

    def describe(self):
        return f"sizes={tuple(self.sizes)} starts={tuple(self.starts)}"


@dataclass(eq=False)
class DynamicUpdateSlice(Op):
    """lax.dynamic_update_slice: inputs [operand, update, run-time start tensors...]; the output is
    the operand with the update written at the (clamped) start."""
    starts: tuple = ()

    def infer(self, g):
        t = g.tensors[self.inputs[0]]
        return [(t.shape, t.dtype)]

    def emit(self, w, g):
        src, upd = g.tensors[self.inputs[0]], g.tensors[self.inputs[1]]
        out = w.ref(self.outputs[0])
        w.comment(f"DynamicUpdateSlice {self.describe()}")
        if w.ref(src.name) != out and src.size:
            w.line(f"std::copy_n({w.ref(src.name)}, {src.size}, {out});")
        if upd.size == 0:
            return
        off = _clamped_offset(w, g, range(len(upd.shape)), self.starts, upd.shape, src.shape)
        copy_view(w, f"({out} + {off})", strides_of(src.shape), 0, w.ref(upd.name), strides_of(upd.shape), 0,
                  upd.shape)

    def describe(self):
        return f"starts={tuple(self.starts)}"


_COMBINE = {"set": "{d} = {u};", "add": "{d} += {u};", "mul": "{d} *= {u};",
            "min": "{d} = ({u} < {d} || {u} != {u}) ? {u} : {d};", "max": "{d} = ({u} > {d} || {u} != {u}) ? {u} : {d};"}


@dataclass(eq=False)
class Scatter(Op):
    """XLA scatter (x.at[i].set/add/mul/min/max): inputs [operand, indices, updates]; the output
    is the operand with every update window combined in at its start. The mirror of Gather:
    update dims split into scatter dims (one per index vector) and window dims (a position
    inside the window). "clip" clamps a start so the window fits; "drop" skips a window that
    does not fit, as XLA does."""
    kind: str = "set"
    update_window_dims: tuple = ()
    inserted_window_dims: tuple = ()
    scatter_dims_to_operand_dims: tuple = ()
    operand_batching_dims: tuple = ()
    scatter_indices_batching_dims: tuple = ()
    mode: str = "clip"

    def infer(self, g):
        operand, indices, updates = (g.tensors[n] for n in self.inputs)
        window = [d for d in range(len(operand.shape))
                  if d not in self.inserted_window_dims and d not in self.operand_batching_dims]
        if len(window) != len(self.update_window_dims):
            raise ValueError(f"{len(self.update_window_dims)} update window dims for operand window dims {window}")
        if updates.dtype != operand.dtype:
            raise ValueError(f"updates of {updates.dtype} into {operand.dtype}")
        return [(operand.shape, operand.dtype)]

    def emit(self, w, g):
        operand, indices, updates = (g.tensors[n] for n in self.inputs)
        out = w.ref(self.outputs[0])
        op_st, idx_st, up_st = strides_of(operand.shape), strides_of(indices.shape), strides_of(updates.shape)
        window = [d for d in range(len(operand.shape))
                  if d not in self.inserted_window_dims and d not in self.operand_batching_dims]
        scatter_dims = [d for d in range(len(updates.shape)) if d not in self.update_window_dims]
        size = {d: 1 for d in range(len(operand.shape))}
        size.update({od: updates.shape[ud] for od, ud in zip(window, self.update_window_dims)})
        w.comment(f"Scatter {self.describe()}")
        if w.ref(operand.name) != out and operand.size:
            w.line(f"std::copy_n({w.ref(operand.name)}, {operand.size}, {out});")
        if updates.size == 0:
            return
        with w.loops([updates.shape[d] for d in scatter_dims], stem="u") as b:
            names, strides, fits = start_terms(
                w, w.ref(indices.name), b, idx_st, self.scatter_dims_to_operand_dims, operand.shape, size, op_st,
                self.mode == "drop", zip(self.operand_batching_dims, self.scatter_indices_batching_dims))
            with w.block(f"if ({' && '.join(fits)})") if fits else nullcontext():
                base = w.fresh("at")
                w.line(f"const int64_t {base} = {w.index(names, strides)};")
                with w.loops([updates.shape[d] for d in self.update_window_dims], stem="k") as k:
                    dst = f"{out}[{base} + {w.index(k, [op_st[od] for od in window])}]"
                    at = w.index(list(b) + list(k), [up_st[d] for d in (*scatter_dims, *self.update_window_dims)])
                    src = f"{w.ref(updates.name)}[{at}]"
                    w.line(_COMBINE[self.kind].format(d=dst, u=src))

    def describe(self):
        return (f"{self.kind} window_dims={tuple(self.update_window_dims)} inserted={tuple(self.inserted_window_dims)} "
                f"to_operand={tuple(self.scatter_dims_to_operand_dims)} mode={self.mode}")
