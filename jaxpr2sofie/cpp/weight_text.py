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
    return np.frombuffer("".join(texts).encode("latin-1"), np.uint32)


# Each value is formatted into a row of 16 bytes, 4 words: "-d.d" (sign, leading digit, point, first
# decimal), four decimals, three decimals + "e", the exponent's sign and digits + the separator.
# Bytes that are not part of the value's text are NUL and removed at the end in one pass.
_HEAD = _words(f"{sign}{k // 10}.{k % 10}" for sign in "\0-" for k in range(100))   # [100 * negative + head]
_DIGITS4 = _words(f"{k:04d}" for k in range(10000))
_DIGITS3E = _words(f"{k:03d}e" for k in range(1000))
_EXPONENT = _words(f"{e:+03d} " for e in range(-_P10_LOW, _P10_LOW))
_WIDTH = 16
# trailing zeros of a 3-digit and a 4-digit group (all of it when the group is 0)
_ZEROS3 = np.array([3 if k == 0 else len(str(k)) - len(str(k).rstrip("0")) for k in range(1000)], np.int32)
_ZEROS4 = np.array([4 if k == 0 else len(str(k)) - len(str(k).rstrip("0")) for k in range(10000)], np.int32)
# [trailing zeros of the 8 decimals] -> byte masks of words 0-2 keeping the digits before them (the
# point too, unless all 8 are zero)
_TRIM = np.stack([_words(["\xff\xff" + ("\xff" if z < 8 else "\0") + ("\xff" if z < 8 else "\0"),
                          "".join("\xff" if j <= 8 - z else "\0" for j in range(2, 6)),
                          "".join("\xff" if j <= 8 - z else "\0" for j in range(6, 9)) + "\xff"])
                  for z in range(9)])
# zero, NaN and infinity after their sign, as whole rows: [kind, negative]
_SPECIAL = {text: np.stack([_words([f"{sign}{text}".ljust(15, "\0") + " "]) for sign in "\0-"])
            for text in ("0", "nan", "inf")}


def format_chunk(values: np.ndarray, end: str = " ") -> bytes:
    """The values (any shape, read flat) in the text format, each followed by a space, the last by `end`."""
    flat = np.asarray(values).reshape(-1)
    if flat.size == 0:
        return b"" if end == " " else end.encode()
    cells = _float_cells(flat.astype(np.float32, copy=False)) if flat.dtype.kind == "f" else _int_cells(flat)
    cells[-1, -1] = ord(end)
    return cells.tobytes().replace(b"\0", b"")


def _float_cells(x: np.ndarray) -> np.ndarray:
    """One row of _WIDTH bytes per value: its text, padded with NUL."""
    n = x.size
    negative = (x.view(np.uint32) >> 31).astype(np.int32)
    with np.errstate(invalid="ignore"):     # a signalling NaN may raise the flag as it is widened
        a = np.abs(x).astype(np.float64)
    special = np.flatnonzero(~(np.isfinite(a) & (a > 0)))
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
    words[:, 0] = _HEAD[head + 100 * negative]
    words[:, 1] = _DIGITS4[mid]
    words[:, 2] = _DIGITS3E[low]
    words[:, 3] = _EXPONENT[e + _P10_LOW]
    # trailing zeros of the 8 decimals (a tenth of random values end in one) are dropped
    tail = np.flatnonzero(low % 10 == 0)
    if tail.size:
        lo, mi = low[tail], mid[tail]
        zeros = _ZEROS3[lo] + np.where(lo == 0, _ZEROS4[mi], 0) + ((lo == 0) & (mi == 0) & (head[tail] % 10 == 0))
        flat = words.reshape(-1)
        for k in range(3):   # through the flat view: plain integer indexing is several times faster
            at = tail * 4 + k
            flat[at] &= _TRIM[zeros, k]
    for text, rows in _special_rows(x, special):
        words[rows] = _SPECIAL[text][negative[rows]]
    return words.view(np.uint8)


def _special_rows(x, special):
    values = x[special]
    return [(text, special[which]) for text, which in (("0", values == 0), ("nan", np.isnan(values)),
                                                       ("inf", np.isinf(values))) if which.any()]


def _int_cells(v: np.ndarray) -> np.ndarray:
    """Rows of integers (any integer or bool dtype, up to 64 bits): sign, digits, space; NUL-padded."""
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
    cells[~keep] = 0
    return cells[:, :width]
