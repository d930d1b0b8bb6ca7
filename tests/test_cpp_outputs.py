"""Every public entry point of the generated Session, called from a C++ program, on models with
several outputs: `infer`, `doInfer` (twice, the second time into vectors that already hold a
result) and `run`, at a fixed batch and at a batch chosen at run time (`Session(file, max_batch)`,
`infer(n, x)`). Each output of each call is checked against JAX on its own, so outputs written
into each other's buffers, or returned in the wrong order, fail -- which the Python path (the
`extern "C"` wrapper around `run`) would not notice."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr2sofie as j2s

from helpers import compare_with_jax
from test_cpp_session import PRINT_HELPERS, _build, _cxx, _parse, _run, _write_floats

RTOL = 1e-5
BATCH, MAX_BATCH, CALLS = 3, 5, (5, 1, 3)   # fixed batch; run-time batch: the maximum and the batches called


def _dense(rng, n_in, n_out):
    return (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)


def three_heads(p, xs):
    """Two inputs, three float outputs of one shape: any two swapped give other numbers."""
    x, y = xs
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return h @ p["w2"] + y, jnp.sin(h) * 1.5 - y, h * y + 0.25


def mixed_heads(p, xs):
    """Two float outputs of one shape and two int32 outputs of one shape, interleaved."""
    (x,) = xs
    logits = x @ p["w"]
    return (jax.nn.softmax(logits), jnp.argmax(logits, axis=-1).astype(jnp.int32), logits,
            jnp.sum(logits > 0, axis=-1).astype(jnp.int32))


def _params():
    rng = np.random.default_rng(7)
    return {"w1": _dense(rng, 6, 4), "b1": rng.standard_normal(4).astype(np.float32), "w2": _dense(rng, 4, 4),
            "w": _dense(rng, 6, 4)}


MODELS = {"ThreeHeads": (three_heads, (6, 4)), "MixedHeads": (mixed_heads, (6,))}
CTYPE = {"float32": "float", "int32": "int32_t"}
NPTYPE = {c: np.dtype(n) for n, c in CTYPE.items()}


def _inputs(widths, n, seed=3):
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((n, w)).astype(np.float32) for w in widths)


def _main(name, n_inputs, out_types, dynamic):
    """A C++ program calling infer, doInfer (twice) and run, printing every output as
    `<entry>.<batch>.<k> <n> values`; with `dynamic`, at each batch of CALLS."""
    ins = ", ".join(f"x{i}.data()" for i in range(n_inputs))
    outs = [f"o{k}" for k in range(len(out_types))]
    lines = [f'   TMVA_SOFIE_{name}::Session s(argv[1]{", " + str(MAX_BATCH) if dynamic else ""});']
    lines += [f"   const std::vector<float> x{i} = read_floats(argv[{i + 2}]);" for i in range(n_inputs)]
    lines += [f"   std::vector<{t}> {o};" for t, o in zip(out_types, outs)]
    for n in (CALLS if dynamic else (BATCH,)):
        b = f"{n}, " if dynamic else ""
        lines.append("   {")
        lines.append(f"   print_outputs(\"infer.{n}\", s.infer({b}{ins}));")
        for _ in range(2):
            lines.append(f"   s.doInfer({b}{ins}, {', '.join(outs)});")
            lines += [f'   print("doInfer.{n}.{k}", {o});' for k, o in enumerate(outs)]
        lines += [f"   std::vector<{t}> r{k}({o}.size(), {t}(-7));" for k, (t, o) in enumerate(zip(out_types, outs))]
        lines.append(f"   s.run({b}{ins}, {', '.join(f'r{k}.data()' for k in range(len(outs)))});")
        lines += [f'   print("run.{n}.{k}", r{k});' for k in range(len(outs))]
        lines.append("   }")
    body = "\n".join(lines)
    return PRINT_HELPERS + f"""
#include <tuple>
#include <utility>

#include "{name}.hxx"

template <typename T>
static void print_outputs(const std::string& label, const std::vector<std::vector<T>>& outs) {{
   for (size_t k = 0; k < outs.size(); ++k) print((label + "." + std::to_string(k)).c_str(), outs[k]);
}}

template <typename... T>
static void print_outputs(const std::string& label, const std::tuple<T...>& outs) {{
   size_t k = 0;
   std::apply([&](const auto&... o) {{ ((print((label + "." + std::to_string(k++)).c_str(), o)), ...); }}, outs);
}}

int main(int argc, char** argv) {{
   if (argc != {n_inputs + 2}) return 2;
{body}
   return 0;
}}
"""


@pytest.fixture(scope="module", params=[(name, dyn) for name in MODELS for dyn in (False, True)],
                ids=lambda p: f"{p[0]}-{'run-time batch' if p[1] else 'fixed batch'}")
def program(request, tmp_path_factory):
    """(model, its C++ program's parsed output, the input arrays)."""
    name, dynamic = request.param
    fn, widths = MODELS[name]
    name = name + ("Dyn" if dynamic else "")
    xs = _inputs(widths, MAX_BATCH if dynamic else BATCH)
    m = j2s.convert(fn, _params(), xs, name=name, batch="dynamic" if dynamic else None)
    d = tmp_path_factory.mktemp(name)
    m.generate(d)
    out_types = [CTYPE[np.dtype(o.dtype).name] for o in jax.eval_shape(lambda: fn(_params(), xs))]
    src = d / "main.cpp"
    src.write_text(_main(name, len(xs), out_types, dynamic))
    exe = _build(_cxx(), src, d / "main", d)
    files = []
    for i, x in enumerate(xs):
        files.append(d / f"x{i}.txt")
        _write_floats(files[-1], [x])
    res = _run(exe, d / f"{name}.dat", *files)
    assert res.returncode == 0, res.stdout + res.stderr
    return m, _parse(res.stdout), xs, out_types, dynamic


@pytest.mark.parametrize("entry", ["infer", "doInfer", "run"])
def test_each_output_of_each_entry_point_matches_jax(program, entry):
    m, printed, xs, out_types, dynamic = program
    batches = CALLS if dynamic else (BATCH,)
    for n in batches:
        flat = [x[:n] for x in xs]
        calls = len(printed[f"{entry}.{n}.0"])   # doInfer: two calls into the same vectors
        assert calls == (2 if entry == "doInfer" else 1)
        for c in range(calls):
            got = [printed[f"{entry}.{n}.{k}"][c].astype(NPTYPE[t]) for k, t in enumerate(out_types)]
            want = m.traced.reference(*flat)
            got = [g.reshape(w.shape) for g, w in zip(got, want)]
            compare_with_jax(m.traced, flat, got, RTOL, name=f"{m.name} {entry}(batch {n}) call {c + 1}")


def test_the_outputs_differ_from_each_other(program):
    """The check above can only see swapped outputs if no two outputs of one dtype are equal."""
    m, _, xs, _, _ = program
    want = m.traced.reference(*xs)
    for i in range(len(want)):
        for j in range(i):
            assert want[i].dtype != want[j].dtype or want[i].shape != want[j].shape or \
                not np.array_equal(want[i], want[j]), (i, j)
