"""The ROOT tutorials, the CMake example and the ROOT macro, run as a user runs them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxpr2sofie as j2s
from jaxpr2sofie.cpp.build import find_blas, shared_blas_library
from jaxpr2sofie.examples import example_input, function, params

from helpers import assert_close, require_tool

ROOT_DIR = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT_DIR / "examples"


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT_DIR) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])


@pytest.fixture(scope="module")
def jet_tagger(tmp_path_factory):
    out = tmp_path_factory.mktemp("jet") / "out"
    j2s.convert(function, params, example_input, name="JetTagger").generate(out)
    return out


def _events(n=4):
    return np.random.default_rng(5).standard_normal((n, 16)).astype(np.float32)


def test_cmake_example_builds_and_scores(jet_tagger, tmp_path):
    require_tool("cmake", "Debian: apt-get install cmake")
    b = find_blas()
    build = tmp_path / "build"
    cfg = ["cmake", "-S", str(EXAMPLES / "cpp"), "-B", str(build), f"-DMODEL_DIR={jet_tagger}",
           f"-DJ2S_BLAS_LIBRARY={shared_blas_library(b)}", f"-DJ2S_SGEMM={b.sgemm}"]
    for cmd in (cfg, ["cmake", "--build", str(build)]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    x = _events()
    res = subprocess.run([str(build / "score"), str(jet_tagger / "JetTagger.dat")], capture_output=True, text=True,
                         input="\n".join(" ".join(f"{v:.9g}" for v in row) for row in x) + "\n")
    assert res.returncode == 0, res.stderr
    got = np.array([[float(v) for v in l.split()] for l in res.stdout.splitlines()], np.float32)
    assert_close(got, np.asarray(function(params, x)), rtol=1e-5, what="CMake example")


def test_root_macro_runs_with_root_b_q(jet_tagger, tmp_path):
    pytest.importorskip("ROOT", reason="PyROOT is not installed: pip install 'jaxpr2sofie[root]'")
    root = shutil.which("root", path=_env()["PATH"])
    if not root:
        pytest.skip("the `root` executable is not on the PATH")
    macro = f'{EXAMPLES / "cpp" / "score_events.C"}("{jet_tagger / "JetTagger.hxx"}", "{jet_tagger / "JetTagger.dat"}")'
    res = subprocess.run([root, "-b", "-q", "-l", macro], capture_output=True, text=True, cwd=tmp_path,
                         env=_env(), timeout=600)
    lines = [l for l in res.stdout.splitlines() if l.startswith("event ")]
    assert res.returncode == 0 and len(lines) == 3, res.stdout[-3000:] + res.stderr[-3000:]
    got = np.array([[float(v) for v in l.split(":")[1].split()] for l in lines], np.float32)
    x = np.array([[0.1 * (k - 8) + 0.5 * e for k in range(16)] for e in range(3)], np.float32)
    assert_close(got, np.asarray(function(params, x)), rtol=1e-5, what="ROOT macro")


def _run_tutorial(script: str, tmp_path: Path, *args) -> str:
    pytest.importorskip("ROOT", reason="PyROOT is not installed: pip install 'jaxpr2sofie[root]'")
    pytest.importorskip("flax", reason="the tutorial trains a Flax model: pip install 'jaxpr2sofie[flax]'")
    res = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(tmp_path / "out"), *args],
                         capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=1800)
    assert res.returncode == 0, f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout


@pytest.mark.slow   # trains the model and scores 100k events (about 15 s): in .ci/run's slow set;
# test_root.py scores through define on two threads in the main command
def test_rdataframe_tutorial_100k_events_multithreaded(tmp_path):
    out = _run_tutorial("root_rdataframe.py", tmp_path, "--events", "100000", "--threads", "2")
    # the script exits non-zero unless every event was scored once and matched JAX within 1e-5
    assert "every event scored once: True" in out and "RDataFrame scored 100000 events" in out, out
    png = tmp_path / "out" / "score.png"
    assert png.exists() and png.stat().st_size > 5000, "the score histogram was not drawn"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_rdataframe_tutorial_on_a_dask_cluster(tmp_path):
    pytest.importorskip("distributed", reason="pip install 'jaxpr2sofie[root]' (dask, distributed)")
    out = _run_tutorial("root_rdataframe_dask.py", tmp_path, "--events", "20000", "--workers", "2")
    assert "every event scored once: True" in out, out
    # stdout is a pipe here, as in a CI log: Dask's progress bar (a redraw every 0.1 s) stays out of it
    assert "Completed" not in out and len(out) < 2000, out[-2000:]
    assert (tmp_path / "out" / "score.png").stat().st_size > 5000
