"""Test cases of the linalg primitive rules (jaxpr2sofie/primitives/linalg.py)."""
from __future__ import annotations

import jax.numpy as _jnp
from jax import lax

from . import Case, f32


_dg = lax.dot_general
CASES = [
    Case("dot_general_matmul", lambda a, b: a @ b, (f32(3, 5), f32(5, 4)), ("dot_general",), ops=("MatMul",)),
    Case("dot_general_weight_bias", lambda p, x: _jnp.tanh(x @ p["w"] + p["b"]),
         (f32(2, 6),), ("dot_general", "add"), params={"w": f32(6, 4), "b": f32(4)}, ops=("Gemm", "Tanh"),
         no_ops=("MatMul", "Add")),
    # dense layers: weights packed in panels, bias and relu in the product's epilogue; M = 5 and 13
    # cover the kernel's row tails, N = 37 a zero-padded last panel
    Case("dot_general_dense_relu_epilogue", lambda p, x: _jnp.maximum(x @ p["w"] + p["b"], 0.0),
         (f32(5, 40),), ("dot_general", "add", "max"), params={"w": f32(40, 37), "b": f32(37)}, ops=("Gemm",),
         no_ops=("MatMul", "Add", "Relu")),
    Case("dot_general_dense_rows_in_tiles_and_tail", lambda p, x: x @ p["w"], (f32(13, 20),), ("dot_general",),
         params={"w": f32(20, 33)}, ops=("MatMul",)),
    Case("dot_general_dense_relu_dynamic_batch", lambda p, x: _jnp.maximum(x @ p["w"] + p["b"], 0.0) @ p["v"],
         (f32(7, 9),), ("dot_general", "add", "max"), params={"w": f32(9, 18), "b": f32(18), "v": f32(18, 3)},
         ops=("Gemm", "MatMul"), no_ops=("Relu",), batch="dynamic"),
    # products of two activations read B's 16-column panels in place (kernels.gemm_rows): row tiles
    # of 6 and a tail row, two whole panels and 5 columns left over, at a fixed and a run-time batch
    Case("dot_general_activations_in_register_tiles", lambda a, b: _jnp.matmul(a, b), (f32(2, 13, 20), f32(2, 20, 37)),
         ("dot_general",)),
    Case("dot_general_activations_dynamic_batch", lambda x: x @ (x.T @ x), (f32(7, 20),), ("dot_general", "transpose"),
         batch="dynamic"),
    # K = 1500: rows go in blocks of 18 (A's share of the cache), so 29 rows are two blocks, each
    # with its own tail of rows, against two panels of the packed weight
    Case("dot_general_dense_row_blocks", lambda p, x: x @ p["w"], (f32(29, 1500),), ("dot_general",),
         params={"w": f32(1500, 20)}, ops=("MatMul",)),
    Case("dot_general_weight_read_in_two_layouts", lambda p, x: (x @ p["w"]) @ p["w"].T, (f32(3, 8),),
         ("dot_general", "transpose"), params={"w": f32(8, 8)}),
    Case("dot_general_vector", lambda a, b: _jnp.dot(a, b), (f32(7), f32(7)), ("dot_general",)),
    Case("dot_general_matvec", lambda a, b: a @ b, (f32(4, 7), f32(7)), ("dot_general",)),
    Case("dot_general_trans_a", lambda a, b: _dg(a, b, (((0,), (0,)), ((), ()))), (f32(5, 3), f32(5, 4)),
         ("dot_general",)),
    Case("dot_general_trans_b", lambda a, b: a @ b.T, (f32(3, 5), f32(4, 5)), ("dot_general", "transpose")),
    Case("dot_general_batched", lambda a, b: _jnp.matmul(a, b), (f32(2, 3, 5), f32(2, 5, 4)), ("dot_general",)),
    Case("dot_general_batch_dim_last", lambda a, b: _dg(a, b, (((0,), (1,)), ((2,), (0,)))),
         (f32(5, 3, 2), f32(2, 5, 4)), ("dot_general",)),
    Case("dot_general_two_contracting", lambda a, b: _dg(a, b, (((1, 2), (2, 0)), ((), ()))),
         (f32(3, 4, 5), f32(5, 6, 4)), ("dot_general",)),
    Case("dot_general_einsum", lambda a, b: _jnp.einsum("bij,bkj->bik", a, b), (f32(2, 3, 4), f32(2, 5, 4)),
         ("dot_general",)),
    Case("dot_general_rank3_by_matrix", lambda a, b: a @ b, (f32(2, 3, 5), f32(5, 4)), ("dot_general",)),
    Case("dot_general_weight_transposed", lambda p, x: x @ p["w"].T, (f32(3, 6),), ("dot_general", "transpose"),
         params={"w": f32(4, 6)}),
    # found by tests/fuzz: a product with an empty contraction (all zeros, plus the bias)
    Case("dot_general_empty_contraction", lambda a: a[:, :0] @ a[:0, :] + 1.0, (f32(3, 4),), ("dot_general",)),
    Case("mlp", lambda p, x: _jnp.tanh(x @ p[0]["w"] + p[0]["b"]) @ p[1]["w"] + p[1]["b"], (f32(4, 8),),
         ("dot_general",), params=[{"w": f32(8, 16, scale=0.3), "b": f32(16)}, {"w": f32(16, 3, scale=0.3), "b": f32(3)}]),
]
