"""The command line: demo, convert, inspect, bench on real model files."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from jaxpr2sofie.cli import main

MODEL = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    def function(params, x):
        return jnp.tanh(x @ params["w"])
    params = {"w": np.ones((3, 2), np.float32)}
    example_input = np.ones((1, 3), np.float32)
""")

BROKEN = textwrap.dedent("""
    import jax.numpy as jnp, numpy as np
    from jax import lax
    def function(x):
        return lax.lgamma(x) + jnp.linalg.cholesky(x @ x.T + 3 * jnp.eye(3))[0]
    params = None
    example_input = np.ones((3, 3), np.float32)
""")


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "model.py"
    p.write_text(MODEL)
    return p


def test_convert_writes_files_and_validates(model_file, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["convert", str(model_file), "--name", "Tiny", "-o", str(out), "--validate"]) == 0
    assert (out / "Tiny.hxx").exists() and (out / "Tiny.dat").exists()
    text = capsys.readouterr().out
    assert "MatMul" in text and "max abs error" in text


def test_inspect_lists_primitives_and_unsupported(tmp_path, capsys):
    p = tmp_path / "broken.py"
    p.write_text(BROKEN)
    assert main(["inspect", str(p)]) == 1
    text = capsys.readouterr().out
    assert "lgamma" in text and "MISSING" in text and "cholesky" in text
    assert "broken.py" in text            # source lines of the offending calls


def test_inspect_ok_model(model_file, capsys):
    assert main(["inspect", str(model_file)]) == 0
    assert "all primitives convert" in capsys.readouterr().out


def test_missing_names_in_model_file(tmp_path):
    p = tmp_path / "empty.py"
    p.write_text("x = 1\n")
    with pytest.raises(SystemExit, match="defines no function, example_input"):
        main(["convert", str(p)])


def test_demo_runs_end_to_end(tmp_path):
    """The README's first command, as a user runs it."""
    res = subprocess.run([sys.executable, "-m", "jaxpr2sofie.cli", "demo", "-o", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert "validation: PASSED" in res.stdout
    assert "speed-up of the C++ over XLA" in res.stdout
    assert (tmp_path / "JetTagger.hxx").exists()
