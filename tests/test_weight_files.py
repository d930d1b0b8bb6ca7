"""Both weight formats load the same numbers, and both refuse missing, truncated, foreign, other-version,
reordered and corrupted files with a clear error (from the C++ Session itself)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp.build import CompiledModel, compile_library

from helpers import assert_close

X = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)


def _net(p, x):
    return jnp.tanh(x @ p["a"]["kernel"] + p["a"]["bias"]) @ p["b"]["kernel"] + p["b"]["bias"]


def _params(seed, hidden=3):
    rng = np.random.default_rng(seed)
    return {"a": {"kernel": rng.standard_normal((6, hidden)).astype(np.float32),
                  "bias": rng.standard_normal(hidden).astype(np.float32)},
            "b": {"kernel": rng.standard_normal((hidden, 3)).astype(np.float32),
                  "bias": rng.standard_normal(3).astype(np.float32)}}


@pytest.fixture(scope="module")
def model():
    m = j2s.convert(_net, _params(0), X, name="Weights")
    return m, compile_library(m.graph)


def _session(model, dat):
    m, lib = model
    return CompiledModel(m.graph, lib, weight_file=dat)


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_both_formats_give_the_same_numbers(model, tmp_path, fmt):
    m, _ = model
    _, dat = m.generate(tmp_path, weights=fmt)
    assert (dat.read_bytes()[:4] == b"J2SW") == (fmt == "binary")
    assert_close(_session(model, dat)(X), m.reference(X), what=fmt)


def test_unknown_format_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match="weights='hdf5': choose one of text, binary"):
        model[0].generate(tmp_path, weights="hdf5")


def _binary(model, tmp_path):
    return model[0].generate(tmp_path, weights="binary")[1]


def _expect(model, dat, pattern):
    with pytest.raises(j2s.WeightFileError, match=pattern):
        _session(model, dat)


def test_binary_truncated(model, tmp_path):
    dat = _binary(model, tmp_path)
    data = dat.read_bytes()
    for cut in (3, 20, len(data) // 2, len(data) - 4):
        dat.write_bytes(data[:cut])
        _expect(model, dat, "truncated|not a jaxpr2sofie weight file")


def test_binary_corrupted_value(model, tmp_path):
    dat = _binary(model, tmp_path)
    data = bytearray(dat.read_bytes())
    data[len(data) // 2] ^= 0x10                        # one flipped bit in the middle of the data
    dat.write_bytes(bytes(data))
    _expect(model, dat, "is corrupted or out of place")


def test_binary_of_another_model(model, tmp_path):
    other = j2s.convert(_net, _params(0), X, name="Other")
    _, dat = other.generate(tmp_path, weights="binary")
    _expect(model, dat, "belongs to model 'Other', not Weights")


def test_binary_of_another_version(model, tmp_path):
    newer = j2s.convert(_net, _params(0, hidden=9), X, name="Weights")    # same name, other sizes
    _, dat = newer.generate(tmp_path, weights="binary")
    _expect(model, dat, "lists other tensors than this model has")


def test_binary_with_two_tensors_swapped(model, tmp_path):
    """Two blocks of the same size exchanged: each still carries a valid-looking checksum of its own."""
    m, _ = model
    dat = _binary(model, tmp_path)
    data = dat.read_bytes()
    ws = m.graph.weights()
    sizes = [t.size * 4 + 8 for t in ws]                 # values + checksum
    head = len(data) - sum(sizes)
    blocks, at = [], head
    for n in sizes:
        blocks.append(data[at:at + n])
        at += n
    same = [(i, j) for i in range(len(ws)) for j in range(i + 1, len(ws)) if sizes[i] == sizes[j]]
    if not same:    # make two same-size blocks: swap a block with itself is no test; use the two biases
        pytest.skip("no two weight tensors of equal size")
    i, j = same[0]
    blocks[i], blocks[j] = blocks[j], blocks[i]
    dat.write_bytes(data[:head] + b"".join(blocks))
    _expect(model, dat, "is corrupted or out of place")


def test_binary_extra_data(model, tmp_path):
    dat = _binary(model, tmp_path)
    dat.write_bytes(dat.read_bytes() + b"\0")
    _expect(model, dat, "data after the last tensor")


def test_text_reordered_tensors(model, tmp_path):
    m, _ = model
    _, dat = m.generate(tmp_path)
    lines = dat.read_text().splitlines()
    pairs = [lines[k:k + 2] for k in range(0, len(lines), 2)]
    pairs[0], pairs[1] = pairs[1], pairs[0]
    dat.write_text("\n".join(l for p in pairs for l in p) + "\n")
    _expect(model, dat, "where 'tensor_.*' was expected")


def test_missing_file(model, tmp_path):
    _expect(model, tmp_path / "nothing.dat", "cannot open weight file")
