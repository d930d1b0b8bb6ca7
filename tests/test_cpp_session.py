"""Drive the generated header from C++ the way a SOFIE user does: `#include "<Name>.hxx"`, build a
`TMVA_SOFIE_<Name>::Session` from a weight file, call `infer`. Checks the numbers against JAX, the
error messages for broken weight files, warning-free compilation, two headers in one translation
unit, moving sessions, and (where installed) clang++ and ROOT's cling."""
from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp.build import find_blas

from helpers import assert_close, require_tool

STRICT = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]


# ------------------------------------------------------------------------------------- models
def tagger(params, x):
    """A small CNN: conv + max pool + dense + softmax, on (2, 8, 8, 1) images."""
    h = lax.conv_general_dilated(x, params["conv"]["kernel"], (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax.nn.relu(h + params["conv"]["bias"])
    h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = h.reshape(h.shape[0], -1)
    h = jnp.tanh(h @ params["dense"]["kernel"] + params["dense"]["bias"])
    return jax.nn.softmax(h @ params["out"]["kernel"] + params["out"]["bias"])


def tagger_params(channels=4, seed=0):
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)

    return {"conv": {"kernel": w(3, 3, 1, channels), "bias": w(1, channels)[0]},
            "dense": {"kernel": w(16 * channels, 10), "bias": w(1, 10)[0]},
            "out": {"kernel": w(10, 3), "bias": w(1, 3)[0]}}


def two_head(params, x):
    """Two outputs of different dtypes: probabilities (float) and the winning class (int32)."""
    logits = jnp.tanh(x @ params["enc"]) @ params["dec"]
    return jax.nn.softmax(logits), jnp.argmax(logits, axis=-1).astype(jnp.int32)


def two_head_params():
    rng = np.random.default_rng(1)
    return {"enc": (rng.standard_normal((5, 7)) / np.sqrt(5)).astype(np.float32),
            "dec": (rng.standard_normal((7, 4)) / np.sqrt(7)).astype(np.float32)}


X_TAGGER = np.zeros((2, 8, 8, 1), np.float32)
X_TWO = np.zeros((3, 5), np.float32)


# ------------------------------------------------------------------------------------ helpers
def _cxx():
    return require_tool("g++")


def _build(cxx, sources, exe: Path, include_dir: Path, uses_blas=True):
    sources = [sources] if isinstance(sources, Path) else sources
    cmd = [cxx, *STRICT, f"-I{include_dir}", *map(str, sources), "-o", str(exe)]
    if uses_blas:
        b = find_blas()
        cmd[1:1] = [f"-DJ2S_SGEMM={b.sgemm}"]
        cmd += list(b.link)
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed (warnings are errors):\n{res.stderr[-6000:]}"
    return exe


def _run(exe, *args, cwd=None):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60)


def _write_floats(path: Path, arrays):
    path.write_text("\n".join(" ".join(f"{v:.9g}" for v in np.asarray(a, np.float32).ravel()) for a in arrays) + "\n")


def _parse(stdout: str) -> dict:
    """Lines `<label> <n> v1 ... vn` -> {label: [np.array, ...]} (a label may repeat)."""
    out = {}
    for line in stdout.splitlines():
        label, n, *vals = line.split()
        assert int(n) == len(vals), line
        out.setdefault(label, []).append(np.array([float(v) for v in vals]))
    return out


PRINT_HELPERS = r"""
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

static std::vector<float> read_floats(const char* path) {
   std::ifstream f(path);
   if (!f) throw std::runtime_error(std::string("cannot open input file ") + path);
   std::vector<float> v;
   float x;
   while (f >> x) v.push_back(x);
   return v;
}

template <typename T>
static void print(const char* label, const std::vector<T>& v) {
   std::cout << label << ' ' << v.size() << std::setprecision(9);
   for (const T& x : v) std::cout << ' ' << x;
   std::cout << '\n';
}
"""

SINGLE_MAIN = PRINT_HELPERS + r"""
#include "Tagger.hxx"

// usage: main <weight file> <input file>; the input file holds one or more inputs back to back.
int main(int argc, char** argv) {
   if (argc != 3) {
      std::cerr << "usage: " << argv[0] << " <weight file> <input file>\n";
      return 2;
   }
   try {
      TMVA_SOFIE_Tagger::Session s(argv[1]);
      const std::vector<float> all = read_floats(argv[2]);
      const size_t n_in = @N_IN@, n_out = @N_OUT@;
      if (all.empty() || all.size() % n_in != 0) {
         std::cerr << "input file holds " << all.size() << " values, not a multiple of " << n_in << '\n';
         return 2;
      }
      std::vector<float> out(n_out);
      for (size_t k = 0; k < all.size(); k += n_in) {
         const std::vector<float> y = s.infer(all.data() + k);   // the same session, reused
         print("infer", y);
         s.run(all.data() + k, out.data());                    // caller-owned output buffer
         print("run", out);
      }
   } catch (const std::runtime_error& e) {
      std::cout << "error: " << e.what() << '\n';
      return 3;
   }
   return 0;
}
"""

MULTI_MAIN = PRINT_HELPERS + r"""
#include <utility>

#include "Tagger.hxx"
#include "TwoHead.hxx"

std::vector<float> tagger_in_other_tu(const char* weight_file, const float* x);   // other_tu.cpp

// usage: main <Tagger.dat> <TwoHead.dat> <tagger input> <two-head input>; run where Tagger.dat is,
// so the default constructor finds it.
int main(int argc, char** argv) {
   if (argc != 5) return 2;
   try {
      const std::vector<float> x1 = read_floats(argv[3]), x2 = read_floats(argv[4]);

      TMVA_SOFIE_Tagger::Session a(argv[1]);
      TMVA_SOFIE_TwoHead::Session b(argv[2]);
      print("tagger", a.infer(x1.data()));
      auto [probs, label] = b.infer(x2.data());   // outputs of different dtypes come as a tuple
      print("probs", probs);
      print("label", label);

      // Sessions are movable: a vector of them survives reallocation.
      std::vector<TMVA_SOFIE_Tagger::Session> pool;
      for (int k = 0; k < 5; ++k) pool.emplace_back(argv[1]);
      for (auto& s : pool) print("pooled", s.infer(x1.data()));
      TMVA_SOFIE_Tagger::Session moved = std::move(pool.front());
      print("moved", moved.infer(x1.data()));
      pool.back() = std::move(moved);   // move assignment
      print("assigned", pool.back().infer(x1.data()));

      TMVA_SOFIE_Tagger::Session by_default;   // "Tagger.dat" in the working directory
      print("default", by_default.infer(x1.data()));

      print("other_tu", tagger_in_other_tu(argv[1], x1.data()));
   } catch (const std::runtime_error& e) {
      std::cout << "error: " << e.what() << '\n';
      return 3;
   }
   return 0;
}
"""

# The same header in a second translation unit of the same program: nothing in it may be defined
# twice at link time.
OTHER_TU = r"""
#include "Tagger.hxx"

std::vector<float> tagger_in_other_tu(const char* weight_file, const float* x) {
   TMVA_SOFIE_Tagger::Session s(weight_file);
   return s.infer(x);
}
"""


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def models():
    return {"tagger": j2s.convert(tagger, tagger_params(), X_TAGGER, name="Tagger"),
            "two": j2s.convert(two_head, two_head_params(), X_TWO, name="TwoHead")}


@pytest.fixture(scope="module")
def gen(tmp_path_factory, models):
    d = tmp_path_factory.mktemp("generated")
    files = {k: m.generate(d) for k, m in models.items()}
    return d, files


@pytest.fixture(scope="module")
def single_exe(gen, models):
    d, _ = gen
    m = models["tagger"]
    n_out = m.graph.tensors[m.graph.outputs[0]].size
    src = d / "single.cpp"
    src.write_text(SINGLE_MAIN.replace("@N_IN@", str(X_TAGGER.size)).replace("@N_OUT@", str(n_out)))
    return _build(_cxx(), src, d / "single", d)


@pytest.fixture(scope="module")
def multi_exe(gen):
    d, _ = gen
    src, other = d / "multi.cpp", d / "other_tu.cpp"
    src.write_text(MULTI_MAIN)
    other.write_text(OTHER_TU)
    return _build(_cxx(), [src, other], d / "multi", d)


@pytest.fixture(scope="module")
def tagger_inputs():
    rng = np.random.default_rng(42)
    return [rng.standard_normal(X_TAGGER.shape).astype(np.float32) for _ in range(3)]


def _x_two():
    return np.random.default_rng(7).standard_normal(X_TWO.shape).astype(np.float32)


def _inputs_files(tagger_inputs, tmp_path):
    """Input files for the multi-model program: one Tagger input, one TwoHead input."""
    _write_floats(tmp_path / "x1.txt", [tagger_inputs[0]])
    _write_floats(tmp_path / "x2.txt", [_x_two()])
    return tmp_path / "x1.txt", tmp_path / "x2.txt"


def _jax_tagger(x):
    return np.asarray(tagger(tagger_params(), x))


# ------------------------------------------------------------------------------ numbers from C++
def test_generated_files(gen, models):
    d, files = gen
    hxx, dat = files["tagger"]
    assert hxx == d / "Tagger.hxx" and dat == d / "Tagger.dat"
    text = hxx.read_text()
    assert "namespace TMVA_SOFIE_Tagger" in text and "struct Session" in text
    first = dat.read_text().split()
    assert first[0].startswith("tensor_") and int(first[1]) > 0


def test_cpp_main_matches_jax(single_exe, gen, tagger_inputs, tmp_path):
    d, files = gen
    inp = tmp_path / "x.txt"
    _write_floats(inp, tagger_inputs)
    res = _run(single_exe, files["tagger"][1], inp)
    assert res.returncode == 0, res.stdout + res.stderr
    out = _parse(res.stdout)
    assert len(out["infer"]) == len(out["run"]) == len(tagger_inputs)
    for k, x in enumerate(tagger_inputs):
        want = _jax_tagger(x)
        assert_close(out["infer"][k].reshape(want.shape).astype(np.float32), want, what=f"infer, input {k}")
        np.testing.assert_array_equal(out["run"][k], out["infer"][k], err_msg="run() and infer() disagree")
    # different inputs give different answers: the session does not keep stale buffers
    assert not np.array_equal(out["infer"][0], out["infer"][1])


def test_two_headers_in_one_translation_unit_and_moved_sessions(multi_exe, gen, tagger_inputs, tmp_path):
    d, files = gen
    x1, x2 = tagger_inputs[0], _x_two()
    res = _run(multi_exe, files["tagger"][1], files["two"][1], *_inputs_files(tagger_inputs, tmp_path), cwd=d)
    assert res.returncode == 0, res.stdout + res.stderr
    out = _parse(res.stdout)
    want1 = _jax_tagger(x1)
    probs, label = (np.asarray(v) for v in two_head(two_head_params(), x2))
    assert_close(out["tagger"][0].reshape(want1.shape).astype(np.float32), want1, what="Tagger next to TwoHead")
    assert_close(out["probs"][0].reshape(probs.shape).astype(np.float32), probs, what="TwoHead probabilities")
    assert_close(out["label"][0].reshape(label.shape).astype(np.int32), label, what="TwoHead argmax")
    assert len(out["pooled"]) == 5
    for lab in ("pooled", "moved", "assigned", "default", "other_tu"):
        for k, got in enumerate(out[lab]):
            np.testing.assert_array_equal(got, out["tagger"][0], err_msg=f"{lab} session {k}")


# ------------------------------------------------------------------------- broken weight files
def _error_of(exe, weight_file, tmp_path) -> str:
    inp = tmp_path / "x.txt"
    _write_floats(inp, [np.zeros(X_TAGGER.shape, np.float32)])
    res = _run(exe, weight_file, inp)
    assert res.returncode == 3, f"expected a std::runtime_error, got exit {res.returncode}:\n{res.stdout}{res.stderr}"
    assert res.stdout.startswith("error: TMVA_SOFIE_Tagger"), res.stdout
    return res.stdout


def _tensors(dat: Path):
    """[(name, values as strings)] from a weight file."""
    toks = dat.read_text().split()
    out, k = [], 0
    while k < len(toks):
        name, n = toks[k], int(toks[k + 1])
        out.append((name, toks[k + 2:k + 2 + n]))
        k += 2 + n
    return out


def _write_tensors(path: Path, tensors):
    path.write_text("".join(f"{n} {len(v)}\n{' '.join(v)}\n" for n, v in tensors))
    return path


def test_missing_weight_file(single_exe, tmp_path):
    missing = tmp_path / "nowhere" / "Tagger.dat"
    msg = _error_of(single_exe, missing, tmp_path)
    assert "cannot open" in msg and str(missing) in msg


def test_empty_weight_file(single_exe, tmp_path):
    empty = tmp_path / "empty.dat"
    empty.write_text("")
    assert "truncated" in _error_of(single_exe, empty, tmp_path)


def test_weight_file_cut_inside_a_tensor(single_exe, gen, tmp_path):
    tensors = _tensors(gen[1]["tagger"][1])
    assert len(tensors) >= 3
    name, vals = tensors[1]
    assert len(vals) >= 2
    # keep the header of the second tensor and half of its values, cut at a token boundary
    text = "".join(f"{n} {len(v)}\n{' '.join(v)}\n" for n, v in tensors[:1])
    text += f"{name} {len(vals)}\n{' '.join(vals[:len(vals) // 2])}"
    cut = tmp_path / "cut.dat"
    cut.write_text(text)
    msg = _error_of(single_exe, cut, tmp_path)
    assert "truncated" in msg and name in msg, msg


def test_weight_file_missing_its_last_tensor(single_exe, gen, tmp_path):
    tensors = _tensors(gen[1]["tagger"][1])
    short = _write_tensors(tmp_path / "short.dat", tensors[:-1])
    msg = _error_of(single_exe, short, tmp_path)
    assert "truncated" in msg and tensors[-1][0] in msg, msg


def test_weight_file_of_another_model(single_exe, gen, tmp_path):
    other = gen[1]["two"][1]   # TwoHead.dat: different tensor names
    assert {n for n, _ in _tensors(other)}.isdisjoint({n for n, _ in _tensors(gen[1]["tagger"][1])})
    msg = _error_of(single_exe, other, tmp_path)
    assert "another model" in msg, msg


def test_weight_file_with_same_names_other_lengths(single_exe, gen, tmp_path):
    wide = j2s.convert(tagger, tagger_params(channels=6), X_TAGGER, name="TaggerWide")
    _, dat = wide.generate(tmp_path)
    mine, theirs = _tensors(gen[1]["tagger"][1]), _tensors(dat)
    assert [n for n, _ in mine] == [n for n, _ in theirs], "the wide model must store the same tensor names"
    assert len(mine[0][1]) != len(theirs[0][1])
    msg = _error_of(single_exe, dat, tmp_path)
    assert "another model" in msg and f"has {len(theirs[0][1])} values" in msg \
        and f"needs {len(mine[0][1])}" in msg, msg


def test_weight_file_with_a_non_number(single_exe, gen, tmp_path):
    tensors = _tensors(gen[1]["tagger"][1])
    name, vals = tensors[-1]
    tensors[-1] = (name, vals[:-1] + ["0.5abc"])
    bad = _write_tensors(tmp_path / "bad.dat", tensors)
    msg = _error_of(single_exe, bad, tmp_path)
    assert "not a number" in msg and "0.5abc" in msg and name in msg, msg


def test_weight_file_with_data_after_the_last_tensor(single_exe, gen, tmp_path):
    longer = tmp_path / "longer.dat"
    longer.write_text(gen[1]["tagger"][1].read_text() + "tensor_extra 1\n0\n")
    assert "another model" in _error_of(single_exe, longer, tmp_path)


# ------------------------------------------------------------------------ other compilers / cling
def test_header_compiles_with_clang(gen, tagger_inputs, tmp_path):
    clang = require_tool("clang++", "only g++ was checked for warning-free compilation")
    d, _ = gen
    src, other = tmp_path / "multi.cpp", tmp_path / "other_tu.cpp"
    src.write_text(MULTI_MAIN)
    other.write_text(OTHER_TU)
    exe = _build(clang, [src, other], tmp_path / "multi_clang", d)
    res = _run(exe, d / "Tagger.dat", d / "TwoHead.dat", *_inputs_files(tagger_inputs, tmp_path), cwd=d)
    assert res.returncode == 0, res.stdout + res.stderr
    want = _jax_tagger(tagger_inputs[0])
    assert_close(_parse(res.stdout)["tagger"][0].reshape(want.shape).astype(np.float32), want, what="clang++ build")


CLING_SCRIPT = """
import sys
import numpy as np
import ROOT
lib, sgemm, header, weights, xfile = sys.argv[1:6]
assert ROOT.gSystem.Load(lib) >= 0, "cannot load " + lib
assert ROOT.gInterpreter.Declare("#define J2S_SGEMM " + sgemm + "\\n#include \\"" + header + "\\"\\n"), "cling rejected the header"
s = ROOT.TMVA_SOFIE_Tagger.Session(weights)
y = np.array(list(s.infer(np.ascontiguousarray(np.load(xfile)))), np.float32)
print(" ".join(repr(float(v)) for v in y))
"""


def test_cling_accepts_the_header(gen, tagger_inputs, tmp_path):
    # In a subprocess: PyROOT's LLVM and jaxlib's LLVM must not share one process (a later XLA
    # compilation can crash), and a ROOT user's process has no JAX in it anyway.
    pytest.importorskip("ROOT", reason="PyROOT is not installed: cling was not checked")
    d, files = gen
    b = find_blas()
    # cling resolves sgemm from the BLAS library loaded into the process
    libdirs = [Path(f[2:]) for f in b.link if f.startswith("-L")]
    names = [f[2:] for f in b.link if f.startswith("-l")]
    if libdirs:
        lib = str(next(p for p in sorted(libdirs[0].glob(f"lib{names[0]}.so*"))))
    else:
        lib = ctypes.util.find_library(names[0])
    x = np.ascontiguousarray(tagger_inputs[0])
    np.save(tmp_path / "x.npy", x)
    res = subprocess.run([sys.executable, "-c", CLING_SCRIPT, lib, b.sgemm, str(files["tagger"][0]),
                          str(files["tagger"][1]), str(tmp_path / "x.npy")], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    got = np.array(res.stdout.split(), np.float32)
    want = _jax_tagger(x)
    assert_close(got.reshape(want.shape), want, what="cling")
