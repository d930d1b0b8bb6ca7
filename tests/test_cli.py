"""The command line: demo, convert, inspect, bench on real model files."""
from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jaxpr2sofie as j2s
from jaxpr2sofie.cli import build_parser, main

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
    # the test extra installs onnx and onnxruntime: the headline compares against ONNX Runtime too
    assert re.search(r"ONNX Runtime, 1 thread, on our ONNX export.*\d+\.\d+ us", res.stdout), res.stdout
    assert "over ONNX Runtime" in res.stdout
    assert (tmp_path / "JetTagger.hxx").exists()


def test_demo_table_without_onnxruntime(monkeypatch):
    """Without onnxruntime the row says how to install it; the table is still printed."""
    import jaxpr2sofie as j2s
    from jaxpr2sofie.cli import latency_table
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    x = np.ones((1, 4), np.float32)
    m = j2s.convert(lambda x: x * 2.0, None, x, name="NoOrt")
    table = latency_table(m, lambda x: x * 2.0, None, x)
    assert "not installed (onnxruntime): pip install onnx onnxruntime" in table
    assert "speed-up of the C++ over XLA" in table and "over ONNX Runtime" not in table


# -- the command as a user runs it: version, help, Keras files, mistakes ------------------------------

FIXTURES = Path(__file__).parent / "fixtures"


def run_cli(*args, cwd=None):
    """`jaxpr2sofie ARGS...` in a fresh process, as from a shell."""
    return subprocess.run([sys.executable, "-m", "jaxpr2sofie.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def test_version():
    res = run_cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"jaxpr2sofie {j2s.__version__}"


def test_help_describes_every_option():
    """Every option and argument of every subcommand has help text, and `convert --help` shows it."""
    def documented(parser):
        for action in parser._actions:                      # argparse keeps no public list of them
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from documented(sub)
            else:
                assert action.help and action.help != argparse.SUPPRESS, \
                    f"{parser.prog}: {action.option_strings or action.dest} has no help text"
                yield parser.prog, action

    actions = list(documented(build_parser()))
    convert_options = {o for prog, a in actions if prog.endswith(" convert") for o in a.option_strings}
    assert {"--function", "--params", "--input", "--name", "-o", "--output", "--validate"} <= convert_options
    res = run_cli("convert", "--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())                        # argparse wraps lines
    for option in convert_options:
        assert option in text
    for phrase in ("name of the function", "name of the parameter pytree", "name of the example input",
                   "TMVA_SOFIE_<NAME>", "directory for <NAME>.hxx", "compare its outputs with JAX", ".keras"):
        assert phrase in text, phrase


@pytest.fixture
def keras_available():
    # find_spec, not import: importing Keras here would fix its backend for every later test module
    missing = [m for m in ("keras", "h5py") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)}")


def test_convert_keras_file_and_validate(keras_available, tmp_path):
    res = run_cli("convert", FIXTURES / "keras_mlp.keras", "--name", "Net", "-o", tmp_path / "out", "--validate")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "Net.hxx").exists() and (tmp_path / "out" / "Net.dat").exists()
    assert "namespace TMVA_SOFIE_Net" in (tmp_path / "out" / "Net.hxx").read_text()
    assert "input  features: (1, 10) float32" in res.stdout       # from the model's keras.Input, batch 1
    error = float(res.stdout.split("max abs error")[1].split(",")[0])
    assert error < 1e-4, res.stdout


def test_inspect_legacy_h5_file(keras_available):
    res = run_cli("inspect", FIXTURES / "keras_mlp.h5")
    assert res.returncode == 0, res.stderr
    assert "dot_general" in res.stdout and "all primitives convert" in res.stdout


@pytest.mark.slow   # builds and times a Keras file (about 6 s): in .ci/run's slow set
def test_bench_keras_file(keras_available):
    res = run_cli("bench", FIXTURES / "keras_mlp.keras")
    assert res.returncode == 0, res.stderr
    assert "speed-up of the C++ over XLA" in res.stdout


def test_python_model_options_refused_for_keras_file(keras_available):
    res = run_cli("convert", FIXTURES / "keras_mlp.keras", "--function", "f")
    assert res.returncode == 1
    assert "error: --function applies only to Python model files" in res.stderr


def test_damaged_keras_file_is_one_line_error(keras_available, tmp_path):
    data = (FIXTURES / "keras_mlp.keras").read_bytes()
    bad = tmp_path / "half.keras"
    bad.write_bytes(data[:len(data) // 2])
    res = run_cli("convert", bad, "-o", tmp_path)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr, res.stderr
    assert res.stderr.startswith(f"error: {bad}: the file is a truncated or damaged zip archive"), res.stderr
    assert "model.save('model.keras')" in res.stderr


@pytest.mark.parametrize("spec, message", [
    ("missing.keras", "error: model file missing.keras does not exist"),
    ("missing.py", "error: model file missing.py does not exist"),
    ("no_such_model_module", "error: no model file or importable module named no_such_model_module"),
])
def test_missing_model(spec, message, tmp_path):
    res = run_cli("convert", spec, cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip().startswith(message), res.stderr
    assert "Traceback" not in res.stderr


def test_model_file_that_raises_names_file_and_line(tmp_path):
    p = tmp_path / "raises.py"
    p.write_text("import numpy as np\n\nparams = np.load('weights_not_there.npy')\n")
    res = run_cli("inspect", p)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr, res.stderr
    assert f"error: running the model file {p} failed at {p}:3: FileNotFoundError" in res.stderr, res.stderr
    assert "weights_not_there.npy" in res.stderr


def test_convert_writes_onnx_and_binary_weights(tmp_path):
    onnx = pytest.importorskip("onnx")
    example = Path(__file__).resolve().parents[1] / "jaxpr2sofie" / "examples.py"
    res = run_cli("convert", example, "--name", "Tagger", "-o", tmp_path, "--onnx", tmp_path / "t.onnx",
                  "--opset", "17", "--weights", "binary")
    assert res.returncode == 0, res.stderr
    model = onnx.load(str(tmp_path / "t.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert any(o.version == 17 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert (tmp_path / "Tagger.dat").read_bytes()[:4] == b"J2SW"
    bad = run_cli("convert", example, "-o", tmp_path, "--onnx", tmp_path / "x.onnx", "--opset", "12")
    assert bad.returncode == 2 and "--opset" in bad.stderr


def test_convert_with_a_dynamic_batch(model_file, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["convert", str(model_file), "--name", "Dyn", "-o", str(out), "--batch", "dynamic",
                 "--max-batch", "32", "--validate"]) == 0
    header = (out / "Dyn.hxx").read_text()
    assert 'Session(std::string weight_file = "Dyn.dat", size_t max_batch = 32, size_t n_threads = 1)' in header
    text = capsys.readouterr().out
    assert "input  x: (N, 3)" in text and "over batches 1, 7, 32" in text
    with pytest.raises(SystemExit) as e:
        main(["convert", str(model_file), "-o", str(out), "--max-batch", "32"])
    assert e.value.code == 2 and "--batch dynamic" in capsys.readouterr().err


INV_THEN_FFT = textwrap.dedent("""
    import jax.numpy as jnp, numpy as np
    def function(x):
        a = jnp.linalg.inv(x)
        return jnp.fft.fft(a).real
    params = None
    example_input = 2 * np.eye(4, dtype=np.float32)
""")


def test_inspect_lists_a_missing_primitive_fed_by_another_with_its_line(tmp_path):
    """`jnp.fft.fft` reads the result of `jnp.linalg.inv` (itself unsupported): both are listed,
    each at its own line, in the table and in the problem list."""
    p = tmp_path / "inv_fft.py"
    p.write_text(INV_THEN_FFT)
    res = run_cli("inspect", p, cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    rows = {line.split()[0]: line for line in res.stdout.splitlines() if "MISSING" in line}
    assert {"fft", "lu"} <= set(rows), res.stdout
    assert "inv_fft.py:5" in rows["fft"] and "inv_fft.py:4" in rows["lu"], res.stdout
    assert "- fft: no conversion rule for this primitive  [at inv_fft.py:5" in res.stdout, res.stdout
