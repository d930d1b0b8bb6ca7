"""The ROOT workflow: generated models as RDataFrame columns, multithreaded and on a Dask cluster.

JAX runs in this process; every ROOT part runs in a subprocess (PyROOT's LLVM and jaxlib's do not
share a process well, and a ROOT user's process has no JAX in it), reading the generated files
and the events from disk and printing what it computed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxpr2sofie as j2s

from helpers import assert_close

pytest.importorskip("ROOT", reason="PyROOT is not installed: pip install 'jaxpr2sofie[root]'")

ROOT_DIR = Path(__file__).resolve().parents[1]
N_EVENTS = 5000


def _mlp(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return jax.nn.sigmoid(h @ p["w2"] + p["b2"])


def _two_inputs(p, xs):
    jets, lep = xs
    h = jnp.tanh(jets.reshape(1, -1) @ p["wj"] + lep @ p["wl"])
    return jax.nn.softmax(h @ p["wo"])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Two generated models, events, and JAX's scores for them."""
    d = tmp_path_factory.mktemp("root")
    rng = np.random.default_rng(3)
    p = {"w1": rng.standard_normal((3, 48)).astype(np.float32), "b1": rng.standard_normal(48).astype(np.float32),
         "w2": (rng.standard_normal((48, 1)) / 4).astype(np.float32), "b2": np.zeros(1, np.float32)}
    scorer = j2s.convert(_mlp, p, np.zeros((1, 3), np.float32), name="Scorer")
    scorer.generate(d / "scorer")
    scorer.generate(d / "scorer_bin", weights="binary")   # travels inside the code as hex digits
    # the same network with a batch chosen at run time: RDataFrame scores it one event (batch 1) at a time
    j2s.convert(_mlp, p, np.zeros((64, 3), np.float32), name="ScorerDyn", batch="dynamic").generate(d / "scorer_dyn")
    q = {"wj": rng.standard_normal((8, 16)).astype(np.float32), "wl": rng.standard_normal((3, 16)).astype(np.float32),
         "wo": rng.standard_normal((16, 3)).astype(np.float32)}
    two = j2s.convert(_two_inputs, q, (np.zeros((4, 2), np.float32), np.zeros((1, 3), np.float32)), name="TwoIn")
    two.generate(d / "two")
    x = rng.standard_normal((N_EVENTS, 3)).astype(np.float32)
    jets = rng.standard_normal((N_EVENTS, 4, 2)).astype(np.float32)
    np.savez(d / "events.npz", x=x, jets=jets)
    return d, p, q


def _as_root_sees(x):
    """Column c is stored as int(c * 1000) and read back divided by 1000."""
    x = x.copy()
    x[:, 2] = (x[:, 2] * 1000).astype(np.int32) / 1000.0
    return x


def _scores(p, x):
    return np.asarray(jax.jit(jax.vmap(lambda e: _mlp(p, e[None])))(x)).ravel()


def _run_root(script: str, cwd: Path, timeout=900) -> dict:
    """Run a PyROOT script in a fresh interpreter; it prints one JSON line starting with RESULT."""
    path = cwd / "script.py"
    path.write_text(textwrap.dedent(script))
    env = dict(os.environ, PYTHONPATH=str(ROOT_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, str(path)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                         env=env)
    lines = [l for l in res.stdout.splitlines() if l.startswith("RESULT ")]
    assert res.returncode == 0 and lines, f"exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


_WRITE_EVENTS = """
    import json, sys
    import numpy as np
    import ROOT
    import jaxpr2sofie.root as j2s_root
    assert "jax" not in sys.modules, "jaxpr2sofie.root must not import JAX"
    ev = np.load("events.npz")
    x, jets = ev["x"], ev["jets"]
    cols = {"id": np.arange(len(x), dtype=np.int64), "a": x[:, 0].copy(), "b": x[:, 1].astype(np.float64),
            "c": (x[:, 2] * 1000).astype(np.int32)}
    if __name__ == "__main__":   # Dask's spawned workers re-run this file: only the main process writes
        ROOT.RDF.FromNumpy(cols).Snapshot("events", "events.root")
"""


def _score_columns_multithreaded(folders, cwd, p, d, what):
    """The models in `folders` as columns of one event loop on two threads (one ROOT process), each
    checked on its own against JAX; the script's RESULT (with each model's namespace)."""
    out = _run_root(_WRITE_EVENTS + f"""
    ROOT.EnableImplicitMT(2)
    df = ROOT.RDataFrame("events", "events.root")
    # a float, a double and an int column (scaled back) feed one float input
    df = df.Define("c_scaled", "c / 1000.0")
    ns = [j2s_root.declare(folder).namespace for folder in {folders!r}]
    for folder in {folders!r}:
        df = j2s_root.define(df, "score_" + folder, folder, ["a", "b", "c_scaled"])
    got = df.AsNumpy(["id"] + ["score_" + f for f in {folders!r}])
    print("RESULT", json.dumps({{"id": got["id"].tolist(), "slots": df.GetNSlots(), "ns": ns,
                                **{{f: got["score_" + f].tolist() for f in {folders!r}}},
                                "types": [str(df.GetColumnType("score_" + f)) for f in {folders!r}]}}))
    """, cwd)
    ids = np.array(out["id"])
    assert sorted(ids.tolist()) == list(range(N_EVENTS)), "every event scored exactly once"
    assert out["slots"] == 2 and out["types"] == ["float"] * len(folders)
    want = _scores(p, _as_root_sees(np.load(d / "events.npz")["x"]))
    for folder in folders:
        assert_close(np.array(out[folder], np.float32), want[ids], rtol=1e-5, what=f"{what}, {folder}")
    return out


def test_define_scores_every_event_multithreaded(work):
    """Three scorers (static batch, run-time batch, binary weight file) as three columns of one
    event loop on two threads."""
    d, p, _ = work
    _score_columns_multithreaded(["scorer", "scorer_dyn", "scorer_bin"], d, p, d, "RDataFrame MT")


@pytest.fixture(scope="module")
def sofie_folders(work):
    """The same scorer written by real SOFIE (`namespace SOFIE_<Name>`), built operator by operator
    (route="operators"): static, at a run-time batch, and one without the side file
    (`<Name>.io.json`), whose inputs and outputs are read off SOFIE's own declarations."""
    d, p, _ = work
    static = j2s.convert(_mlp, p, np.zeros((1, 3), np.float32), name="SofieScorer")
    static.generate(d / "sofie_scorer", backend="sofie", route="operators")
    assert static.sofie_route[0] == "operators"
    j2s.convert(_mlp, p, np.zeros((64, 3), np.float32), name="SofieScorerDyn", batch="dynamic").generate(
        d / "sofie_scorer_dyn", backend="sofie", route="operators")
    j2s.convert(_mlp, p, np.zeros((1, 3), np.float32), name="SofieBare").generate(
        d / "sofie_bare", backend="sofie", route="operators")
    (d / "sofie_bare" / "SofieBare.io.json").unlink()
    return d


def test_define_with_a_header_sofie_generated_multithreaded(work, sofie_folders):
    """SOFIE's three headers as three columns of one event loop on two threads."""
    d, p, _ = work
    out = _score_columns_multithreaded(["sofie_scorer", "sofie_scorer_dyn", "sofie_bare"], sofie_folders, p, d,
                                       "RDataFrame MT, SOFIE's header")
    assert all(n.startswith("SOFIE_") for n in out["ns"]), out["ns"]


def test_define_with_one_rvec_column_per_input(work):
    d, _, q = work
    out = _run_root(_WRITE_EVENTS + """
    df = ROOT.RDF.FromNumpy({"a": x[:, 0].copy(), "b": x[:, 1].copy(), "c": x[:, 2].copy()})
    for k in range(8):
        df = df.Define(f"j{k}", f"float(rdfentry_ % {k + 3}) * 0.25f - 0.5f")
    df = df.Define("jets", "ROOT::RVec<float>{" + ", ".join(f"j{k}" for k in range(8)) + "}")
    df = df.Define("lep", "ROOT::RVec<double>{a, b, c}")
    df = j2s_root.define(df, "probs", "two", ["jets", "lep"])
    got = df.AsNumpy(["probs", "jets", "lep"])
    rows = lambda col: [[float(a) for a in v] for v in got[col]]
    print("RESULT", json.dumps({"probs": rows("probs"), "jets": rows("jets"), "lep": rows("lep"),
                                "type": str(df.GetColumnType("probs"))}))
    """, d)
    assert "RVec<float>" in out["type"]
    jets = np.array(out["jets"], np.float32).reshape(-1, 4, 2)
    lep = np.array(out["lep"], np.float32)
    want = jax.vmap(lambda j, l: _two_inputs(q, (j, l[None])))(jets, lep)
    assert_close(np.array(out["probs"], np.float32), np.asarray(want).reshape(-1, 3), rtol=1e-5, what="RVec inputs")


def test_errors_before_the_event_loop(work):
    d = work[0]
    out = _run_root(_WRITE_EVENTS + """
    df = ROOT.RDataFrame("events", "events.root").Define("name", "std::string(\\"jet\\")")
    df = df.Define("v", "ROOT::RVec<float>{a, a}")
    errors = {}
    for key, model, cols in (("count", "scorer", ["a", "b"]), ("type", "scorer", ["a", "b", "name"]),
                             ("several", "two", ["a", "b", "c"]), ("missing", "scorer", ["a", "b", "nope"]),
                             ("mixed", "two", ["v", "a"]), ("nomodel", "no_such_dir", ["a"])):
        try:
            j2s_root.define(df, "s", model, cols)
            errors[key] = None
        except Exception as e:
            errors[key] = type(e).__name__ + ": " + str(e)
    print("RESULT", json.dumps(errors))
    """, d)
    assert "Scorer takes 3 values per event" in out["count"] and "got 2 column(s)" in out["count"]
    assert "'name' (string)" in out["type"] or "'name' (std::string)" in out["type"], out["type"]
    assert "TwoIn takes 2 inputs" in out["several"] and "one RVec column per input" in out["several"]
    assert "'nope' is not in the dataframe" in out["missing"]
    assert "mix of scalar and vector columns" in out["mixed"]
    assert "no generated model at no_such_dir" in out["nomodel"]
    assert all(v.startswith("RootWorkflowError") for v in out.values()), out


def test_missing_root_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['ROOT'] = None\n"
            "import jaxpr2sofie.root as r\n"
            "try:\n    r.declare('x')\nexcept ImportError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert "pip install 'jaxpr2sofie[root]'" in res.stdout, res.stdout + res.stderr


@pytest.mark.slow   # a local Dask cluster: about 25 s, in .ci/run's slow set
def test_distributed_dask_scores_every_event_once(work):
    pytest.importorskip("distributed", reason="dask.distributed is not installed: pip install 'jaxpr2sofie[root]'")
    d, p, _ = work
    out = _run_root(_WRITE_EVENTS + """
    from dask.distributed import Client, LocalCluster
    if __name__ == "__main__":
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        df = ROOT.RDataFrame("events", "events.root", executor=client, npartitions=4)
        df = j2s_root.define(df.Define("c_scaled", "c / 1000.0"), "score", "scorer", ["a", "b", "c_scaled"])
        got = df.AsNumpy(["id", "score"])
        pids = client.run(lambda: __import__("os").getpid())
        print("RESULT", json.dumps({"id": got["id"].tolist(), "score": got["score"].tolist(), "workers": len(pids)}))
        client.close()
        cluster.close()
    """, d)
    ids = np.array(out["id"])
    assert out["workers"] == 2
    assert len(ids) == N_EVENTS and sorted(ids.tolist()) == list(range(N_EVENTS)), "every event scored exactly once"
    want = _scores(p, _as_root_sees(np.load(d / "events.npz")["x"]))
    assert_close(np.array(out["score"], np.float32), want[ids], rtol=1e-5, what="distributed")


def test_one_model_declared_twice_in_a_process_is_no_redefinition(work):
    """A local and then a distributed RDataFrame in one script (the README's ROOT snippet): the client
    declares the code it distributes, after `define` declared it for the local one. The scorer code is
    guarded like the header, so cling sees one definition."""
    d, p, _ = work
    out = _run_root(_WRITE_EVENTS + """
    from jaxpr2sofie.root import _code
    dm, _ = _code("scorer")
    j2s_root.declare("scorer")
    again = bool(ROOT.gInterpreter.Declare(dm.code))    # what DistributeCppCode does on the client
    df = j2s_root.define(ROOT.RDataFrame("events", "events.root"), "score", "scorer", ["a", "b", "c"])
    print("RESULT", json.dumps({"again": again, "n": int(df.Count().GetValue())}))
    """, d)
    assert out == {"again": True, "n": N_EVENTS}, out
