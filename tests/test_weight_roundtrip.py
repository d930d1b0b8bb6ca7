"""Both weight formats carry every value bit for bit through the real C++ loader: NaN, +-inf, -0,
subnormals, the extremes of float32, random bit patterns and integers, in tensors large enough to
cross the writer's chunks and the C++ reader's 1 MiB blocks. The model concatenates its inputs with
its weights, so the Session's outputs are the loaded weights themselves (a copy, no arithmetic that
could flush a subnormal). Expected values are the NumPy arrays written, never the code's own output.
Also: compile(), validation and the timing harness write no text weight file."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp import weights as wf
from jaxpr2sofie.cpp.build import CompiledModel, compile_library, time_in_cpp
from jaxpr2sofie.cpp.kernels import pack_panels

N = 300_000   # float values: several writer chunks (wf.CHUNK) and ~4 MB of text, four reader blocks

F32 = np.finfo(np.float32)


def _special_floats() -> np.ndarray:
    bits = np.array([0x00000000, 0x80000000,      # +0, -0
                     0x00000001, 0x80000001,      # the smallest subnormals
                     0x007FFFFF, 0x807FFFFF,      # the largest subnormals
                     0x00800000, 0x80800000,      # the smallest normals
                     0x7F7FFFFF, 0xFF7FFFFF,      # +-max
                     0x7F800000, 0xFF800000,      # +-inf
                     0x7FC00000, 0xFFC00000,      # quiet NaN of both signs
                     0x3F800000, 0x3F800001, 0x3F7FFFFF,   # 1 and its neighbours
                     0x4B7FFFFF, 0x4B800000, 0x4C000000,   # around 2^24: integers at the float's limit
                     ], np.uint32)
    return bits.view(np.float32)


def _floats(seed: int, payload_nans: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2 ** 32, N, dtype=np.uint64).astype(np.uint32)   # every exponent, subnormals
    x = bits.view(np.float32).copy()
    if not payload_nans:    # the text format keeps NaN as NaN, not its payload: replace them
        nan = np.isnan(x)
        x[nan] = rng.standard_normal(int(nan.sum())).astype(np.float32)
    x[::7] = rng.standard_normal(x[::7].size).astype(np.float32)       # ordinary weights too
    x[::11] = np.round(rng.standard_normal(x[::11].size) * 10, 2).astype(np.float32)   # short decimals: trailing zeros
    special = _special_floats()
    x[:special.size] = special
    x[-special.size:] = special[::-1]
    return x


def _params(payload_nans: bool) -> dict:
    rng = np.random.default_rng(1)
    ints = rng.integers(np.iinfo(np.int32).min, np.iinfo(np.int32).max, 1000, dtype=np.int64, endpoint=True)
    ints[:4] = [np.iinfo(np.int32).min, np.iinfo(np.int32).max, 0, -1]
    return {"f": _floats(0, payload_nans)[None],
            "i": ints.astype(np.int32)[None],
            "i8": np.arange(-128, 128, dtype=np.int8)[None],
            "b": (rng.random(77) < 0.5)[None]}


def _copy_out(p, xs):
    return tuple(jnp.concatenate([x, p[k]], axis=1) for x, k in zip(xs, ("f", "i", "i8", "b")))


XS = (np.zeros((1, 1), np.float32), np.zeros((1, 1), np.int32), np.zeros((1, 1), np.int8), np.zeros((1, 1), bool))


@pytest.fixture(scope="module")
def built():
    m = j2s.convert(_copy_out, _params(True), XS, name="RoundTrip")
    return m, compile_library(m.graph)


def _loaded(built, params, fmt, tmp_path):
    """The weights as the C++ Session holds them after loading a file of `fmt` written from `params`."""
    m, lib = built
    g = j2s.convert(_copy_out, params, XS, name="RoundTrip").graph
    dat = tmp_path / f"w.{fmt}"
    wf.write_weights(g, dat, fmt)
    outs = CompiledModel(m.graph, lib, weight_file=dat)(*XS)
    return [o[0, 1:] for o in outs], dat


def _bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).view(np.uint32)


def test_binary_round_trip_is_bit_exact(built, tmp_path):
    params = _params(payload_nans=True)
    got, _ = _loaded(built, params, "binary", tmp_path)
    assert np.isnan(params["f"]).sum() > 100       # NaNs with payloads, both signs, some signalling
    np.testing.assert_array_equal(_bits(got[0]), _bits(params["f"][0]))
    for g, k in zip(got[1:], ("i", "i8", "b")):
        np.testing.assert_array_equal(g, params[k][0], err_msg=k)


def test_text_round_trip_is_bit_exact(built, tmp_path):
    params = _params(payload_nans=False)
    got, dat = _loaded(built, params, "text", tmp_path)
    want = params["f"][0]
    assert dat.read_bytes().startswith(b"tensor_f 300000\n")
    subnormal = (np.abs(want) < F32.tiny) & (want != 0)
    assert subnormal.sum() > 500 and np.isinf(want).sum() >= 4 and (_bits(want) == 0x80000000).any()
    np.testing.assert_array_equal(_bits(got[0]), _bits(want))
    for g, k in zip(got[1:], ("i", "i8", "b")):
        np.testing.assert_array_equal(g, params[k][0], err_msg=k)


def test_text_is_numbers_numpy_reads_back_exactly():
    """The text itself, read by NumPy rather than by our C++: the same float32 bits; 9 significant
    digits at most; a NaN of each sign as `nan`/`-nan`."""
    x = _floats(2, payload_nans=False)
    tokens = wf.format_chunk(x, "\n").split()
    assert len(tokens) == x.size
    back = np.array(tokens, dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(_bits(back), _bits(x))
    digits = [len(t.split(b"e")[0].lstrip(b"-").replace(b".", b"")) for t in tokens[:5000]]
    assert max(digits) <= 9
    nan = wf.format_chunk(_special_floats()[12:14])
    assert nan == b"nan -nan "


def test_text_nan_payload_comes_back_as_nan_of_its_sign(built, tmp_path):
    params = _params(payload_nans=True)
    got, _ = _loaded(built, params, "text", tmp_path)
    want = params["f"][0]
    nan = np.isnan(want)
    np.testing.assert_array_equal(_bits(got[0])[~nan], _bits(want)[~nan])
    assert np.isnan(got[0][nan]).all()
    np.testing.assert_array_equal(np.signbit(got[0][nan]), np.signbit(want[nan]))


def test_text_digits_are_the_correctly_rounded_ones():
    """Values with short or ordinary decimals (far from a rounding tie) as Python's own `%.8e` writes
    them, with the mantissa's trailing zeros dropped."""
    rng = np.random.default_rng(5)
    x = np.concatenate([np.round(rng.standard_normal(2000) * 100, 3), rng.standard_normal(2000) * 1e-3,
                        [1, 10, 100, 1e6, 0.5, 0.25, 0.125, 1.5, 1234.5, 12345678, 3e-5, 2.5e-41]]).astype(np.float32)

    def oracle(v):
        mantissa, exponent = f"{float(v):.8e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"
    assert wf.format_chunk(x, "\n").decode().split() == [oracle(v) for v in x]


@pytest.mark.parametrize("values", [np.array([0, 1, -1, 10, -99, 123456, np.iinfo(np.int64).min, np.iinfo(np.int64).max]),
                                    np.array([True, False, True]), np.array([0, 255], np.uint8)])
def test_integers_are_written_in_full(values):
    assert wf.format_chunk(values, "\n") == (" ".join(str(int(v)) for v in values) + "\n").encode()


def test_packed_weights_are_streamed_in_panel_order():
    """A weight stored in panels (prepare.py) comes out of stored_chunks piece by piece in exactly the
    order of kernels.pack_panels, for sizes that are and are not a multiple of the panel width."""
    rng = np.random.default_rng(3)
    for k, n, transposed in ((7, 33, False), (5, 16, True), (300, 1000, False)):
        data = rng.standard_normal((n, k) if transposed else (k, n)).astype(np.float32)
        t = type("T", (), {"packed": (k, n, transposed), "data": data, "size": data.size})()
        want = pack_panels(data.T if transposed else data).reshape(-1)
        pieces = list(wf.stored_chunks(t, values=4096))
        assert [last for _, last in pieces] == [False] * (len(pieces) - 1) + [True]
        np.testing.assert_array_equal(np.concatenate([p.reshape(-1) for p, _ in pieces]), want)


def _nearest_float32(token: str) -> np.float32:
    """The float32 nearest the decimal `token`, ties to even, by exact rational arithmetic."""
    from fractions import Fraction
    exact = Fraction(token)
    guess = np.float32(float(token))
    candidates = [np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact), int(_bits(np.float32(c))) & 1))


def _near_midpoints(rng, n: int) -> list:
    """Decimals on, just below and just above midpoints between neighbouring float32s, with 15 or
    fewer significant digits (the reader's fast path) and with every digit (the full parser)."""
    from fractions import Fraction
    out = ["16777217", "16777217.0000001", "16777216.9999999", "1.00000006e+00"]
    for f in rng.standard_normal(n).astype(np.float32) * np.float32(10.0) ** rng.integers(-20, 20, n):
        f = np.float32(f)
        mid = (Fraction(float(f)) + Fraction(float(np.nextafter(f, np.float32(np.inf))))) / 2
        out += [f"{float(mid):.14e}", f"{float(mid):.15g}", f"{mid.numerator / mid.denominator!r}",
                f"{float(mid):.9e}"]
    return out


def test_text_near_float_midpoints_rounds_correctly(built, tmp_path):
    """Hand-written decimals next to the midpoint between two floats: the C++ reader gives the
    correctly rounded float32 (ties to even), whichever of its paths parses them."""
    m, _ = built
    _, dat = m.generate(tmp_path)
    lines = dat.read_text().split("\n")
    values = lines[1].split(" ")
    tokens = _near_midpoints(np.random.default_rng(6), 3000)
    values[:len(tokens)] = tokens
    lines[1] = " ".join(values)
    dat.write_text("\n".join(lines))
    got = CompiledModel(m.graph, built[1], weight_file=dat)(*XS)[0][0, 1:len(tokens) + 1]
    want = np.array([_nearest_float32(t) for t in tokens], np.float32)
    np.testing.assert_array_equal(_bits(got), _bits(want))


def _expect_error(built, dat, pattern):
    m, lib = built
    with pytest.raises(j2s.WeightFileError, match=pattern):
        CompiledModel(m.graph, lib, weight_file=dat)


def test_text_cut_after_the_first_block_is_truncated(built, tmp_path):
    m, _ = built
    _, dat = m.generate(tmp_path)
    data = dat.read_bytes()
    assert len(data) > 3 << 20
    dat.write_bytes(data[:(3 << 20) + 5])
    _expect_error(built, dat, r"is truncated inside tensor_f \(\d+ of 300000 values\)")


def test_text_bad_value_deep_in_the_file(built, tmp_path):
    m, _ = built
    _, dat = m.generate(tmp_path)
    data = bytearray(dat.read_bytes())
    at = data.index(b" ", 2 << 20) + 1     # a value starting past the second block
    data[at:at + 3] = b"1x5"
    dat.write_bytes(bytes(data))
    _expect_error(built, dat, r"'1x5[^']*' in tensor_f is not a number")


def test_text_bad_length(built, tmp_path):
    m, _ = built
    _, dat = m.generate(tmp_path)
    data = dat.read_bytes()
    dat.write_bytes(data.replace(b"tensor_f 300000", b"tensor_f 3e5", 1))
    _expect_error(built, dat, r"after tensor_f: '3e5' is not a length")


def test_compile_validate_and_timing_write_no_text(monkeypatch, tmp_path):
    """Every internal build loads the binary format: writing text at all would fail this test."""
    def no_text(*args, **kwargs):
        raise AssertionError("a text weight file was written")
    monkeypatch.setattr(wf, "_write_text", no_text)
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((8, 20)).astype(np.float32), "b": rng.standard_normal(20).astype(np.float32)}
    m = j2s.convert(lambda p, x: jnp.tanh(x @ p["w"] + p["b"]), params, np.ones((2, 8), np.float32), name="NoText")
    c = m.compile()
    assert c.weight_file.read_bytes()[:4] == wf.MAGIC
    assert m.validate().max_rel < 1e-5
    assert time_in_cpp(m.graph, iters=10) > 0
    assert [w.fmt for w in m.written] == ["binary"]
    assert "weight file" in m.summary() and "binary" in m.summary()
    with pytest.raises(AssertionError, match="text weight file"):
        m.generate(tmp_path)  # the default of generate() is still SOFIE's text


def test_summary_reports_the_files_written(tmp_path):
    m = j2s.convert(lambda p, x: x @ p, np.ones((4, 3), np.float32), np.ones((1, 4), np.float32), name="Sized")
    m.generate(tmp_path / "bin", weights="binary")
    m.generate(tmp_path)
    m.generate(tmp_path / "bin", weights="binary")    # written again: listed once, last
    m.compile()
    m.compile()                                       # only the last compile's file
    lines = [l for l in m.summary().splitlines() if l.startswith("weight file")]
    assert len(lines) == 3, lines
    assert "Sized.dat: text" in lines[0] and "bin/Sized.dat: binary" in lines[1] and ": binary" in lines[2]
    size = (tmp_path / "Sized.dat").stat().st_size
    assert f"text, {size} bytes, " in lines[0] and "values, written in" in lines[0]
