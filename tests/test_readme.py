"""The README's generated parts and commands stay true."""
from pathlib import Path

from jaxpr2sofie.cli import primitive_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_primitive_table_matches_registry():
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- primitives:start -->")[1].split("<!-- primitives:end -->")[0].strip()
    assert block == primitive_table(), "README table is stale: paste the output of `jaxpr2sofie primitives`"


SETUP_DEMO = 'pip install -e . && jaxpr2sofie demo'
SETUP_TESTS = 'pip install -e ".[test]" && python -m pytest tests'


SLOW_SET = "python -m pytest tests --runslow -m slow"


FLOOR_TESTS = '"$FLOOR/bin/python" -m pytest tests/test_primitives.py tests/test_models.py'


def _ci_lines():
    return [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()
            if l.strip() and not l.lstrip().startswith("#")]


def test_ci_runs_the_readme_test_command_in_a_fresh_venv():
    lines = _ci_lines()
    # the README's test command as written, then the slow set (model-zoo cases), then the JAX floor
    k = lines.index(SETUP_TESTS)
    assert lines[k + 1] == SLOW_SET, "after the README's test command, as written, .ci/run runs the slow set"
    assert all("FLOOR" in l for l in lines[k + 2:]), "after the slow set, only the JAX-floor venv"
    venv = next(k for k, l in enumerate(lines) if "-m venv" in l)
    activate = next(k for k, l in enumerate(lines) if "bin/activate" in l)
    assert venv < activate < k, "CI must install into a brand-new venv, as a newcomer does"
    assert any(l.startswith("rm -rf") and "VENV" in l for l in lines[:venv]), "the venv must be new on every run"


def test_ci_tests_the_declared_jax_floor_in_a_second_venv():
    """The lowest JAX, jaxlib and NumPy that pyproject.toml admits run the primitive table and the
    model tests in CI, in a brand-new venv of their own."""
    import subprocess
    import sys
    import tomllib
    lines = _ci_lines()
    floor = lines[lines.index(SLOW_SET) + 1:]
    assert floor[:4] == ['FLOOR=.ci/venv-floor', 'rm -rf "$FLOOR"', '"$PY" -m venv "$FLOOR"',
                         '"$PY" .ci/floor_pins.py > "$FLOOR/pins.txt"'], floor
    assert floor[4] == '"$FLOOR/bin/pip" install -e . pytest pytest-xdist -c "$FLOOR/pins.txt"', floor
    assert floor[5:] == [FLOOR_TESTS], floor
    readme = (ROOT / "README.md").read_text().splitlines()
    for line in floor[1:]:   # the README shows the floor check as CI runs it, line for line
        assert line in readme, f"README.md lacks .ci/run's floor step {line!r}"
    pins = subprocess.run([sys.executable, str(ROOT / ".ci" / "floor_pins.py")], capture_output=True, text=True,
                          check=True).stdout.split()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in pins:
        name, version = pin.split("==")
        assert any(d.startswith(f"{name}>={version},") or d == f"{name}>={version}" for d in deps), (pin, deps)
    assert {p.split("==")[0] for p in pins} == {"jax", "jaxlib", "numpy"}, pins


def test_readme_has_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert SETUP_DEMO in text and SETUP_TESTS in text


def test_demo_needs_only_the_base_install():
    """The first README command installs no extra: the demo must not import any optional package."""
    import subprocess
    import sys
    code = ("import sys, builtins\n"
            "optional = ('flax', 'keras', 'equinox', 'haiku', 'ROOT', 'onnx', 'onnxruntime', 'h5py', 'pytest')\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] in optional: raise ImportError('optional package imported: ' + name)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "from jaxpr2sofie.cli import main\n"
            "from jaxpr2sofie.examples import function, params, example_input\n"
            "import jaxpr2sofie as j2s\n"
            "m = j2s.convert(function, params, example_input, name='JetTagger')\n"
            "print(m.validate().max_abs < 1e-5)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr[-3000:]


def test_readme_onnx_example_runs_as_written(tmp_path):
    import subprocess
    import sys
    import pytest
    pytest.importorskip("onnxruntime")
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- onnx-example:start -->")[1].split("<!-- onnx-example:end -->")[0]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.splitlines() == ["['Gemm', 'Relu', 'Gemm', 'Softmax']", "True"], res.stdout


def test_readme_control_flow_example_runs_as_written(tmp_path):
    import subprocess
    import sys
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- control-flow-example:start -->")[1].split("<!-- control-flow-example:end -->")[0]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    code += "\nv = m.validate(xs)\nassert v.max_abs <= 1e-5, v\nprint('README-OK', open('out/LSTM.hxx').read().count('for (size_t step'))\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "README-OK 1" in res.stdout, res.stdout[-2000:]


def test_readme_dynamic_batch_example_runs_as_written(tmp_path):
    import subprocess
    import sys
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- dynamic-batch-example:start -->")[1].split("<!-- dynamic-batch-example:end -->")[0]
    code = block.split("```python\n", 1)[1].split("```", 1)[0]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**__import__("os").environ, "JAXPR2SOFIE_QUIET": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert lines[0].strip() == "input  x: (N, 16) float32" and "over batches 1, 7, 256" in lines[1], res.stdout
    # its own name: the "Using it" header out/Net.hxx, which the C++ example includes, stays as it was
    header = (tmp_path / "out" / "DynNet.hxx").read_text()
    assert 'Session(std::string weight_file = "DynNet.dat", size_t max_batch = 256, size_t n_threads = 1)' in header


def test_readme_benchmark_figures_are_the_results_json():
    """The README's and benchmarks/README.md's benchmark figures are what benchmarks/report_readme.py
    writes from the newest results JSON: table and prose from one set of numbers."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("report_readme", ROOT / "benchmarks" / "report_readme.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    for rel, text in report.rendered(report.newest_result()).items():
        assert (ROOT / rel).read_text() == text, f"{rel}: stale benchmark figures, run python benchmarks/report_readme.py"
    section = (ROOT / "README.md").read_text().split("<!-- bench-report:start -->")[1].split("<!-- bench-report:end -->")[0]
    # the provenance every figure carries: command, date, CPU, versions, wall time
    import json
    d = json.loads(report.newest_result().read_text())
    for needed in ("`python benchmarks/run.py", d["date"], d["machine"]["model"], f"jax {d['versions']['jax']}",
                   f"the run took {d['wall_s']:.0f} s"):
        assert needed in section, needed
