"""Weight files: SOFIE's text format and a binary format that loads fast, both checked on load.

Text (SOFIE's): `tensor_<name> <length>` then the values, tensor after tensor.

Binary (little-endian): "J2SW", u32 format version (1), u32 length + the model name, u64 hash of the
tensor table (names, types and sizes in order), u64 tensor count; then per tensor its raw values and
a u64 checksum of them (seeded by the tensor's position, so swapped blocks fail too). One header
reads both: a text file begins with "tensor_", a binary one with "J2SW" (the C++ readers are in
weight_readers.py).

Both are written as streams, a bounded chunk of values at a time (packed weights panel by panel),
so writing needs the weights plus a few tens of MB, whatever the model's size.
"""
from __future__ import annotations

import collections
import concurrent.futures
import io
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ir.tensor import ctype
from . import winograd
from .kernels import PANEL, packed_size
from .weight_text import format_chunk

FORMATS = ("text", "binary")
MAGIC = b"J2SW"
VERSION = 1
# values per chunk: ~2 MB of text formatted per thread at a time (~10 MB of temporaries), 0.5 MB of float32
CHUNK = 1 << 17

# little-endian storage type of each tensor dtype (bool is one byte, as in the Session)
_STORAGE = {"float32": "<f4", "int8": "i1", "int16": "<i2", "int32": "<i4", "int64": "<i8", "uint8": "u1",
            "uint32": "<u4", "bool": "u1"}

_MASK = (1 << 64) - 1


def stored_size(t) -> int:
    """Elements of a weight in the weight file and in the Session's memory."""
    if not t.packed:
        return t.size
    return packed_size(*t.packed[:2]) * (winograd.TRANSFORMS if winograd.is_transformed(t) else 1)


def stored_chunks(t, values: int = CHUNK):
    """A weight's values as the generated code reads them, in file order, as (array, is_last) pieces
    of about `values` elements (a multiple of 8, so each piece is whole 8-byte words): in panels of
    PANEL columns when the C++ preparation marked it packed (prepare.py, kernels.pack_panels), else
    as they are. Only one piece at a time is ever copied."""
    if not t.packed:
        flat = np.asarray(t.data).reshape(-1)
        step = max(8, values // 8 * 8)
        n = flat.size
        if n == 0:
            yield flat, True
        for at in range(0, n, step):
            yield flat[at:at + step], at + step >= n
        return
    if winograd.is_transformed(t):   # one transformed kernel (16 panelled matrices) per piece
        yield from winograd.stored_chunks(t.data)
        return
    k, n, transposed = t.packed
    data = np.asarray(t.data)
    b = data.reshape(n, k).T if transposed else data.reshape(k, n)   # [K, N], a view
    panels = -(-n // PANEL)
    per = max(1, values // max(1, k * PANEL))                         # panels per piece
    for p0 in range(0, panels, per):
        p1 = min(panels, p0 + per)
        piece = np.zeros((p1 - p0, k, PANEL), data.dtype)
        cols = b[:, p0 * PANEL:min(n, p1 * PANEL)]
        full = cols.shape[1] // PANEL
        if full:
            piece[:full] = cols[:, :full * PANEL].reshape(k, full, PANEL).transpose(1, 0, 2)
        if cols.shape[1] % PANEL:   # the last panel, zero-padded
            piece[full, :, :cols.shape[1] % PANEL] = cols[:, full * PANEL:]
        yield piece, p1 == panels


def stored(t) -> np.ndarray:
    """A weight's values as the generated code reads them, in one array (for tests and small models)."""
    return np.concatenate([np.asarray(c).reshape(-1) for c, _ in stored_chunks(t)])


def table_hash(g) -> int:
    """FNV-1a (64 bit) of `name:type:size;` for every weight, in file order."""
    h = 0xCBF29CE484222325
    for t in g.weights():
        for byte in f"{t.name}:{ctype(t.dtype)}:{stored_size(t)};".encode():
            h = ((h ^ byte) * 0x100000001B3) & _MASK
    return h


class Checksum:
    """sum of the 8-byte little-endian words w_i * (2i + 1), plus a seed from the tensor's position,
    modulo 2^64: a changed bit or a moved block changes it. Fed piece by piece (every piece but the
    last a whole number of words); vectorised, as the C++ loop is."""

    def __init__(self, position: int):
        self.total, self.words, self.position, self.ragged = 0, 0, position, False

    def update(self, data: bytes) -> None:
        if self.ragged:
            raise ValueError("only the last piece of a tensor may end inside an 8-byte word")
        pad = (-len(data)) % 8
        self.ragged = bool(pad)
        words = np.frombuffer(bytes(data) + b"\0" * pad if pad else data, dtype="<u8")
        if words.size:
            odd = np.arange(self.words, self.words + words.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
            with np.errstate(over="ignore"):
                self.total = (self.total + int((words * odd).sum(dtype=np.uint64))) & _MASK
        self.words += words.size

    def value(self) -> int:
        return (self.total + (self.position + 1) * 0x9E3779B97F4A7C15) & _MASK


def checksum(data: bytes, position: int) -> int:
    """The checksum of one tensor's bytes (see Checksum)."""
    c = Checksum(position)
    c.update(data)
    return c.value()


@dataclass(frozen=True)
class WrittenWeights:
    """What write_weights wrote: reported by generate(), compile() and summary()."""
    path: Path
    fmt: str
    nbytes: int
    values: int
    seconds: float

    def size(self) -> str:
        return _size(self.nbytes)

    def __str__(self):
        return f"{self.path}: {self.fmt}, {self.size()}, {self.values} values, written in {self.seconds:.2f} s"


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} bytes"


def _text_pieces(g):
    """The text file in order: each tensor's header line, then its values' pieces to format."""
    for t in g.weights():
        yield f"tensor_{t.name} {stored_size(t)}\n".encode(), None
        for piece, last in stored_chunks(t):
            yield piece, "\n" if last else " "


def _write_text(g, f, progress) -> None:
    # NumPy releases the GIL inside its loops, so pieces are formatted on a few threads at once while
    # this one writes them in order; at most 2 pieces per thread are in flight, so memory stays bounded
    workers = max(1, min(4, os.cpu_count() or 1))
    pending = collections.deque()

    def flush(keep: int) -> None:
        while len(pending) > keep:
            job, n = pending.popleft()
            f.write(job.result() if n else job)
            progress(n)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for item, end in _text_pieces(g):
            if end is None:
                pending.append((item, 0))
            else:
                pending.append((pool.submit(format_chunk, item, end), item.size))
            flush(2 * workers)
        flush(0)


def _write_binary(g, f, progress) -> None:
    weights = g.weights()
    name = g.name.encode()
    f.write(MAGIC + struct.pack("<II", VERSION, len(name)) + name + struct.pack("<QQ", table_hash(g), len(weights)))
    for k, t in enumerate(weights):
        c = Checksum(k)
        for piece, _ in stored_chunks(t):
            data = np.ascontiguousarray(piece, dtype=_STORAGE[t.dtype]).reshape(-1).view(np.uint8)
            f.write(data)
            c.update(data)
            progress(piece.size)
        f.write(struct.pack("<Q", c.value()))


def write_weights(g, path, fmt: str = "text", progress=None) -> WrittenWeights:
    """Write the weight file of a graph, streamed; `progress(done, total)` is told the values written."""
    if fmt not in FORMATS:
        raise ValueError(f"weights={fmt!r}: choose one of {', '.join(FORMATS)}")
    total = sum(stored_size(t) for t in g.weights())
    done = 0

    def advance(n):
        nonlocal done
        done += n
        if progress:
            progress(done, total)
    t0 = time.perf_counter()
    path = Path(path)
    with open(path, "wb") as f:
        (_write_text if fmt == "text" else _write_binary)(g, f, advance)
        nbytes = f.tell()
    return WrittenWeights(path, fmt, nbytes, total, time.perf_counter() - t0)


def weights_binary(g) -> bytes:
    """The weight file in the binary format, as bytes (for code that embeds it: jaxpr2sofie.root)."""
    f = io.BytesIO()
    _write_binary(g, f, lambda n: None)
    return f.getvalue()
