"""SOFIE's text weight format, formatted with whole-array NumPy operations instead of one Python
string per value (84 M weights: seconds instead of minutes, and no text of the whole file in memory).

A float32 is written with 9 significant digits in scientific notation (`-1.25730217e-01`), trailing
zeros of the mantissa dropped (`5e-01`, `1.5e+00`); zero as `0`/`-0`, and `nan`, `inf`, `-inf`.
Nine digits identify every float32 (the decimal grid is finer than half the float's spacing), so
the value read back is the same float bit for bit; a NaN comes back as the quiet NaN of its sign
(the text format holds no NaN payload: the binary format keeps every bit). Integers are written in
full. Every value is followed by one space, the last of a chunk by `end` (a newline ends a tensor).
"""
from __future__ import annotations

import numpy as np

# 10^k for k in [-_P10_LOW, 59]: every power a float32's exponent needs, as float64
_P10_LOW = 50
_P10 = 10.0 ** np.arange(-_P10_LOW, 60)


def _words(texts) -> np.ndarray:
    """Four-byte texts as uint32 words: a row of the output is four words, each written by one lookup."""
    return np.frombuffer("".join(texts).encode(), np.uint32)


# A float row is four words: "-d.d" (sign, leading digit, point, first decimal), four decimals,
# three decimals + "e", the exponent's sign and two digits + the separator.
_HEAD = _words(f"-{k // 10}.{k % 10}" for k in range(100))
_DIGITS4 = _words(f"{k:04d}" for k in range(10000))
_DIGITS3E = _words(f"{k:03d}e" for k in range(1000))
_EXPONENT = _words(f"{e:+03d} " for e in range(-_P10_LOW, _P10_LOW))
_ALL = np.frombuffer(b"\1\1\1\1", np.uint32)[0]
_SIGNED = np.frombuffer(b"\0\1\1\1\1\1\1\1", np.uint32)   # keep word 0: [positive, negative]
_WIDTH = 16


def format_chunk(values: np.ndarray, end: str = " ") -> bytes:
    """The values (any shape, read flat) in the text format, each followed by a space, the last by `end`."""
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        return b"" if end == " " else end.encode()
    if flat.dtype.kind == "f":
        cells, keep = _float_cells(flat.astype(np.float32, copy=False))
    else:
        cells, keep = _int_cells(flat)
    cells[-1, -1] = ord(end)
    return cells.reshape(-1)[keep.reshape(-1)].tobytes() if cells.flags.c_contiguous else cells[keep].tobytes()


def _float_cells(x: np.ndarray):
    """(cells, keep): one row of _WIDTH bytes per value and which of them belong to its text."""
    n = x.size
    with np.errstate(invalid="ignore"):     # a signalling NaN may raise the flag as it is widened
        a = np.abs(x).astype(np.float64)
    regular = np.isfinite(a) & (a > 0)
    special = np.flatnonzero(~regular)
    a[special] = 1.0
    # decimal exponent and the 9-digit mantissa m = round(a * 10^(8 - e)); log10 may land one off
    # next to a power of ten, so m is checked to have exactly 9 digits and the exponent corrected.
    # Off by one in the last digit (float64 rounding) would still read back as the same float32.
    e = np.floor(np.log10(a)).astype(np.int32)
    mf = np.rint(a * _P10[_P10_LOW + 8 - e])   # float64: an exponent one too low gives 10 digits
    off = np.flatnonzero((mf >= 1e9) | (mf < 1e8))
    if off.size:
        e[off] += np.where(mf[off] >= 1e9, 1, -1).astype(np.int32)
        mf[off] = np.rint(a[off] * _P10[_P10_LOW + 8 - e[off]])
        up = off[mf[off] >= 1e9]                # 9.999999995 rounding up to 10.00000000
        e[up] += 1
        mf[up] = 100_000_000
    m = mf.astype(np.int32)
    head = m // 10_000_000                     # the leading digit and the first decimal
    rest = m - head * 10_000_000               # the other 7 decimals
    mid = rest // 1000
    low = rest - mid * 1000

    words = np.empty((n, _WIDTH // 4), np.uint32)
    words[:, 0] = _HEAD[head]
    words[:, 1] = _DIGITS4[mid]
    words[:, 2] = _DIGITS3E[low]
    words[:, 3] = _EXPONENT[e + _P10_LOW]
    keepw = np.empty((n, _WIDTH // 4), np.uint32)
    keepw[:, 0] = _SIGNED[np.signbit(x).view(np.uint8)]
    keepw[:, 1:] = _ALL
    cells, keep = words.view(np.uint8), keepw.view(np.bool_)
    # trailing zeros of the 8 decimals (a tenth of random values end in one) are dropped, and the
    # point with them when all 8 are zero
    tail = np.flatnonzero(low % 10 == 0)
    if tail.size:
        decimals = (head[tail] % 10) * 10_000_000 + rest[tail]
        zeros = sum((decimals % 10 ** k == 0).astype(np.int32) for k in range(1, 9))
        keep[tail, 3:11] = np.arange(1, 9) <= (8 - zeros)[:, None]
        keep[tail, 2] = zeros < 8
    if special.size:
        _write_special(cells, keep, special, x[special])
    return cells, keep


def _write_special(cells, keep, rows, values) -> None:
    """Zero, NaN and infinity: `0`, `nan`, `inf`, each after its sign (`-0` is a float of its own)."""
    keep[rows, 1:_WIDTH - 1] = False
    for text, which in (("0", values == 0), ("nan", np.isnan(values)), ("inf", np.isinf(values))):
        r = rows[which]
        cells[r, 1:1 + len(text)] = np.frombuffer(text.encode(), np.uint8)
        keep[r, 1:1 + len(text)] = True


def _int_cells(v: np.ndarray):
    """(cells, keep) of integers (any integer or bool dtype, up to 64 bits): sign, digits, space."""
    v = v.astype(np.int64) if v.dtype != np.uint64 else v
    n = v.size
    neg = v < 0
    mag = v.astype(np.uint64)
    mag[neg] = ~mag[neg] + np.uint64(1)        # |v| in two's complement: right for INT64_MIN too
    width = 1 + 20 + 1                          # sign, up to 20 digits, space
    cells = np.empty((n, 24), np.uint8)         # 24: whole words; the digits sit in cells 1..20
    words = cells.view(np.uint32).reshape(n, 6)
    rest = mag.copy()
    for k in range(5, 0, -1):                   # four-digit groups, the lowest into cells 17..20
        q = rest // np.uint64(10000)
        words[:, k] = _DIGITS4[(rest - q * np.uint64(10000)).astype(np.int64)]
        rest = q
    cells[:, 1:21] = cells[:, 4:24].copy()
    cells[:, 0] = ord("-")
    cells[:, 21] = ord(" ")
    digits = 1 + sum((mag >= np.uint64(10) ** np.uint64(k)).astype(np.int32) for k in range(1, 20))
    keep = np.zeros((n, 24), bool)
    keep[:, 0] = neg
    keep[:, 1:21] = np.arange(20, 0, -1) <= digits[:, None]
    keep[:, 21] = True
    return cells[:, :width], keep[:, :width]
