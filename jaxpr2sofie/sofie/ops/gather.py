"""Gather with XLA's general semantics (covers ONNX Gather, GatherElements and GatherND).

inputs[0] is the operand, inputs[1] the start indices whose last dimension is the index vector.
Every output position splits into *batch* dimensions (one per index vector) and *offset*
dimensions (a position inside the slice that index vector starts). The emitted code loops over
the batch positions, reads one index vector, turns it into a slice start in the operand and
copies the slice; the copy is a strided view, so an embedding row becomes one `std::copy_n`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..tensor import ctype, numel, strides_of
from .base import Op
from .movement import copy_view


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
        return [(tuple(int(n) for n in shape), operand.dtype)]

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
            names, strides, in_range = [], [], []
            for k, d in enumerate(self.start_index_map):
                s = w.fresh("s")
                at = w.index(b, idx_st[:-1], k)
                w.line(f"int64_t {s} = static_cast<int64_t>({w.ref(indices.name)}[{at}]);")
                hi = int(operand.shape[d]) - int(self.slice_sizes[d])
                if self.mode == "fill":
                    in_range.append(f"{s} >= 0 && {s} <= {hi}")
                else:
                    # XLA clamps so that the whole slice stays inside the operand.
                    w.line(f"{s} = {s} < 0 ? 0 : ({s} > {hi} ? {hi} : {s});")
                names.append(s)
                strides.append(oper_st[d])
            for od, idim in zip(self.operand_batching_dims, self.start_indices_batching_dims):
                names.append(b[idim])
                strides.append(oper_st[od])
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
