"""Generated code in real programs: one Session per thread under load, several models (and two
versions of one model) in one translation unit and one program."""
from __future__ import annotations

import subprocess
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp.build import find_blas

from helpers import assert_close, require_tool

STRICT = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread"]


def _cxx():
    return require_tool("g++")


def _build_and_run(d: Path, sources, *args):
    b = find_blas()
    cmd = [_cxx(), *STRICT, f"-DJ2S_SGEMM={b.sgemm}", f"-I{d}", *map(str, sources), "-o", str(d / "prog"), *b.link]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr[-5000:]}"
    run = subprocess.run([str(d / "prog"), *map(str, args)], capture_output=True, text=True, cwd=d, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


def _mlp(p, x):
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    return jax.nn.softmax(h @ p["w2"])


def _params(seed, n_in=12, hidden=96, n_out=4):
    rng = np.random.default_rng(seed)
    return {"w1": (rng.standard_normal((n_in, hidden)) / 3).astype(np.float32),
            "b1": rng.standard_normal(hidden).astype(np.float32) * 0.1,
            "w2": (rng.standard_normal((hidden, n_out)) / 5).astype(np.float32)}


def _write(path: Path, a):
    path.write_text(" ".join(f"{v:.9g}" for v in np.asarray(a, np.float32).ravel()))


THREADS = r"""
#include "Net.hxx"
#include <cmath>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

static std::vector<float> load(const char* path) {
   std::ifstream f(path);
   std::vector<float> v;
   float x;
   while (f >> x) v.push_back(x);
   return v;
}

int main() {
   const std::vector<float> x = load("x.txt"), want = load("y.txt");
   const int n_in = 12, n_out = 4, events = static_cast<int>(x.size()) / n_in;
   std::vector<double> worst(4, 0.0);
   std::vector<long> calls(4, 0);
   std::vector<std::thread> pool;
   for (int t = 0; t < 4; ++t)
      pool.emplace_back([&, t] {
         TMVA_SOFIE_Net::Session s("Net.dat");             // one Session per thread
         for (int i = 0; i < 1000; ++i) {
            const int e = (i * 7 + t * 13) % events;
            const std::vector<float> y = s.infer(x.data() + e * n_in);
            for (int k = 0; k < n_out; ++k)
               worst[t] = std::fmax(worst[t], std::fabs(y[k] - want[e * n_out + k]));
            ++calls[t];
         }
      });
   for (auto& th : pool) th.join();
   for (int t = 0; t < 4; ++t) std::printf("thread %d calls %ld worst %.3g\n", t, calls[t], worst[t]);
}
"""


def test_one_session_per_thread_four_threads_1000_calls_each(tmp_path):
    p = _params(0)
    j2s.convert(_mlp, p, np.zeros((1, 12), np.float32), name="Net").generate(tmp_path)
    x = np.random.default_rng(1).standard_normal((50, 12)).astype(np.float32)
    _write(tmp_path / "x.txt", x)
    _write(tmp_path / "y.txt", jax.vmap(lambda e: _mlp(p, e[None]))(x))
    (tmp_path / "main.cpp").write_text(THREADS)
    out = _build_and_run(tmp_path, [tmp_path / "main.cpp"])
    lines = [l.split() for l in out.splitlines()]
    assert len(lines) == 4 and all(l[3] == "1000" for l in lines), out
    assert max(float(l[5]) for l in lines) <= 1e-5, out


MAIN_TWO = r"""
#include "NetA.hxx"
#include "NetB.hxx"
#include "NetA2.hxx"
#include "NetA.hxx"          // a second include is harmless
#include <cstdio>
#include <vector>
std::vector<float> score_a_elsewhere(const std::vector<float>& x);   // other.cpp, which includes NetA.hxx too

static void print(const char* tag, const std::vector<float>& y) {
   std::printf("%s", tag);
   for (float v : y) std::printf(" %.9g", v);
   std::printf("\n");
}

int main() {
   std::vector<float> x(12);
   for (int k = 0; k < 12; ++k) x[k] = 0.1f * k - 0.4f;
   TMVA_SOFIE_NetA::Session a("NetA.dat");
   TMVA_SOFIE_NetB::Session b("NetB.dat");
   TMVA_SOFIE_NetA2::Session a2("NetA2.dat");
   print("A", a.infer(x.data()));
   print("B", b.infer(x.data()));
   print("A2", a2.infer(x.data()));
   print("A_other_tu", score_a_elsewhere(x));
}
"""

OTHER = r"""
#include "NetA.hxx"
#include <vector>
std::vector<float> score_a_elsewhere(const std::vector<float>& x) {
   static TMVA_SOFIE_NetA::Session s("NetA.dat");
   return s.infer(x.data());
}
"""


@pytest.mark.slow   # builds several models into one program (about 10 s): in .ci/run's slow set;
# test_cpp_session.py puts two headers in one translation unit in the main command
def test_several_models_and_versions_in_one_program(tmp_path):
    pa, pa2 = _params(0), _params(7)              # two versions (different weights) of one model
    pb = _params(3, hidden=300)                   # another model, with a product that calls BLAS

    def net_b(p, x):
        h = jnp.broadcast_to(x, (64, 12)) * (jnp.arange(64.0)[:, None] / 64)
        return _mlp(p, (h @ h.T) @ h)[3:4]        # a product of activations: BLAS (dense layers are packed)
    models = {"NetA": j2s.convert(_mlp, pa, np.zeros((1, 12), np.float32), name="NetA"),
              "NetB": j2s.convert(net_b, pb, np.zeros((1, 12), np.float32), name="NetB"),
              "NetA2": j2s.convert(_mlp, pa2, np.zeros((1, 12), np.float32), name="NetA2")}
    assert "J2S_SGEMM(" in models["NetB"].header(), "NetB must exercise the BLAS path"
    for m in models.values():
        m.generate(tmp_path)
    (tmp_path / "main.cpp").write_text(MAIN_TWO)
    (tmp_path / "other.cpp").write_text(OTHER)
    out = _build_and_run(tmp_path, [tmp_path / "main.cpp", tmp_path / "other.cpp"])
    got = {l.split()[0]: np.array(l.split()[1:], np.float32) for l in out.splitlines()}
    x = (0.1 * np.arange(12) - 0.4).astype(np.float32)[None]
    for tag, m in (("A", "NetA"), ("B", "NetB"), ("A2", "NetA2"), ("A_other_tu", "NetA")):
        assert_close(got[tag], models[m].reference(x).ravel(), rtol=1e-5, what=tag)
    assert not np.allclose(got["A"], got["A2"]), "the two versions must really differ"
