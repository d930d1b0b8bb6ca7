"""Graph passes around convolutions: what follows a Conv per element moves into its epilogue, a
scale by a weight folds into its kernel, and zero padding in front of it becomes its own padding."""
from __future__ import annotations

import math

import numpy as np

from ..ir.ops.base import Scalar
from ..ir.ops.conv import Conv
from ..ir.ops.epilogue import as_stage, operand_kind
from ..ir.usedef import fixed_point
from ..ir.ops.movement import Pad


def _available_before(g, ud, name, index) -> bool:
    """Whether tensor `name` exists before operator `index` runs (a Conv reading a residual must
    not move ahead of the operator producing it)."""
    p = ud.producer(name)
    return p is None or g.ops.index(p) < index


def _fold_scale(g, ud, conv, stage) -> bool:
    """conv(x, k) * s == conv(x, k * s) for a weight kernel and a weight (or literal) s per output
    channel: the BatchNorm scale of inference costs nothing at run time."""
    kernel = g.tensors[conv.inputs[1]]
    if stage.kind != "mul" or conv.epilogue or kernel.data is None:
        return False
    (s,) = [a for a in stage.args if a is not None]
    if isinstance(s, Scalar):
        scale = np.full(1, s.value, np.float32)
    else:
        t = g.tensors[s]
        if t.data is None or operand_kind(g, s, g.tensors[conv.outputs[0]].shape) not in ("one", "channel"):
            return False
        scale = np.asarray(t.data, np.float32).reshape(-1)
    if not np.isfinite(scale).all() or not np.isfinite(kernel.data).all():
        return False   # 0 * inf: the unfused product would be NaN where the folded one is not
    k = np.asarray(kernel.data, np.float32)
    if conv.grouped_kernel(g):   # [G, K..., Cg, Og]: output channel = group * Og + j
        scale = np.broadcast_to(scale, (k.shape[0] * k.shape[-1],)).reshape((k.shape[0],) + (1,) * (k.ndim - 2) + (k.shape[-1],))
    ud.set_input(conv, 1, g.add_weight(f"{kernel.label or kernel.name}_scaled", (k * scale).astype(np.float32)))
    return True


def _epilogue(g, ud, conv) -> bool:
    """Rule: a Conv takes every elementwise stage that only consumes its output, one after the
    other (each folded into the kernel when it is a scale, else added to the epilogue)."""
    if not isinstance(conv, Conv):
        return False
    changed = False
    while True:
        acc = conv.outputs[0]
        op = ud.sole_reader(acc)
        stage = op and as_stage(g, op, acc, g.tensors[acc].shape)
        if stage is None:
            return changed
        index = g.ops.index(conv)
        if not all(_available_before(g, ud, a, index) for a in stage.inputs):
            return changed
        extra = []
        if not _fold_scale(g, ud, conv, stage):
            conv.epilogue = conv.epilogue + (stage,)
            extra = [a for a in stage.inputs if a not in conv.inputs]
        ud.absorb(op, into=conv, extra_inputs=extra)
        changed = True


def fuse_conv_epilogue(g) -> None:
    """Elementwise operators that only consume a Conv's output (bias add, BatchNorm, relu, relu6's
    max/min, a residual add, ...) become stages of its epilogue: one operator, one pass over memory."""
    fixed_point(g, _epilogue)


def _absorb_padding(g, ud, pad) -> bool:
    """Rule: a zero Pad of the spatial axes read only by a Conv is the Conv's own padding (no copy)."""
    if not isinstance(pad, Pad):
        return False
    conv = ud.sole_reader(pad.outputs[0])
    if not (isinstance(conv, Conv) and conv.inputs[0] == pad.outputs[0] and isinstance(pad.value, Scalar)
            and pad.value.value == 0 and not math.copysign(1.0, float(pad.value.value)) < 0
            and all(d == 1 for d in conv.lhs_dilation)):
        return False
    cfg = pad.config
    if cfg[0] != (0, 0, 0) or cfg[-1] != (0, 0, 0) or any(it or lo < 0 or hi < 0 for lo, hi, it in cfg):
        return False
    conv.padding = tuple((lo + plo, hi + phi) for (lo, hi), (plo, phi, _) in zip(conv.padding, cfg[1:-1]))
    ud.set_input(conv, 0, pad.inputs[0])
    ud.remove(pad)
    g.refresh_scratch(conv)
    return True


def fold_conv_padding(g) -> None:
    """A zero Pad of the spatial axes read only by a Conv is the Conv's own padding (no copy)."""
    fixed_point(g, _absorb_padding)
