"""A batch split over threads (`Session(weight_file, max_batch, n_threads)`): models whose rows are
independent match JAX at batches 1, 7 and 256 with two threads and really use them; models whose
rows depend on each other stay correct on one thread; the row-independence rules refuse what
mixes rows and accept what does not; a C++ program drives the threaded Session directly."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp import build
from jaxpr2sofie.ir.rows import split_refusal

from helpers import assert_close
from test_cpp_session import _build, _cxx, _parse, _run, _write_floats
from test_dynamic_batch import jax_cnn, jax_mlp

MAX = 256
rng = np.random.default_rng(11)


def _convert(fn, p, feat, **kw):
    return j2s.convert(fn, p, np.zeros((4, *feat), np.float32), batch="dynamic", max_batch=MAX, **kw)


@pytest.mark.parametrize("make", [jax_mlp, jax_cnn], ids=["mlp", "cnn"])
def test_row_independent_model_matches_jax_on_two_threads(make):
    fn, p, feat = make()
    m = _convert(fn, p, feat)
    assert split_refusal(m.graph) == ""
    c = m.compile(n_threads=2)
    assert c.splittable
    c.set_min_rows_per_thread(1)     # split even 7 rows (4 + 3), to test odd chunks
    for n, threads in ((1, 1), (7, 2), (MAX, 2), (3, 2)):
        x = rng.standard_normal((n, *feat)).astype(np.float32)
        assert_close(c(x), fn(p, x), 1e-4, what=f"batch {n}")
        assert c.threads_used() == threads, n


def test_small_batches_stay_on_the_calling_thread_by_default():
    fn, p, feat = jax_mlp()
    c = _convert(fn, p, feat).compile(n_threads=2)
    x = rng.standard_normal((1, *feat)).astype(np.float32)
    assert_close(c(x), fn(p, x), 1e-4)
    assert c.threads_used() == 1     # a few hundred FLOPs per row: not worth a thread


def test_more_threads_than_rows_and_a_grown_session():
    fn, p, feat = jax_mlp()
    c = _convert(fn, p, feat).compile(n_threads=3)
    c.set_min_rows_per_thread(1)
    for n in (2, 5, MAX + 9):        # 2 rows on 3 threads; past max_batch the Session is rebuilt
        x = rng.standard_normal((n, *feat)).astype(np.float32)
        assert_close(c(x), fn(p, x), 1e-4, what=f"batch {n}")
        assert c.threads_used() == min(3, n), n


def _centered(p, x):
    return jnp.tanh(x - x.mean(axis=0)) @ p["w"]


def _batch_softmax(p, x):
    return jax.nn.softmax(x @ p["w"], axis=0)


@pytest.mark.parametrize("fn", [_centered, _batch_softmax], ids=["minus-batch-mean", "softmax-over-batch"])
def test_rows_that_depend_on_each_other_run_on_one_thread(fn):
    p = {"w": rng.standard_normal((6, 3)).astype(np.float32)}
    m = _convert(fn, p, (6,))
    assert split_refusal(m.graph)
    assert "#include <thread>" not in m.header()
    assert "one thread" in m.summary()
    c = m.compile(n_threads=2)
    x = rng.standard_normal((MAX, 6)).astype(np.float32)
    assert_close(c(x), fn(p, x), 1e-4)
    assert c.threads_used() == 1


def _while_any_row(p, x):   # a vmapped while_loop: runs while any row's predicate holds
    def one(v):
        return lax.while_loop(lambda s: s[0] < 4.0, lambda s: s * 1.5 + 0.1, v)
    return jax.vmap(one)(jnp.abs(x) + 0.1)


def _scan_over_time(p, x):   # rows stay apart, but the steps are time-major (T, N, F): refused, as
    def step(h, xt):           # only tensors with the batch leading are understood (conservative)
        h = jnp.tanh(h @ p["u"] + xt)
        return h, h
    h, _ = lax.scan(step, jnp.zeros((x.shape[0], 4)), jnp.swapaxes(x.reshape(x.shape[0], 2, 4), 0, 1))
    return h


def _loop_per_row(p, x):     # a carry per row, a fixed number of steps: rows stay apart
    return lax.fori_loop(0, 3, lambda i, h: jnp.tanh(h @ p["u"] + 0.5), x)


ROW_CASES = [   # (function, example event shape, splittable?)
    (lambda p, x: jax.nn.softmax(x, axis=-1), (6,), True),
    (lambda p, x: jnp.cumsum(x, axis=1), (6,), True),
    (lambda p, x: jnp.sort(x, axis=1), (6,), True),
    (lambda p, x: x.reshape(x.shape[0], 2, 3).transpose(0, 2, 1).sum(axis=2), (6,), True),
    (lambda p, x: jnp.concatenate([x, 2 * x], axis=1), (6,), True),
    (lambda p, x: jnp.cumsum(x, axis=0), (6,), False),
    (lambda p, x: x - x.max(axis=0), (6,), False),
    (lambda p, x: x @ (x.T @ x), (6,), False),
    (lambda p, x: x[::-1], (6,), False),
    (lambda p, x: jnp.concatenate([x, 2 * x], axis=0), (6,), False),
    (lambda p, x: x[jnp.argmax(x[:, 0])] + x, (6,), False),
    (_while_any_row, (6,), False),
    (_scan_over_time, (8,), False),
]


@pytest.mark.parametrize("fn,feat,ok", ROW_CASES, ids=lambda v: "" if callable(v) else str(v))
def test_row_independence_is_decided_per_operator(fn, feat, ok):
    m = _convert(fn, {"u": np.eye(4, dtype=np.float32)}, feat)
    assert (split_refusal(m.graph) == "") == ok, split_refusal(m.graph)


def test_loop_with_a_carry_per_row_splits_and_matches_jax():
    p = {"u": (rng.standard_normal((4, 4)) / 2).astype(np.float32)}
    m = _convert(_loop_per_row, p, (4,))
    assert split_refusal(m.graph) == ""
    assert any(op.op_type == "Loop" for op in m.graph.ops)
    c = m.compile(n_threads=2)
    c.set_min_rows_per_thread(1)
    x = rng.standard_normal((9, 4)).astype(np.float32)
    assert_close(c(x), _loop_per_row(p, x), 1e-4)
    assert c.threads_used() == 2


def test_fixed_batch_model_has_no_thread_argument():
    fn, p, feat = jax_mlp()
    m = j2s.convert(fn, p, np.zeros((8, *feat), np.float32))
    assert "n_threads" not in m.header() and "<thread>" not in m.header()
    assert "fixed at conversion time" in split_refusal(m.graph)


CPP_MAIN = r"""
#include "Net.hxx"
#include <cstdio>
#include <fstream>
#include <vector>

void print(const char* label, const std::vector<float>& v) {
   std::printf("%s %zu", label, v.size());
   for (float x : v) std::printf(" %.9g", x);
   std::printf("\n");
}

int main() {
   const size_t event = 8 * 8 * 2;
   TMVA_SOFIE_Net::Session one;                       // the default constructor: Net.dat, one thread
   TMVA_SOFIE_Net::Session two("Net.dat", 256, 2);
   two.set_min_rows_per_thread(1);
   std::ifstream f("x.txt");
   for (size_t n : {1, 7, 256}) {
      std::vector<float> x(n * event);
      for (float& v : x) f >> v;
      print("one", one.infer(n, x.data()));
      print("two", two.infer(n, x.data()));
      std::printf("threads 2 %zu %zu\n", one.threads_used(), two.threads_used());
   }
   return 0;
}
"""


def test_cpp_program_drives_the_threaded_session(tmp_path):
    fn, p, feat = jax_cnn()
    m = _convert(fn, p, feat, name="Net")
    m.generate(tmp_path)
    header = (tmp_path / "Net.hxx").read_text()
    assert 'size_t max_batch = 256, size_t n_threads = 1)' in header and "-pthread" in header
    xs = [rng.standard_normal((n, *feat)).astype(np.float32) for n in (1, 7, 256)]
    _write_floats(tmp_path / "x.txt", xs)
    (tmp_path / "main.cpp").write_text(CPP_MAIN)
    exe = _build(_cxx(), tmp_path / "main.cpp", tmp_path / "main", tmp_path)
    res = _run(exe, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = _parse(res.stdout)
    for k, x in enumerate(xs):
        want = np.asarray(fn(p, x)).ravel()
        assert_close(out["one"][k].astype(np.float32), want, 1e-4, what=f"one thread, batch {len(x)}")
        assert_close(out["two"][k].astype(np.float32), want, 1e-4, what=f"two threads, batch {len(x)}")
    assert [tuple(t) for t in out["threads"]] == [(1, 1), (1, 2), (1, 2)]


def test_timing_harness_takes_n_threads():
    fn, p, feat = jax_mlp()
    g = _convert(fn, p, feat).graph
    assert build.time_in_cpp(g, iters=20, batch=64, n_threads=2) > 0


def test_model_without_intermediates_splits():
    m = _convert(lambda p, x: jnp.tanh(x), {}, (5,))
    assert split_refusal(m.graph) == ""
    c = m.compile(n_threads=2)
    c.set_min_rows_per_thread(1)
    x = rng.standard_normal((9, 5)).astype(np.float32)
    assert_close(c(x), np.tanh(x), 1e-5)
    assert c.threads_used() == 2


TSAN_MAIN = r"""
#include "Tsan.hxx"
#include <cmath>
#include <cstdio>
#include <fstream>
int main() {
   std::ifstream fx("x.txt"), fy("y.txt");
   std::vector<float> x(64 * 8 * 8 * 2), y(64 * 5);
   for (float& v : x) fx >> v;
   for (float& v : y) fy >> v;
   TMVA_SOFIE_Tsan::Session s("Tsan.dat", 64, 3);
   s.set_min_rows_per_thread(1);
   double err = 0;
   for (int rep = 0; rep < 5; ++rep)
      for (size_t n : {64, 7, 2, 1, 33}) {
         std::vector<float> out = s.infer(n, x.data());
         for (size_t i = 0; i < out.size(); ++i) err = std::fmax(err, std::fabs(out[i] - y[i]));
      }
   std::printf("err %g threads %zu\n", err, s.threads_used());
   return err < 1e-4 ? 0 : 1;
}
"""


def test_threaded_session_is_clean_under_thread_sanitizer(tmp_path):
    """Three threads over batches 64, 7, 2, 1, 33: no data race reported (no BLAS, which TSan
    cannot see into: blas="none")."""
    import subprocess
    fn, p, feat = jax_cnn()
    m = j2s.convert(fn, p, np.zeros((4, *feat), np.float32), batch="dynamic", max_batch=64, name="Tsan", blas="none")
    m.generate(tmp_path)
    x = rng.standard_normal((64, *feat)).astype(np.float32)
    np.savetxt(tmp_path / "x.txt", x.ravel())
    np.savetxt(tmp_path / "y.txt", np.asarray(fn(p, x)).ravel())
    (tmp_path / "main.cpp").write_text(TSAN_MAIN)
    cmd = [_cxx(), "-std=c++17", "-O1", "-g", "-fsanitize=thread", "-pthread", "main.cpp", "-o", "main"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    if res.returncode != 0 and "tsan" in res.stderr:
        pytest.skip(f"this compiler has no ThreadSanitizer runtime: {res.stderr[-300:]}")
    assert res.returncode == 0, res.stderr[-3000:]
    run = _run(tmp_path / "main", cwd=tmp_path)
    assert run.returncode == 0 and "ThreadSanitizer" not in run.stderr, run.stdout + run.stderr[-3000:]
    assert "threads 3" in run.stdout
