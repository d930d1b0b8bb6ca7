"""Gather with XLA's general semantics (covers ONNX Gather, GatherElements and GatherND).

inputs[0] is the operand, inputs[1] the start indices whose last dimension is the index vector.
Every output position splits into *batch* dimensions (one per index vector) and *offset*
dimensions (a position inside the slice that index vector starts). The emitted code loops over
the batch positions, reads one index vector, turns it into a slice start in the operand and
copies the slice; the copy is a strided view, so an embedding row becomes one `std::copy_n`.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Op
from ..rows import NOT_KNOWN


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

    def describe(self):
        parts = [f"start_index_map={tuple(self.start_index_map)}", f"slice={tuple(self.slice_sizes)}",
                 f"offset_dims={tuple(self.offset_dims)}"]
        if self.collapsed_slice_dims:
            parts.append(f"collapsed={tuple(self.collapsed_slice_dims)}")
        if self.operand_batching_dims:
            parts.append(f"batching={tuple(self.operand_batching_dims)}<-{tuple(self.start_indices_batching_dims)}")
        parts.append(f"mode={self.mode}" + (f" fill={self.fill_value}" if self.mode == "fill" else ""))
        return " ".join(parts)

    def rows(self, g) -> str:
        return NOT_KNOWN


@dataclass(eq=False)
class DynamicSlice(Op):
    """lax.dynamic_slice: inputs [operand, run-time start tensors...]; `starts` holds per
    dimension an int or the name of a scalar tensor (one of the inputs)."""
    starts: tuple = ()
    sizes: tuple = ()

    def infer(self, g):
        return [(tuple(self.sizes), g.tensors[self.inputs[0]].dtype)]

    def describe(self):
        return f"sizes={tuple(self.sizes)} starts={tuple(self.starts)}"

    def rows(self, g) -> str:
        return NOT_KNOWN


@dataclass(eq=False)
class DynamicUpdateSlice(Op):
    """lax.dynamic_update_slice: inputs [operand, update, run-time start tensors...]; the output is
    the operand with the update written at the (clamped) start."""
    starts: tuple = ()

    def infer(self, g):
        t = g.tensors[self.inputs[0]]
        return [(t.shape, t.dtype)]

    def describe(self):
        return f"starts={tuple(self.starts)}"

    def rows(self, g) -> str:
        return NOT_KNOWN


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

    def describe(self):
        return (f"{self.kind} window_dims={tuple(self.update_window_dims)} inserted={tuple(self.inserted_window_dims)} "
                f"to_operand={tuple(self.scatter_dims_to_operand_dims)} mode={self.mode}")

    def rows(self, g) -> str:
        return NOT_KNOWN
